"""Every bad input on every public entry point of ``jrmsprop.RMSprop`` is refused, atomically.

Each row of the tables names an entry point and a bad input; the test asserts the error type,
that the message names the offending argument, and -- for an optimizer that has already trained
-- that nothing changed: ``weights`` (names and values), ``iterations``, the slot names, the
trained variables and the config. Before these checks, most of the inputs below were accepted
and gave NaN after one step, or failed half way after creating slots.

Also here: the wrapper's pickle / deepcopy round trips, which must preserve hyperparameters,
``iterations`` and slots, and continue training bit for bit.
"""

from __future__ import annotations

import copy
import pickle

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.variable import Variable

NAN, INF = float("nan"), float("inf")

# ---- the constructor --------------------------------------------------------------------------

# (argument, bad value, error type). Every hyperparameter: out of range, NaN, inf, a boolean.
CONSTRUCTOR = [
    ("learning_rate", -1.0, ValueError),
    ("learning_rate", NAN, ValueError),
    ("learning_rate", INF, ValueError),
    ("learning_rate", True, TypeError),
    ("learning_rate", "0.1", TypeError),
    ("learning_rate", None, TypeError),
    ("learning_rate", jnp.ones(2), ValueError),
    ("lr", -1.0, ValueError),
    ("rho", -0.1, ValueError),
    ("rho", 1.5, ValueError),
    ("rho", NAN, ValueError),
    ("rho", True, TypeError),
    ("momentum", -1.0, ValueError),
    ("momentum", 1.5, ValueError),
    ("momentum", NAN, ValueError),
    ("momentum", INF, ValueError),
    ("momentum", True, TypeError),
    ("momentum", jnp.float32(2.0), ValueError),
    ("epsilon", -1.0, ValueError),
    ("epsilon", NAN, ValueError),
    ("epsilon", INF, ValueError),
    ("epsilon", True, TypeError),
    ("decay", -1.0, ValueError),
    ("decay", NAN, ValueError),
    ("decay", INF, ValueError),
    ("decay", True, TypeError),
    ("clipvalue", -1.0, ValueError),
    ("clipvalue", NAN, ValueError),
    ("clipvalue", True, TypeError),
    ("clipnorm", -1.0, ValueError),
    ("clipnorm", NAN, ValueError),
    ("clipnorm", INF, ValueError),
    ("clipnorm", True, TypeError),
    ("global_clipnorm", -1.0, ValueError),
    ("global_clipnorm", INF, ValueError),
    ("global_clipnorm", "1", TypeError),
    ("centered", "no", TypeError),
    ("centered", 1, TypeError),
    ("centered", None, TypeError),
    ("name", 3, TypeError),
    ("foo", 1.0, TypeError),
]


@pytest.mark.parametrize("arg, value, error", CONSTRUCTOR, ids=lambda x: repr(x)[:20])
def test_constructor_refuses(arg, value, error):
    with pytest.raises(error, match=f"`?{arg}`?"):
        RMSprop(**{arg: value})


def test_constructor_refuses_both_norm_clips():
    with pytest.raises(ValueError, match="`clipnorm`.*`global_clipnorm`"):
        RMSprop(clipnorm=1.0, global_clipnorm=1.0)


# (arguments, tf_keras.optimizers.legacy.RMSprop's own message): jrmsprop raises Keras's
# ValueError with Keras's text first (verified live in test_live_frameworks.py).
KERAS_ERRORS = [
    (
        dict(momentum=2.5),
        "`momentum` must be between [0, 1]. Received: momentum=2.5 (of type <class 'float'>).",
    ),
    (
        dict(momentum=-1),
        "`momentum` must be between [0, 1]. Received: momentum=-1 (of type <class 'int'>).",
    ),
    (dict(lr=-1), "Expected lr >= 0, received: -1"),
    (dict(decay=-1), "Expected decay >= 0, received: -1"),
    (dict(clipnorm=-1), "Expected clipnorm >= 0, received: -1"),
    (dict(clipvalue=-0.5), "Expected clipvalue >= 0, received: -0.5"),
    (dict(global_clipnorm=-2), "Expected global_clipnorm >= 0, received: -2"),
    (
        dict(clipnorm=1.0, global_clipnorm=1.0),
        "Cannot accept both `clipnorm` and "
        "`global_clipnorm`. Received: `clipnorm`=1.0, `global_clipnorm`=1.0.",
    ),
    (dict(foo=1), "Unexpected keyword argument passed to optimizer: foo."),
]


@pytest.mark.parametrize("kwargs, message", KERAS_ERRORS, ids=lambda x: str(x)[:30])
def test_constructor_raises_keras_message(kwargs, message):
    error = TypeError if "foo" in kwargs else ValueError
    with pytest.raises(error) as info:
        RMSprop(**kwargs)
    assert str(info.value).startswith(message)


# Values Keras accepts but jrmsprop refuses: jrmsprop's own message alone.
KERAS_STRICTER = [
    (dict(momentum=NAN), "`momentum` must be in [0, 1], got nan"),
    (dict(lr=INF), "`lr` must be finite and >= 0, got inf"),
    (dict(rho=-0.5), "`rho` must be in [0, 1], got -0.5"),
    (dict(clipnorm=NAN), "`clipnorm` must be finite and >= 0, got nan"),
]


@pytest.mark.parametrize("kwargs, message", KERAS_STRICTER, ids=lambda x: str(x)[:30])
def test_stricter_checks_keep_jrmsprops_message(kwargs, message):
    with pytest.raises(ValueError) as info:
        RMSprop(**kwargs)
    assert str(info.value) == message


def test_lr_is_keras_deprecated_alias():
    """Keras 2's rule: ``lr`` replaces ``learning_rate``, with Keras's warning."""
    with pytest.warns(UserWarning) as record:
        opt = RMSprop(learning_rate=0.5, lr=0.1)
    assert [str(w.message) for w in record] == [
        "The `lr` argument is deprecated, use `learning_rate` instead."
    ]
    assert record[0].filename == __file__  # the warning points at the caller
    assert opt.get_config()["learning_rate"] == 0.1


def test_keras3_optimizer_raises_keras_messages():
    """``jrmsprop.keras.RMSprop`` has TF 2.x's ``momentum``, ``decay`` and ``lr``."""
    jk = pytest.importorskip("jrmsprop.keras")
    if jk.keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    for kwargs, message in KERAS_ERRORS[:4]:
        with pytest.raises(ValueError) as info:
            jk.RMSprop(**kwargs)
        assert str(info.value).startswith(message)
    with pytest.warns(UserWarning, match="^The `lr` argument is deprecated"):
        opt = jk.RMSprop(lr=0.25)
    assert float(opt.learning_rate.value) == 0.25


def test_accepted_edge_values():
    """The ranges' ends are valid, and Keras's ``epsilon or 1e-7`` still holds."""
    opt = RMSprop(learning_rate=0.0, rho=1.0, momentum=1.0, epsilon=0, decay=0.0, clipnorm=0.0)
    assert opt.epsilon == 1e-7
    assert RMSprop(rho=0.0, epsilon=None).epsilon == 1e-7
    opt.epsilon = 0  # after construction, as in Keras: 0 is 0
    assert opt.epsilon == 0 and opt.get_config()["epsilon"] == 0


# ---- a trained optimizer: each bad input leaves it exactly as it was -------------------------


def _trained():
    rng = np.random.default_rng(0)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt = RMSprop(0.01, momentum=0.5, centered=True, clipvalue=1.0)
    for _ in range(2):
        opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    return opt, a, b


def _snapshot(opt, *variables, config=True):
    return dict(
        names=[w.name for w in opt.weights],
        weights=opt.get_weights(),
        slots=opt.get_slot_names(),
        var_list=[v.name for v in opt.var_list],
        variables=[v.numpy() for v in variables],
        config=opt.get_config() if config else None,
    )


def _assert_unchanged(before, after):
    assert before["names"] == after["names"]
    assert before["slots"] == after["slots"] and before["var_list"] == after["var_list"]
    assert before["config"] == after["config"]
    for x, y in zip(
        before["weights"] + before["variables"], after["weights"] + after["variables"], strict=True
    ):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _set(attr, value):
    return lambda opt, a, b, new: setattr(opt, attr, value)


# (entry point, action(opt, a, b, new_variable), error type, the name the message must contain)
STATEFUL = [
    # property setters
    ("setter", _set("rho", 2), ValueError, "rho"),
    ("setter", _set("learning_rate", -1), ValueError, "learning_rate"),
    ("setter", _set("lr", NAN), ValueError, "learning_rate"),
    ("setter", _set("momentum", 1.5), ValueError, "momentum"),
    ("setter", _set("momentum", True), TypeError, "momentum"),
    ("setter", _set("epsilon", INF), ValueError, "epsilon"),
    ("setter", _set("epsilon", "small"), TypeError, "epsilon"),
    ("setter", _set("epsilon", None), TypeError, "epsilon"),  # only the constructor maps None
    ("setter", _set("decay", -0.5), ValueError, "decay"),
    ("setter", _set("clipvalue", -1.0), ValueError, "clipvalue"),
    ("setter", _set("clipnorm", INF), ValueError, "clipnorm"),
    ("setter", _set("global_clipnorm", NAN), ValueError, "global_clipnorm"),
    ("setter", _set("centered", "no"), TypeError, "centered"),
    # the hyperparameter Variables and iterations
    ("assign", lambda o, a, b, n: o.learning_rate.assign(-1.0), ValueError, "learning_rate"),
    ("assign", lambda o, a, b, n: o.rho.assign(2.0), ValueError, "rho"),
    ("assign", lambda o, a, b, n: o.momentum.assign(NAN), ValueError, "momentum"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(-1), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_sub(5), ValueError, "iterations"),
    ("iterations", _set("iterations", -3), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(1.5), TypeError, "iter"),
    # out of int32's range: refused before the value is narrowed (it used to wrap to 5 / 0)
    ("iterations", lambda o, a, b, n: o.iterations.assign(2**32 + 5), ValueError, "iterations"),
    ("iterations", _set("iterations", 2**32), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(np.int64(2**40)), ValueError, "iterat"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_add(2**32), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_sub(2**32), ValueError, "iterations"),
    # ragged values for the hyperparameter Variables
    (
        "assign",
        lambda o, a, b, n: o.learning_rate.assign([[1.0], [1.0, 2.0]]),
        TypeError,
        "'RMSprop/learning_rate'.*ragged",
    ),
    # apply_gradients naming a variable seen for the first time: no slot may appear
    ("apply", lambda o, a, b, n: o.apply_gradients([(jnp.ones(3), n)]), ValueError, "new"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2, jnp.int32), n)]),
        TypeError,
        "new",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(np.array(["x", "y"]), n)]), TypeError, "new"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), Variable([1, 2], name="i"))]),
        TypeError,
        "'i'",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), n), (jnp.ones(2), n)]),
        ValueError,
        "more than once",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), jnp.ones(2))]),
        TypeError,
        "Variable",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(jnp.ones(2),)]), TypeError, "pairs"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients(
            [(IndexedSlices(jnp.ones((1, 2)), jnp.array([0]), (5, 2)), n)]
        ),
        ValueError,
        "new",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(None, n)]), ValueError, "new"),
    ("apply", lambda o, a, b, n: o.apply_gradients(None), TypeError, "`grads_and_vars`"),
    ("apply", lambda o, a, b, n: o.apply_gradients(3), TypeError, "`grads_and_vars`"),
    ("apply", lambda o, a, b, n: o.apply_gradients("ab"), TypeError, "`grads_and_vars`"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([([[1.0], [1.0, 2.0]], n)]),
        TypeError,
        "'new'.*ragged",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones((3, 2)), a), ([[1.0], [1.0, 2.0]], b)]),
        TypeError,
        "'b'.*ragged",
    ),
]


@pytest.mark.parametrize(
    "entry, action, error, name",
    STATEFUL,
    ids=[f"{r[0]}-{r[3]}-{i}" for i, r in enumerate(STATEFUL)],
)
def test_bad_input_changes_nothing(entry, action, error, name):
    opt, a, b = _trained()
    new = Variable(np.zeros(2, np.float32), name="new")
    before = _snapshot(opt, a, b, new)
    with pytest.raises(error, match=name):
        action(opt, a, b, new)
    _assert_unchanged(before, _snapshot(opt, a, b, new))
    # and the optimizer still trains normally afterwards
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    assert int(opt.iterations) == int(before["weights"][0]) + 1
    assert all(np.isfinite(v.numpy()).all() for v in (a, b))


# hyperparameter values that only show when evaluated: callables and schedules
EVALUATED = [
    ("learning_rate", lambda: -1.0, ValueError),
    ("learning_rate", lambda: NAN, ValueError),
    ("learning_rate", lambda: "x", TypeError),
    ("learning_rate", lambda: None, TypeError),
    ("learning_rate", lambda: jnp.ones(2), ValueError),
    ("learning_rate", optax.constant_schedule(-0.5), ValueError),
    ("rho", lambda: 1.5, ValueError),
    ("momentum", lambda: INF, ValueError),
    ("epsilon", lambda: -1e-7, ValueError),
]


@pytest.mark.parametrize("arg, value, error", EVALUATED)
def test_bad_evaluated_value_changes_nothing(arg, value, error):
    """A callable's value is checked when evaluated, before any slot is created."""
    opt, a, b = _trained()
    new = Variable(np.zeros(2, np.float32), name="new")
    setattr(opt, arg, value)  # a callable cannot be checked before it is called
    before = _snapshot(opt, a, b, new, config=False)
    with pytest.raises(error, match=arg):
        opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.ones(2), new)])
    after = _snapshot(opt, a, b, new, config=False)
    _assert_unchanged(before, after)


def test_bad_decay_callable_is_evaluated_from_the_constructor():
    """``decay`` is fixed at construction (Keras's ``_initial_decay``): a bad callable given
    there fails the step, naming it, and creates nothing; one set later is never evaluated."""
    opt = RMSprop(0.1, decay=lambda: True)
    v = Variable([1.0, 2.0])
    with pytest.raises(TypeError, match="decay"):
        opt.apply_gradients([(jnp.ones(2), v)])
    assert opt.weights == [] and opt.get_slot_names() == []
    opt = RMSprop(0.1)
    opt.decay = lambda: True
    opt.apply_gradients([(jnp.ones(2), v)])
    assert int(opt.iterations) == 1


@pytest.mark.parametrize(
    "slot_kwargs, error, words",
    [
        (dict(shape=[7]), ValueError, r"'rms' of variable 'v' has shape \(7,\)"),
        (dict(dtype="int32"), TypeError, "'rms' of variable 'v' has dtype int32"),
        (dict(dtype="complex64"), TypeError, "'rms' of variable 'v' has dtype complex64"),
    ],
)
@pytest.mark.parametrize("trained", [False, True])
def test_bad_existing_slot_fails_the_step_and_changes_nothing(slot_kwargs, error, words, trained):
    """A slot made by ``add_slot`` with the wrong shape or dtype: the step names it and creates
    nothing (no ``iterations``, no other slot), on a fresh or a trained optimizer."""
    v = Variable(np.ones(4, np.float32), name="v")
    if trained:
        opt, a, b = _trained()
    else:
        opt, a, b = RMSprop(0.1, momentum=0.9, centered=True), v, v
    opt.add_slot(v, "rms", **slot_kwargs)
    before = _snapshot(opt, a, b, v)
    for action in (
        lambda: opt.apply_gradients([(jnp.ones(4), v)]),
        lambda: opt.minimize(lambda: jnp.sum(v.value**2), [v]),
        lambda: opt.build([v]),
    ):
        with pytest.raises(error, match=words):
            action()
        _assert_unchanged(before, _snapshot(opt, a, b, v))
    assert ("RMSprop/iter" in before["names"]) == trained


def test_bad_existing_momentum_slot_is_named():
    v = Variable(np.ones(3, np.float32), name="v")
    opt = RMSprop(0.1, momentum=0.5)
    opt.build([v])
    opt._slots[v]["momentum"] = Variable(np.zeros(2, np.float32))  # a corrupted slot
    with pytest.raises(ValueError, match="'momentum' of variable 'v' has shape"):
        opt.apply_gradients([(jnp.ones(3), v)])
    assert int(opt.iterations) == 0


def test_bad_callable_on_a_fresh_optimizer_creates_nothing():
    opt = RMSprop(learning_rate=lambda: -1.0)
    v = Variable([1.0, 2.0])
    with pytest.raises(ValueError, match="learning_rate"):
        opt.apply_gradients([(jnp.ones(2), v)])
    assert opt.weights == [] and opt.get_slot_names() == []
    opt.learning_rate = 0.1
    opt.apply_gradients([(jnp.ones(2), v)])
    assert len(opt.weights) == 2 and int(opt.iterations) == 1


# ---- set_weights ------------------------------------------------------------------------------

SET_WEIGHTS = [
    (lambda w: w[:-2], ValueError, "length"),
    (lambda w: w + [np.zeros(2)], ValueError, "length"),
    (lambda w: [w[0], np.zeros((9, 9), np.float32)] + w[2:], ValueError, "RMSprop/a/rms"),
    (lambda w: [w[0], w[1].astype(np.complex64)] + w[2:], TypeError, "RMSprop/a/rms"),
    (lambda w: [np.int64(-1)] + w[1:], ValueError, "RMSprop/iter"),
    (lambda w: [np.int64(2**40)] + w[1:], ValueError, "RMSprop/iter"),
    (lambda w: [np.float32(2.0)] + w[1:], TypeError, "RMSprop/iter"),
    (lambda w: "weights", TypeError, "weights"),
    # a value that is not an array of numbers: named by its index (and the weight)
    (lambda w: [w[0], None] + w[2:], TypeError, r"weight 1 \('RMSprop/a/rms'\).*got None"),
    (lambda w: [w[0], "abc"] + w[2:], TypeError, r"weight 1 \('RMSprop/a/rms'\).*'abc'"),
    (lambda w: w[:3] + [[[1.0], [1.0, 2.0]]] + w[4:], TypeError, "weight 3.*ragged"),
    (lambda w: [None] + w[2:], TypeError, r"weight 0 \('RMSprop/a/rms'\)"),  # no iterations
    (lambda w: [[1, [2]]] + w[1:], TypeError, r"weight 0 \('RMSprop/iter'\).*ragged"),
]


@pytest.mark.parametrize("corrupt, error, name", SET_WEIGHTS)
def test_set_weights_refuses(corrupt, error, name):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=name):
        opt.set_weights(corrupt(opt.get_weights()))
    _assert_unchanged(before, _snapshot(opt, a, b))


def test_set_weights_before_build_says_to_build():
    opt = RMSprop()
    with pytest.raises(ValueError, match=r"call `build\(var_list\)`"):
        opt.set_weights([np.array(1), np.zeros(3, np.float32)])
    v = Variable(np.ones(3, np.float32))
    opt.build([v])
    opt.set_weights([np.array(1), np.full(3, 2.0, np.float32)])
    assert int(opt.iterations) == 1
    np.testing.assert_array_equal(opt.get_slot(v, "rms").numpy(), [2.0, 2.0, 2.0])


# ---- add_slot / add_weight / build ------------------------------------------------------------

SLOTS_AND_WEIGHTS = [
    (lambda o, a: o.add_slot(np.zeros(2), "s"), TypeError, "var"),
    (lambda o, a: o.add_slot(a, 3), TypeError, "slot_name"),
    (lambda o, a: o.add_slot(a, "s", initializer="bogus"), ValueError, "initializer"),
    (lambda o, a: o.add_slot(a, "s", initializer=np.ones(7)), ValueError, "initializer"),
    (lambda o, a: o.add_slot(a, "s", shape=[-1]), ValueError, "shape"),
    (lambda o, a: o.add_slot(a, "s", dtype="nope"), TypeError, "dtype"),
    (lambda o, a: o.add_weight(3, []), TypeError, "name"),
    (lambda o, a: o.add_weight("w", "ab"), TypeError, "shape"),
    (lambda o, a: o.add_weight("w", [2], dtype="nope"), TypeError, "dtype"),
    (lambda o, a: o.add_weight("w", [2], trainable="yes"), TypeError, "trainable"),
    (lambda o, a: o.add_weight("w", [2], aggregation="max"), ValueError, "aggregation"),
    (lambda o, a: o.add_weight("w", [2], synchronization="x"), ValueError, "synchronization"),
    (lambda o, a: o.build([a, "b"]), TypeError, "var_list"),
    (lambda o, a: o.build([Variable([1, 2], name="ints")]), TypeError, "ints"),
]


@pytest.mark.parametrize("action, error, name", SLOTS_AND_WEIGHTS)
def test_slots_and_weights_refuse(action, error, name):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=name):
        action(opt, a)
    _assert_unchanged(before, _snapshot(opt, a, b))


# ---- from_config ------------------------------------------------------------------------------

FROM_CONFIG = [
    (["learning_rate", 0.1], TypeError, "config"),
    ({"learning_rate": -1.0}, ValueError, "learning_rate"),
    ({"rho": 1.5}, ValueError, "rho"),
    ({"lr": NAN}, ValueError, "learning_rate"),
    ({"centered": "yes"}, TypeError, "centered"),
    ({"clipnorm": INF}, ValueError, "clipnorm"),
    ({"foo": 1.0}, TypeError, "foo"),
    ({"learning_rate": {"class_name": "Nope", "config": {}}}, ValueError, "Nope"),
]


@pytest.mark.parametrize("config, error, name", FROM_CONFIG)
def test_from_config_refuses(config, error, name):
    with pytest.raises(error, match=name):
        RMSprop.from_config(config)


# ---- pickle and deepcopy ----------------------------------------------------------------------


class HalvingSchedule:
    """A picklable Keras-style schedule (a class with get_config)."""

    def __init__(self, initial):
        self.initial = initial

    def __call__(self, step):
        return np.float32(self.initial) / np.float32(2.0) ** np.float32(step)

    def get_config(self):
        return {"initial": self.initial}


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("learning_rate", [0.01, HalvingSchedule(0.05)], ids=["number", "schedule"])
def test_round_trip_continues_bit_for_bit(how, learning_rate):
    rng = np.random.default_rng(3)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt = RMSprop(learning_rate, rho=0.8, momentum=0.5, centered=True, decay=0.1, clipnorm=2.0)
    grads = [
        (rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32))
        for _ in range(4)
    ]
    for ga, gb in grads[:2]:
        opt.apply_gradients([(ga, a), (gb, b)])
    if how == "pickle":
        opt2, a2, b2 = pickle.loads(pickle.dumps((opt, a, b)))
    else:
        opt2, a2, b2 = copy.deepcopy((opt, a, b))
    assert opt2.get_config() == opt.get_config()
    assert int(opt2.iterations) == 2 and opt2.var_list == [a2, b2]
    assert [w.name for w in opt2.weights] == [w.name for w in opt.weights]
    for x, y in zip(opt2.get_weights(), opt.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    for ga, gb in grads[2:]:
        opt.apply_gradients([(ga, a), (gb, b)])
        opt2.apply_gradients([(ga, a2), (gb, b2)])
    for x, y in zip(
        [a2.numpy(), b2.numpy()] + opt2.get_weights(),
        [a.numpy(), b.numpy()] + opt.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    assert len(opt2.weights) == len(opt.weights)  # the copies' slots were found, none added
    with pytest.raises(ValueError, match="learning_rate"):  # the checks survive the copy
        opt2.learning_rate.assign(-1.0) if how == "pickle" and learning_rate == 0.01 else (
            setattr(opt2, "learning_rate", -1.0)
        )
    with pytest.raises(ValueError, match="iterations"):
        opt2.iterations.assign(-1)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(initial_value=None), TypeError, "`initial_value`"),
        (dict(initial_value="abc"), TypeError, "`initial_value`"),
        (dict(initial_value=[[1.0], [2.0, 3.0]]), TypeError, "`initial_value`"),
        (dict(initial_value=1.0, dtype="floaty"), TypeError, "`dtype`"),
        (dict(initial_value=1.0, trainable="no"), TypeError, "`trainable`"),
        (dict(initial_value=1.0, trainable=1), TypeError, "`trainable`"),
        (dict(initial_value=1.0, name=3), TypeError, "`name`"),
        (dict(initial_value=1.0, aggregation="max"), ValueError, "`aggregation`"),
    ],
)
def test_variable_constructor_refuses(kwargs, error, words):
    with pytest.raises(error, match=words):
        Variable(**kwargs)


def test_variable_trainable_none_follows_tf():
    """TF: ``trainable=None`` is True, except for a variable synchronised on read."""
    assert Variable(1.0, trainable=None).trainable is True
    assert Variable(1.0, trainable=None, synchronization="on_read").trainable is False
    # The default is None, as tf.Variable's: a variable synchronised on read is not trainable
    # unless asked, and tf.Variable accepts asking (only add_weight refuses it).
    assert Variable(1.0).trainable is True
    assert Variable(1.0, synchronization="on_read").trainable is False
    assert Variable(1.0, trainable=True, synchronization="on_read").trainable is True
    assert Variable(1.0, trainable=np.bool_(False)).trainable is False


# ---- a Variable (or NumPy array) given as a hyperparameter: checked at every step --------------

# (hyperparameter, a valid value, a bad value assigned later, error type)
VARIABLE_HYPERS = [
    ("learning_rate", 0.01, -1.0, ValueError),
    ("learning_rate", 0.01, NAN, ValueError),
    ("learning_rate", 0.01, INF, ValueError),
    ("rho", 0.9, 1.5, ValueError),
    ("momentum", 0.5, 5.0, ValueError),
    ("momentum", 0.5, -0.5, ValueError),
    ("epsilon", 1e-7, -1.0, ValueError),
    ("decay", 0.1, -1.0, ValueError),
]


def _with_variable_hyper(arg, good):
    hyper = Variable(good, name="hyper")
    opt = RMSprop(**{"learning_rate": 0.01, arg: hyper})
    rng = np.random.default_rng(1)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    return opt, hyper, a, b


@pytest.mark.parametrize("arg, good, bad, error", VARIABLE_HYPERS)
def test_variable_hyperparameter_is_checked_at_every_step(arg, good, bad, error):
    """A Variable the user passed may be assigned after it was checked: the step checks its
    value now, names the hyperparameter and changes nothing (it used to ascend with lr = -1 and
    use momentum 5 as is)."""
    opt, hyper, a, b = _with_variable_hyper(arg, good)
    new = Variable(np.zeros(2, np.float32), name="new")
    hyper.assign(bad)  # the user's own Variable: not checked on assign
    before = _snapshot(opt, a, b, new, config=False)
    for action in (
        lambda: opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.ones(2), new)]),
        lambda: opt.minimize(lambda: jnp.sum(a.value**2), [a]),
        lambda: opt.transformation,
    ):
        with pytest.raises(error, match=f"`{arg}`"):
            action()
        _assert_unchanged(before, _snapshot(opt, a, b, new, config=False))
    hyper.assign(good)  # a good value again: the step runs
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    assert int(opt.iterations) == 2


def test_variable_learning_rate_assigned_is_used():
    """A good value assigned to the user's Variable is what the next step uses."""
    lr = Variable(0.1)
    opt = RMSprop(learning_rate=lr)
    v = Variable([1.0, 1.0])
    lr.assign(0.0)
    opt.apply_gradients([(jnp.ones(2), v)])
    np.testing.assert_array_equal(v.numpy(), [1.0, 1.0])


def test_numpy_array_epsilon_is_checked_at_every_step():
    """``epsilon`` is stored as given: a NumPy array can be changed in place afterwards."""
    eps = np.array(1e-7)
    opt = RMSprop(0.1, epsilon=eps)
    v = Variable([1.0, 1.0])
    opt.apply_gradients([(jnp.ones(2), v)])
    eps[...] = -1.0
    before = _snapshot(opt, v)
    with pytest.raises(ValueError, match="`epsilon`"):
        opt.apply_gradients([(jnp.ones(2), v)])
    _assert_unchanged(before, _snapshot(opt, v))


def test_own_hyperparameter_variables_still_check_on_assign():
    opt = RMSprop(0.1, momentum=0.5)
    with pytest.raises(ValueError, match="`momentum`"):
        opt.momentum.assign(5.0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        opt.learning_rate.assign(-1.0)
    assert float(opt.momentum) == 0.5 and float(opt.learning_rate) == np.float32(0.1)


# ---- iterations: out of int32's range is refused, never wrapped --------------------------------


def test_iterations_overflow_by_assign_add_is_refused():
    opt, a, b = _trained()
    opt.iterations.assign(2**31 - 1)
    before = _snapshot(opt, a, b)
    with pytest.raises(ValueError, match="`iterations`.*got 2147483648"):  # not wrapped
        opt.iterations.assign_add(1)
    with pytest.raises(ValueError, match="`iterations`"):
        opt.iterations.assign(2**31)
    _assert_unchanged(before, _snapshot(opt, a, b))
    assert int(opt.iterations) == 2**31 - 1
    opt.iterations.assign(np.int64(5))  # in range: fine, whatever the integer type
    assert int(opt.iterations) == 5 and opt.iterations.dtype == np.int32


# ---- from_config: custom_objects ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{"learning_rate": 0.1}, {"learning_rate": {"class_name": "Halving", "config": {}}}],
)
@pytest.mark.parametrize("custom_objects", [[HalvingSchedule], ("Halving",), "Halving", 3])
def test_from_config_refuses_custom_objects_that_are_not_a_dict(config, custom_objects):
    with pytest.raises(TypeError, match="`custom_objects`.*must be a dict"):
        RMSprop.from_config(config, custom_objects=custom_objects)


# ---- state: leaves that are not arrays of numbers ----------------------------------------------


@pytest.mark.parametrize(
    "replace, words",
    [
        (dict(count=None), "`state.count`.*None"),
        (dict(rms=(np.zeros((3, 2), np.float32), [[1.0], [1.0, 2.0]])), r"`state.rms\[1\]`"),
        (dict(mg=("abc", np.zeros(4, np.float32))), r"`state.mg\[0\]`.*'abc'"),
    ],
)
def test_state_setter_names_a_leaf_that_is_not_numbers(replace, words):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(TypeError, match=words):
        opt.state = opt.state._replace(**replace)
    _assert_unchanged(before, _snapshot(opt, a, b))


# ---- Variable: values its dtype cannot represent are refused ----------------------------------

# (constructor arguments, error type, words: the variable's name and the value)
UNREPRESENTABLE = [
    (dict(initial_value=2**40), ValueError, "'v'.*1099511627776.*int32"),
    (dict(initial_value=[1, 2**40]), ValueError, "'v'.*1099511627776"),
    (dict(initial_value=np.array([2**40])), ValueError, "'v'.*1099511627776"),
    (dict(initial_value=2**70), ValueError, "'v'.*1180591620717411303424"),
    (dict(initial_value=300, dtype="int8"), ValueError, r"'v'.*300.*\[-128, 127\]"),
    (dict(initial_value=-1, dtype="uint8"), ValueError, "'v'.*-1.*uint8"),
    (dict(initial_value=1 + 2j, dtype="float32"), TypeError, "'v'.*complex.*float32"),
    (dict(initial_value=np.array([1j]), dtype="float32"), TypeError, "'v'.*complex"),
    (dict(initial_value=NAN, dtype="int32"), ValueError, "'v'.*nan.*int32"),
    (dict(initial_value=[1.0, INF], dtype="int32"), ValueError, "'v'.*inf"),
    (dict(initial_value=jnp.float32(-INF), dtype="int32"), ValueError, "'v'.*-inf"),
    (dict(initial_value=1.5, dtype="int32"), ValueError, "'v'.*1.5"),
    (dict(initial_value=np.float32(2**31), dtype="int32"), ValueError, "'v'.*2147483648"),
    (dict(initial_value=2, dtype="bool"), ValueError, "'v'.*2.*bool"),
    (dict(initial_value=100000, dtype="float16"), ValueError, "'v'.*100000.*float16"),
    (dict(initial_value=2**200, dtype="float32"), ValueError, "'v'.*float32"),
]


@pytest.mark.parametrize("kwargs, error, words", UNREPRESENTABLE, ids=lambda x: repr(x)[:40])
def test_variable_refuses_values_its_dtype_cannot_represent(kwargs, error, words):
    """As ``tf.Variable``: no silent wrapping, truncation or dropped imaginary parts."""
    with pytest.raises(error, match=words):
        Variable(name="v", **kwargs)


@pytest.mark.parametrize(
    "kwargs, dtype, expected",
    [
        (dict(initial_value=np.float64(0.1), dtype="float32"), np.float32, np.float32(0.1)),
        (dict(initial_value=np.array([0.1, 1e-50])), np.float32, [np.float32(0.1), 0.0]),
        (dict(initial_value=2**40, dtype="float32"), np.float32, np.float32(2**40)),
        (dict(initial_value=2**70, dtype="float32"), np.float32, np.float32(2**70)),
        (dict(initial_value=7), np.int32, 7),
        (dict(initial_value=[2**31 - 1, -(2**31)]), np.int32, [2**31 - 1, -(2**31)]),
        (dict(initial_value=True, dtype="int32"), np.int32, 1),
        (dict(initial_value=[True, False], dtype="float32"), np.float32, [1.0, 0.0]),
        (dict(initial_value=3.0, dtype="int32"), np.int32, 3),
        (dict(initial_value=127, dtype="int8"), np.int8, 127),
        (dict(initial_value=1, dtype="bool"), np.bool_, True),
        (dict(initial_value=1, dtype=jnp.bfloat16), jnp.bfloat16, 1.0),
        (dict(initial_value=1 + 2j), np.complex64, 1 + 2j),
        (dict(initial_value=np.int64(5)), np.int32, 5),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_variable_keeps_lossless_and_rounding_conversions(kwargs, dtype, expected):
    v = Variable(**kwargs)
    assert v.dtype == dtype
    np.testing.assert_array_equal(v.numpy(), np.asarray(expected, dtype))


# (variable, action, error type, words)
UNREPRESENTABLE_ASSIGN = [
    (lambda: Variable(0, name="i"), lambda v: v.assign(2**40), ValueError, "'i'.*1099511627776"),
    (lambda: Variable(0, name="i"), lambda v: v.assign(2**70), ValueError, "'i'.*11805916"),
    (lambda: Variable(0, name="i"), lambda v: v.assign(np.uint64(2**63)), ValueError, "'i'"),
    (lambda: Variable(2**31 - 1, name="i"), lambda v: v.assign_add(1), ValueError, "'i'.*sum"),
    (lambda: Variable(-(2**31), name="i"), lambda v: v.assign_sub(1), ValueError, "'i'.*diff"),
    (lambda: Variable(5, name="i"), lambda v: v.assign_sub(-(2**63)), ValueError, "'i'"),
    (lambda: Variable(0, name="i8", dtype="int8"), lambda v: v.assign(300), ValueError, "300"),
    (lambda: Variable(0, name="u8", dtype="uint8"), lambda v: v.assign(-1), ValueError, "'u8'"),
    (lambda: Variable(0, name="u8", dtype="uint8"), lambda v: v.assign_sub(1), ValueError, "-1"),
    (
        lambda: Variable(np.zeros(2, np.float16), name="h"),
        lambda v: v.assign([100000, 1]),
        ValueError,
        "'h'.*100000.*float16",
    ),
    (
        lambda: Variable([1.0, 2.0], name="w"),
        lambda v: v.assign([[1.0], [1.0, 2.0]]),
        TypeError,
        "'w'.*ragged",
    ),
    (lambda: Variable([1.0, 2.0], name="w"), lambda v: v.assign(None), TypeError, "'w'.*None"),
    (lambda: Variable([1.0, 2.0], name="w"), lambda v: v.assign("ab"), TypeError, "'w'.*'ab'"),
    (
        lambda: Variable([1.0, 2.0], name="w"),
        lambda v: v.assign_add([[1.0], [1.0, 2.0]]),
        TypeError,
        "'w'.*ragged",
    ),
]


@pytest.mark.parametrize(
    "make, action, error, words",
    UNREPRESENTABLE_ASSIGN,
    ids=[f"{i}-{r[3]}" for i, r in enumerate(UNREPRESENTABLE_ASSIGN)],
)
def test_variable_assign_refuses_and_changes_nothing(make, action, error, words):
    v = make()
    before = v.numpy()
    with pytest.raises(error, match=words):
        action(v)
    assert v.numpy().dtype == before.dtype
    np.testing.assert_array_equal(v.numpy(), before)


def test_variable_assign_keeps_lossless_conversions():
    i = Variable(0, name="i")
    i.assign(np.int64(2**31 - 1))
    i.assign_sub(2**31 - 1)
    i.assign(True)
    i.assign_add(np.int64(-3))
    assert int(i) == -2 and i.dtype == np.int32
    w = Variable([1.0, 2.0])
    w.assign(np.array([0.1, 2.0**70]))  # float64 rounded to float32
    w.assign_add([1, 2])  # Python ints into float32
    np.testing.assert_array_equal(w.numpy(), np.float32([0.1, 2**70]) + np.float32([1, 2]))
    w.assign([0.5, 2**70])  # a float and an int beyond 64 bits
    np.testing.assert_array_equal(w.numpy(), np.float32([0.5, 2**70]))


# ---- impossible shapes (F13), iterations beyond 64 bits, a loss that is not a real number -------

# XLA aborts the interpreter (it does not raise) for a shape whose size in bytes overflows a
# signed 64-bit integer: these must be refused before any array is made.
IMPOSSIBLE_SHAPES = [
    ([2**62], ValueError, r"`shape` \(4611686018427387904,\) is too large"),
    ([2**61], ValueError, "`shape`.*too large .*float32"),  # 2**63 bytes of float32
    ([2**31, 2**31, 2], ValueError, "`shape`.*too large"),
    ([2**62, 2**62, 0], ValueError, "`shape`.*too large"),
    ([2**64], ValueError, "`shape`.*too large"),
    ([-1, 3], ValueError, "`shape` must not have negative sizes"),
    ([True], TypeError, "`shape`.*boolean"),
    ([np.True_, 2], TypeError, "`shape`.*boolean"),
    ([2.5], TypeError, "`shape`.*float"),  # was truncated to 2
    (["3"], TypeError, "`shape`.*str"),  # was parsed as 3
    ([None], TypeError, "`shape`"),
    (3, TypeError, "`shape`"),
]


@pytest.mark.parametrize("where", ["add_weight", "add_slot"])
@pytest.mark.parametrize("shape, error, words", IMPOSSIBLE_SHAPES)
def test_impossible_shapes_are_refused_and_create_nothing(where, shape, error, words):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=words):
        if where == "add_weight":
            opt.add_weight("w", shape)
        else:
            opt.add_slot(a, "s", shape=shape)
    _assert_unchanged(before, _snapshot(opt, a, b))
    with pytest.raises(KeyError):
        opt.get_slot(a, "s")


def test_large_but_possible_shapes_and_integer_sizes_still_work():
    opt, a, _ = _trained()
    assert opt.add_weight("w", np.array([2, 3])).shape == (2, 3)  # NumPy integers
    assert opt.add_weight("e", [0, 2**40, 2**20]).shape == (0, 2**40, 2**20)  # 2**62 bytes
    assert opt.add_slot(a, "s", shape=(jnp.int32(2), 1)).shape == (2, 1)
    assert opt.add_weight("scalar", []).shape == ()


@pytest.mark.parametrize("action", ["assign", "assign_add", "assign_sub"])
@pytest.mark.parametrize("value", [2**70, -(2**70), 2**64])
def test_iterations_beyond_64_bits_names_iterations(action, value):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(ValueError, match=r"`iterations` must be in \[0, 2147483647\]") as info:
        getattr(opt.iterations, action)(value if action != "assign_sub" else -value)
    assert "RMSprop/iter" not in str(info.value)
    _assert_unchanged(before, _snapshot(opt, a, b))
    assert int(opt.iterations) == 2


def test_iterations_check_survives_pickle_and_deepcopy():
    opt, a, b = _trained()
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        with pytest.raises(ValueError, match="`iterations`"):
            other.iterations.assign(2**70)
        other.iterations.assign(7)
        assert int(other.iterations) == 7
    assert int(opt.iterations) == 2


@pytest.mark.parametrize(
    "loss, got",
    [
        (lambda a: "x", "'x'"),
        (lambda a: None, "None"),
        (lambda a: 3, "int32"),
        (lambda a: jnp.sum(a.value) > 0, "bool"),
        (lambda a: jnp.sum(a.value).astype(jnp.int32), "int32"),
        (lambda a: object(), "object"),
    ],
)
def test_minimize_refuses_a_loss_that_is_not_floating_point_or_complex(loss, got):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(TypeError, match=f"`loss` must return a floating-point or complex.*{got}"):
        opt.minimize(lambda: loss(a), [a])
    _assert_unchanged(before, _snapshot(opt, a, b))


def test_minimize_still_takes_floating_point_losses():
    opt, a, b = _trained()
    opt.minimize(lambda: jnp.sum(a.value**2).astype(jnp.bfloat16), [a])
    opt.minimize(lambda: [jnp.sum(a.value), jnp.sum(a.value)], [a])  # non-scalar: summed
    opt.minimize(lambda: jnp.sum(a.value**2).astype(jnp.complex64), [a])  # TF: the real part's
    assert int(opt.iterations) == 5


@pytest.mark.parametrize(
    "slot, value, words",
    [
        ("rms", 1e39, "beyond the range of the slot's dtype float32"),
        ("momentum", -1e39, "beyond the range of the slot's dtype float32"),
        ("rms", -1.0, "negative"),
        ("rms", -np.inf, "negative"),
    ],
)
@pytest.mark.parametrize("route", ["set_weights", "state"])
def test_loading_slot_values_the_slot_cannot_hold_changes_nothing(slot, value, words, route):
    """As the saved-state loaders: a finite value that would become inf in the slot's dtype, and
    a negative rms, are refused naming the slot; NaN and inf still load (a framework's state
    after a NaN gradient)."""
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    weights = opt.get_weights()
    index = [w.name for w in opt.weights].index(f"RMSprop/a/{slot}")
    weights[index] = np.full_like(weights[index], value, dtype=np.float64)
    with pytest.raises(ValueError, match=rf"RMSprop/a/{slot}.*{words}"):
        if route == "set_weights":
            opt.set_weights(weights)
        else:
            state = opt.state
            leaves = getattr(state, slot)
            leaves = [weights[index], *leaves[1:]]
            opt.state = state._replace(**{slot: leaves})
    _assert_unchanged(before, _snapshot(opt, a, b))
    weights[index] = np.full_like(weights[index], np.nan)
    opt.set_weights(weights)
    assert np.isnan(opt.get_weights()[index]).all()


@pytest.mark.parametrize("name", ["learning_rate", "rho", "momentum", "decay"])
def test_float32_hyperparameters_must_fit_float32_also_with_x64(x64, name):
    """TF 2.x Keras holds these four as float32 whatever the variables' dtype: 1e39 would be inf
    even for float64 variables, so the wrapper refuses it with x64 on too (ε, converted to the
    variable's dtype, may exceed float32's range then)."""
    with pytest.raises(ValueError, match=rf"`{name}`.*largest float32|`{name}` must be in"):
        RMSprop(**{name: 1e39})  # rho and momentum are also out of [0, 1]
    opt = RMSprop(epsilon=1e39)
    assert opt.epsilon == 1e39
