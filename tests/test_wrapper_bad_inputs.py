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
