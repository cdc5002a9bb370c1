"""Bad inputs: every entry point refuses them with a clear error that names the argument as the
user wrote it (``alpha`` for ``compat.torch``, ``decay`` for ``compat.tf1``'s ρ, ...), and an
update that fails leaves the state it was given untouched.

Also the inputs that look odd but are valid (a bfloat16 learning rate, an unhashable schedule,
``jax.ShapeDtypeStruct`` or empty parameter trees) and must work.

A leaf that is not an array, and a complex ``state.rms`` for a real parameter (``init`` gives a
real parameter a real ``rms`` in every preset; only ``compat.torch`` keeps a complex one for a
complex parameter), are refused naming the argument and the leaf.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop import compat
from jrmsprop._src import sparse, validation

# --------------------------------------------------------------------------- the table

# factory, the arguments it needs, and for each hyperparameter (the user's name): its kind
# ("fraction": must lie in [0, 1]; "nonneg": >= 0) and the core's name for it (which must NOT
# appear in the message when it differs from the user's).
FACTORIES: dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, tuple[str, str]]]] = {
    "rmsprop": (
        jrmsprop.rmsprop,
        {},
        {
            "learning_rate": ("nonneg", "learning_rate"),
            "rho": ("fraction", "rho"),
            "momentum": ("fraction", "momentum"),
            "epsilon": ("nonneg", "epsilon"),
            "decay": ("nonneg", "decay"),
        },
    ),
    "keras3": (
        compat.keras3,
        {},
        {
            "learning_rate": ("nonneg", "learning_rate"),
            "rho": ("fraction", "rho"),
            "momentum": ("fraction", "momentum"),
            "epsilon": ("nonneg", "epsilon"),
            "weight_decay": ("nonneg", "weight_decay"),
        },
    ),
    "torch": (
        compat.torch,
        {},
        {
            "lr": ("nonneg", "learning_rate"),
            "alpha": ("fraction", "rho"),
            "eps": ("nonneg", "epsilon"),
            "weight_decay": ("nonneg", "weight_decay"),
            "momentum": ("fraction", "momentum"),
        },
    ),
    "tf1": (
        compat.tf1,
        {"learning_rate": 0.01},
        {
            "learning_rate": ("nonneg", "learning_rate"),
            "decay": ("fraction", "rho"),
            "momentum": ("fraction", "momentum"),
            "epsilon": ("nonneg", "epsilon"),
        },
    ),
    "optax_rmsprop": (
        compat.optax_rmsprop,
        {"learning_rate": 0.01},
        {
            "learning_rate": ("nonneg", "learning_rate"),
            "decay": ("fraction", "rho"),
            "eps": ("nonneg", "epsilon"),
            "initial_scale": ("nonneg", "initial_rms"),
            "momentum": ("fraction", "momentum"),
        },
    ),
}

# (label, value, error type); "fraction" arguments also get 1.5.
BAD_VALUES: list[tuple[str, Any, type[Exception]]] = [
    ("inf", float("inf"), ValueError),
    ("-inf", float("-inf"), ValueError),
    ("nan", float("nan"), ValueError),
    ("negative", -1, ValueError),
    ("negative-array", jnp.asarray(-0.5), ValueError),
    ("bool", True, TypeError),
    ("None", None, TypeError),
    ("string", "0.1", TypeError),
    ("complex", 0.1 + 0.0j, TypeError),
    ("vector", np.array([0.1, 0.2]), ValueError),
]
ABOVE_ONE = ("1.5", 1.5, ValueError)
# None is a valid value of these: "no weight decay", "no momentum", Keras 2's ε default.
NONE_IS_VALID = {
    ("keras3", "weight_decay"),
    *((name, "momentum") for name in ("rmsprop", "keras3", "torch", "tf1", "optax_rmsprop")),
    ("rmsprop", "epsilon"),
}


def _cases() -> list[Any]:
    cases = []
    for factory_name, (_, _, args) in FACTORIES.items():
        for arg, (kind, core_name) in args.items():
            values = BAD_VALUES + ([ABOVE_ONE] if kind == "fraction" else [])
            for label, value, error in values:
                if value is None and (factory_name, arg) in NONE_IS_VALID:
                    continue
                cases.append(
                    pytest.param(
                        factory_name,
                        arg,
                        core_name,
                        value,
                        error,
                        id=f"{factory_name}-{arg}={label}",
                    )
                )
    return cases


def _assert_names(message: str, arg: str, core_name: str) -> None:
    __tracebackhide__ = True
    assert re.search(rf"\b{re.escape(arg)}\b", message), f"{arg!r} not named in: {message}"
    message = re.sub(r"^Invalid epsilon value: \S+ ", "", message)  # torch's own text for `eps`
    if core_name != arg:
        assert not re.search(rf"\b{re.escape(core_name)}\b", message), (
            f"the message uses jrmsprop's internal name {core_name!r} instead of {arg!r}: {message}"
        )


@pytest.mark.parametrize("factory_name, arg, core_name, value, error", _cases())
def test_bad_hyperparameter_is_refused_naming_the_users_argument(
    factory_name, arg, core_name, value, error
):
    factory, base, _ = FACTORIES[factory_name]
    with pytest.raises(error) as info:
        factory(**{**base, arg: value})
    _assert_names(str(info.value), arg, core_name)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: compat.torch(alpha=float("nan")), "alpha"),
        (lambda: compat.torch(eps=-1), "eps"),
        (lambda: compat.tf1(0.1, decay=2), "decay"),
        (lambda: compat.torch(lr=-0.1), "lr"),
        (lambda: compat.optax_rmsprop(0.1, eps=float("inf")), "eps"),
    ],
    ids=["torch-alpha-nan", "torch-eps-neg", "tf1-decay-2", "torch-lr-neg", "optax-eps-inf"],
)
def test_the_issue_examples(call, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        call()


# check_hyperparameter with a framework's checks: the framework's message where it refuses the
# value too, jrmsprop's rule after it; jrmsprop's message alone where the framework accepts it.
FRAMEWORK_MESSAGES = [
    (
        "torch",
        "lr",
        "learning_rate",
        -1,
        "Invalid learning rate: -1 (`lr` must be finite and >= 0, got -1.0)",
    ),
    (
        "torch",
        "eps",
        "epsilon",
        np.float32(-0.5),
        "Invalid epsilon value: -0.5 (`eps` must be finite and >= 0, got -0.5)",
    ),
    (
        "torch",
        "alpha",
        "rho",
        float("nan"),
        "Invalid alpha value: nan (`alpha` must be in [0, 1], got nan)",
    ),
    ("torch", "lr", "learning_rate", float("inf"), "`lr` must be finite and >= 0, got inf"),
    ("torch", "alpha", "rho", 1.5, "`alpha` must be in [0, 1], got 1.5"),
    (
        "keras2",
        "momentum",
        None,
        1.5,
        "`momentum` must be between [0, 1]. Received: "
        "momentum=1.5 (of type <class 'float'>). (`momentum` must be in [0, 1], got 1.5)",
    ),
    ("keras2", "momentum", None, float("nan"), "`momentum` must be in [0, 1], got nan"),
    (
        "keras2",
        "decay",
        None,
        -2,
        "Expected decay >= 0, received: -2 (`decay` must be finite and >= 0, got -2.0)",
    ),
    ("keras2", "rho", None, 2, "`rho` must be in [0, 1], got 2.0"),  # Keras has no check
    (None, "momentum", None, -1, "`momentum` must be in [0, 1], got -1.0"),
]


@pytest.mark.parametrize("framework, name, kind, value, message", FRAMEWORK_MESSAGES)
def test_framework_messages(framework, name, kind, value, message):
    checks = {"torch": validation.TORCH_MESSAGES, "keras2": validation.KERAS2_MESSAGES}
    with pytest.raises(ValueError) as info:
        validation.check_hyperparameter(name, value, kind, messages=checks.get(framework))
    assert str(info.value) == message


# legacy_lr(learning_rate, kwargs): (kwargs, the learning rate, warns, error and message)
LEGACY_LR = [
    ({}, 0.5, False, None),
    ({"lr": 0.1}, 0.1, True, None),
    ({"lr": None}, 0.5, True, None),
    ({"lr": -1}, None, False, (ValueError, r"^Expected lr >= 0, received: -1 \(`lr`")),
    ({"lr": 1e39}, None, False, (ValueError, r"^`lr` must be at most .* largest float32")),
    ({"lr": "0.1"}, None, False, (TypeError, "`lr` must be a real number")),
]


@pytest.mark.parametrize("kwargs, want, warns, error", LEGACY_LR, ids=str)
def test_legacy_lr(kwargs, want, warns, error):
    """Keras 2's deprecated ``lr``: replaces ``learning_rate``, with Keras's warning."""
    kwargs = {**kwargs, "decay": 0.1}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if error:
            with pytest.raises(error[0], match=error[1]):
                validation.legacy_lr(0.5, kwargs)
        else:
            assert validation.legacy_lr(0.5, kwargs) == want
            assert kwargs == {"decay": 0.1}  # ``lr`` taken out, the rest left
    assert [(w.category, str(w.message)) for w in record] == warns * [
        (UserWarning, "The `lr` argument is deprecated, use `learning_rate` instead.")
    ]


@pytest.mark.parametrize("factory_name", list(FACTORIES))
@pytest.mark.parametrize("value", ["no", 1, None, np.array([True])], ids=repr)
def test_centered_must_be_a_boolean(factory_name, value):
    factory, base, _ = FACTORIES[factory_name]
    with pytest.raises(TypeError, match=r"\bcentered\b"):
        factory(**base, centered=value)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: compat.torch(maximize="no"), "maximize"),
        (lambda: compat.optax_rmsprop(0.1, eps_in_sqrt="no"), "eps_in_sqrt"),
        (lambda: jrmsprop.rmsprop(slot_dtype=jnp.int8), "slot_dtype"),
        (lambda: jrmsprop.rmsprop(slot_dtype="not a dtype"), "slot_dtype"),
    ],
    ids=["torch-maximize", "optax-eps_in_sqrt", "slot_dtype-int", "slot_dtype-garbage"],
)
def test_bad_flags_are_type_errors(call, arg):
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        call()


# --------------------------------------------------------------------------- valid odd inputs


def _one_step(tx, params, grads):
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def test_bfloat16_learning_rate_is_accepted():
    """A low-precision scalar is a number like any other: the same step as its float value."""
    lr = jnp.bfloat16(0.1)
    p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])
    got, _ = _one_step(jrmsprop.rmsprop(lr, momentum=0.9), p, g)
    want, _ = _one_step(jrmsprop.rmsprop(float(lr), momentum=0.9), p, g)
    np.testing.assert_array_equal(got, want)
    assert float(lr) != 0.1  # the bfloat16 value itself is used, not 0.1
    got_torch, _ = _one_step(compat.torch(lr=lr), p, g)
    want_torch, _ = _one_step(compat.torch(lr=float(lr)), p, g)
    np.testing.assert_array_equal(got_torch, want_torch)


# factory, keyword, user name: schedules that return something that is not a real scalar
SCHEDULED = [
    (jrmsprop.rmsprop, {}, "learning_rate"),
    (jrmsprop.rmsprop, {}, "rho"),
    (compat.torch, {}, "lr"),
    (compat.torch, {}, "alpha"),
    (compat.tf1, {"learning_rate": 0.1}, "decay"),
    (compat.keras3, {}, "weight_decay"),
]
BAD_SCHEDULE_VALUES = [
    ("vector", lambda t: jnp.full((2,), 0.1), ValueError),
    ("int", lambda t: jnp.asarray(1, jnp.int32), TypeError),
    ("bool", lambda t: t >= 0, TypeError),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "in-jit"])
@pytest.mark.parametrize(
    "label, schedule, error", BAD_SCHEDULE_VALUES, ids=[c[0] for c in BAD_SCHEDULE_VALUES]
)
@pytest.mark.parametrize(
    "factory, base, arg", SCHEDULED, ids=[f"{f.__name__}-{a}" for f, _, a in SCHEDULED]
)
def test_schedule_returning_a_non_scalar_is_refused_at_construction(
    factory, base, arg, label, schedule, error, jit
):
    """The schedule is called once at construction (step 0); inside a jit its value is traced."""

    def make():
        return factory(**base, **{arg: schedule}).init(jnp.ones(3))

    with pytest.raises(error, match=rf"\b{arg}\b"):
        jax.jit(make)() if jit else make()


@dataclasses.dataclass  # eq=True and no frozen: __hash__ is None, the instance is unhashable
class _StepDecay:
    base: float
    every: int

    def __call__(self, count: jax.Array) -> jax.Array:
        return jnp.asarray(self.base, jnp.float32) * jnp.asarray(0.5, jnp.float32) ** (
            count // self.every
        ).astype(jnp.float32)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_unhashable_callable_schedule_works_like_a_function(momentum):
    schedule = _StepDecay(0.1, 2)
    with pytest.raises(TypeError):
        hash(schedule)
    p = jnp.array([1.0, -2.0, 3.0])
    grads = [jnp.array([0.5, 1.0, -1.0]) * (i + 1) for i in range(5)]
    results = []
    for lr in (schedule, lambda c: schedule(c)):
        tx = jrmsprop.rmsprop(lr, momentum=momentum)
        params, state = p, tx.init(p)
        for g in grads:
            u, state = jax.jit(tx.update)(g, state, params)
            params = optax.apply_updates(params, u)
        results.append(params)
    np.testing.assert_array_equal(results[0], results[1])
    # and as in optax, it goes through optax.inject_hyperparams-free composition
    chained = optax.chain(optax.identity(), jrmsprop.rmsprop(schedule, momentum=momentum))
    params, state = p, chained.init(p)
    for g in grads:
        u, state = chained.update(g, state, params)
        params = optax.apply_updates(params, u)
    np.testing.assert_array_equal(params, results[0])


CONFIGURATIONS = [
    pytest.param(lambda: jrmsprop.rmsprop(), id="rmsprop"),
    pytest.param(lambda: jrmsprop.rmsprop(momentum=0.9, centered=True), id="rmsprop-mom-c"),
    pytest.param(lambda: jrmsprop.rmsprop(momentum=lambda t: 0.5), id="rmsprop-mom-schedule"),
    pytest.param(lambda: compat.keras3(weight_decay=0.1, centered=True), id="keras3-wd"),
    pytest.param(lambda: compat.torch(momentum=0.9, weight_decay=0.1), id="torch-mom-wd"),
    pytest.param(lambda: compat.tf1(0.1), id="tf1"),
    pytest.param(lambda: compat.tf1(0.1, momentum=0.9, centered=True), id="tf1-mom-c"),
    pytest.param(lambda: compat.optax_rmsprop(0.1, initial_scale=0.5), id="optax"),
]


@pytest.mark.parametrize("make", CONFIGURATIONS)
def test_init_with_shape_dtype_structs(make):
    tx = make()
    real = {"w": jnp.ones((2, 3)), "b": jnp.ones(3, jnp.bfloat16)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), real)
    expected = tx.init(real)
    got = tx.init(abstract)  # like optax: abstract params give a concrete state
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    shapes = jax.eval_shape(tx.init, abstract)
    assert jax.tree.structure(shapes) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(expected), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize("empty", [None, {}, [], ()], ids=repr)
@pytest.mark.parametrize("make", CONFIGURATIONS)
def test_empty_parameter_trees(make, empty):
    tx = make()
    state = tx.init(empty)
    assert int(state.count) == 0
    assert jax.tree.leaves(state.rms) == []
    updates, state = tx.update(empty, state, empty)
    assert updates == empty
    assert int(state.count) == 1


# --------------------------------------------------------------------------- update-time errors


def _snapshot(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _assert_unchanged(state: Any, snapshot: Any) -> None:
    __tracebackhide__ = True
    assert jax.tree.structure(state) == jax.tree.structure(snapshot)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(snapshot), strict=True):
        assert np.asarray(a).dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), b)


PARAMS = {"w": jnp.arange(12.0).reshape(4, 3) / 10, "b": jnp.array([0.5, -0.5, 1.0])}
GOOD_GRADS = {"w": jnp.full((4, 3), 0.3), "b": jnp.array([1.0, -2.0, 0.5])}


def _make_tx() -> Any:
    return jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)


def _good_result(tx: Any, state: Any) -> tuple[Any, Any]:
    return tx.update(GOOD_GRADS, state, PARAMS)


def _sparse(values, indices, shape=(4, 3)):
    return jrmsprop.IndexedSlices(jnp.asarray(values), jnp.asarray(indices), shape)


# (id, grads, error, words that the message must contain)
BAD_UPDATES = [
    ("tree", {"w": GOOD_GRADS["w"], "c": GOOD_GRADS["b"]}, ValueError, ["updates"]),
    ("shape", {"w": jnp.ones((4, 4)), "b": GOOD_GRADS["b"]}, ValueError, ["['w']", "shape"]),
    ("int-grad", {"w": jnp.ones((4, 3), jnp.int32), "b": GOOD_GRADS["b"]}, TypeError, ["['w']"]),
    (
        "complex-grad-real-param",
        {"w": GOOD_GRADS["w"].astype(jnp.complex64), "b": GOOD_GRADS["b"]},
        TypeError,
        ["['w']", "complex"],
    ),
    (
        "slices-out-of-range",
        lambda: {"w": _sparse(np.ones((2, 3), np.float32), [1, 4]), "b": GOOD_GRADS["b"]},
        ValueError,
        ["indices"],
    ),
    (
        "slices-negative",
        lambda: {"w": _sparse(np.ones((2, 3), np.float32), [-1, 2]), "b": GOOD_GRADS["b"]},
        ValueError,
        ["indices"],
    ),
]


@pytest.mark.parametrize(
    "grads, error, words", [c[1:] for c in BAD_UPDATES], ids=[c[0] for c in BAD_UPDATES]
)
def test_bad_gradients_raise_and_leave_the_state_alone(grads, error, words):
    tx = _make_tx()
    state = tx.update(GOOD_GRADS, tx.init(PARAMS), PARAMS)[1]  # a state that is not all zeros
    snapshot = _snapshot(state)
    with pytest.raises(error) as info:
        g = grads() if callable(grads) else grads
        tx.update(g, state, PARAMS)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    _assert_unchanged(state, snapshot)
    # a retry with good gradients gives what an untouched state gives
    retry, retry_state = _good_result(tx, state)
    fresh_state = tx.update(GOOD_GRADS, tx.init(PARAMS), PARAMS)[1]
    fresh, fresh_state = _good_result(tx, fresh_state)
    jax.tree.map(np.testing.assert_array_equal, retry, fresh)
    jax.tree.map(np.testing.assert_array_equal, retry_state, fresh_state)


def _bad_states(state: Any) -> list[Any]:
    return [
        pytest.param(
            state._replace(count=jnp.asarray(1.0, jnp.float32)),
            TypeError,
            ["count"],
            id="count-float",
        ),
        pytest.param(
            state._replace(rms={**state.rms, "w": jnp.ones((4, 3), jnp.int32)}),
            TypeError,
            ["rms", "['w']"],
            id="rms-int",
        ),
        pytest.param(
            state._replace(momentum={**state.momentum, "b": jnp.zeros(4)}),
            ValueError,
            ["momentum", "['b']"],
            id="momentum-shape",
        ),
        pytest.param(
            state._replace(mg={**state.mg, "w": jnp.zeros((3, 4))}),
            ValueError,
            ["mg", "['w']"],
            id="mg-shape",
        ),
    ]


_TEMPLATE = _make_tx().init(PARAMS)


@pytest.mark.parametrize("bad_state, error, words", _bad_states(_TEMPLATE))
def test_malformed_state_raises_naming_the_slot_and_path(bad_state, error, words):
    tx = _make_tx()
    snapshot = _snapshot(bad_state)
    with pytest.raises(error) as info:
        tx.update(GOOD_GRADS, bad_state, PARAMS)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    _assert_unchanged(bad_state, snapshot)
    with pytest.raises(error):  # the same under jit
        jax.jit(tx.update)(GOOD_GRADS, bad_state, PARAMS)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda tx, p, s: tx.update(tuple(p), s, p), id="update"),
        pytest.param(lambda tx, p, s: jax.jit(tx.update)(tuple(p), s, p), id="jit-update"),
        pytest.param(lambda tx, p, s: sparse.apply_updates(p, tuple(p)), id="apply_updates"),
        pytest.param(
            lambda tx, p, s: jrmsprop.pack(tuple(p), like=jrmsprop.pack(p)), id="pack-like"
        ),
        pytest.param(
            lambda tx, p, s: jrmsprop.RMSprop().apply_gradients(
                [(None, jrmsprop.Variable(x)) for x in p]
            ),
            id="wrapper-no-gradients",
        ),
    ],
)
@pytest.mark.slow
def test_structure_errors_stay_short_for_big_trees(call):
    """A tree of 1024 leaves in the wrong container: the message names the argument and the
    number of leaves, and abbreviates the structures (not hundreds of kilobytes)."""
    params = [jnp.zeros(2)] * 1024
    tx = jrmsprop.rmsprop()
    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wrapper's "no gradient" warning
        call(tx, params, tx.init(params))
    message = str(info.value)
    assert len(message) < 2000, len(message)
    assert "characters left out" in message
    assert "1024 leaves" in message or "No gradients provided" in message


def test_weight_decay_without_params_raises_and_retry_works():
    tx = compat.torch(momentum=0.9, weight_decay=0.1)
    state = tx.init(PARAMS)
    snapshot = _snapshot(state)
    with pytest.raises(ValueError, match="params"):
        tx.update(GOOD_GRADS, state)
    _assert_unchanged(state, snapshot)
    retry = tx.update(GOOD_GRADS, state, PARAMS)
    fresh = tx.update(GOOD_GRADS, tx.init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, retry, fresh)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: jrmsprop.rmsprop(0.1, decay=0.01), id="keras2-decay"),
        pytest.param(
            lambda: jrmsprop.rmsprop(0.1, momentum=0.9, decay=0.02), id="keras2-mom-decay"
        ),
        pytest.param(lambda: compat.torch(momentum=0.9), id="torch"),
        pytest.param(lambda: compat.tf1(0.1, centered=True), id="tf1"),
    ],
)
@pytest.mark.parametrize("count", [-1, -2, np.iinfo(np.int32).min])
def test_negative_count_does_not_produce_nan(make, count):
    """A corrupted (negative) step count is refused, or at least gives finite numbers."""
    tx = make()
    state = tx.init(PARAMS)._replace(count=jnp.asarray(count, jnp.int32))
    try:
        updates, new_state = tx.update(GOOD_GRADS, state, PARAMS)
    except ValueError as e:
        assert "count" in str(e)
        return
    for leaf in jax.tree.leaves((updates, new_state)):
        assert np.all(np.isfinite(np.asarray(leaf))), (updates, new_state)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda: jrmsprop.rmsprop(0.1),
        lambda: compat.torch(lr=0.1, weight_decay=0.5),
        lambda: compat.keras3(0.1, weight_decay=0.5),
    ],
)
@pytest.mark.parametrize("bad", [(), (4,), (1,)])
def test_params_of_another_shape_are_refused_naming_the_leaf(make, bad, jit):
    """``params`` must have the state's shapes: a scalar or a (1,) would otherwise broadcast
    into the weight-decay term (wrong numbers, no error)."""
    tx = make()
    p = {"a": jnp.arange(3.0)}
    state = tx.init(p)
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(ValueError, match=r"parameter at \['a'\] has shape .* state expects \(3,\)"):
        update({"a": jnp.ones(3)}, state, {"a": jnp.ones(bad)})


# --------------------------------------------------------------------------- integers, overflow

P3 = {"w": jnp.array([1.0, 2.0, 3.0])}
G3 = {"w": jnp.array([0.5, -1.0, 2.0])}


def _step(tx: Any, count: int = 0) -> jax.Array:
    state = tx.init(P3)._replace(count=jnp.asarray(count, jnp.int32))
    return tx.update(G3, state, P3)[0]["w"]


# factory, its other arguments, the argument under test (the user's name)
INTEGER_ARGUMENTS = [
    (jrmsprop.rmsprop, {}, "learning_rate"),
    (jrmsprop.rmsprop, {"learning_rate": 0.1}, "decay"),
    (compat.keras3, {}, "learning_rate"),
    (compat.keras3, {}, "weight_decay"),
    (compat.torch, {}, "lr"),
    (compat.torch, {}, "weight_decay"),
    (compat.tf1, {}, "learning_rate"),
    (compat.optax_rmsprop, {}, "learning_rate"),
]
BIG_INTEGERS = [
    pytest.param(np.int64(2**32), id="int64-2**32"),  # was lr 0 (wrapped to int32)
    pytest.param(np.int64(2**31), id="int64-2**31"),  # was a negative lr (ascent)
    pytest.param(np.uint64(2**63 + 2**40), id="uint64"),
    pytest.param(np.asarray(2**33), id="0d-int64-array"),
    pytest.param(2**31, id="python-2**31"),  # was an OverflowError at update
    pytest.param(2**64, id="python-2**64"),  # was "must be a real number"
]


@pytest.mark.parametrize("value", BIG_INTEGERS)
@pytest.mark.parametrize(
    "factory, base, arg",
    INTEGER_ARGUMENTS,
    ids=[f"{f.__name__}-{a}" for f, _, a in INTEGER_ARGUMENTS],
)
def test_integer_hyperparameters_are_used_as_python_floats(factory, base, arg, value):
    """A NumPy or Python integer is its value as a Python float, never narrowed to int32."""
    as_float = float(value) if isinstance(value, int) else float(np.asarray(value))
    for count in (0, 3):  # 3: the inverse-time decay counts
        got = _step(factory(**{**base, arg: value}), count)
        want = _step(factory(**{**base, arg: as_float}), count)
        np.testing.assert_array_equal(got, want)
        assert np.all(np.isfinite(np.asarray(got))) and np.any(np.asarray(got) != 0)


@pytest.mark.parametrize("arg", ["clipvalue", "clipnorm", "global_clipnorm"])
@pytest.mark.parametrize("value", BIG_INTEGERS)
def test_integer_clip_thresholds_are_used_as_python_floats(arg, value):
    as_float = float(value) if isinstance(value, int) else float(np.asarray(value))
    got = jrmsprop.keras_clipping(**{arg: value}).update(G3, optax.EmptyState())[0]["w"]
    want = jrmsprop.keras_clipping(**{arg: as_float}).update(G3, optax.EmptyState())[0]["w"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, G3["w"], rtol=1e-6)  # a huge threshold clips nothing


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: jrmsprop.rmsprop(learning_rate=10**400), "learning_rate"),
        (lambda: compat.torch(weight_decay=-(10**400)), "weight_decay"),
        (lambda: jrmsprop.keras_clipping(clipnorm=10**400), "clipnorm"),
    ],
    ids=["rmsprop-lr", "torch-wd", "clipnorm"],
)
def test_an_integer_too_large_for_float64_is_refused(call, arg):
    with pytest.raises(ValueError, match=rf"`{arg}` must be a finite number, .*float64"):
        call()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit-of-update"])
@pytest.mark.parametrize(
    "count",
    [np.int64(2**40), np.int64(2**31), np.int64(-(2**31) - 1), np.uint32(2**31)],
    ids=["int64-2**40", "int64-2**31", "int64-below-int32", "uint32-2**31"],
)
def test_a_count_that_does_not_fit_int32_is_refused(count, jit):
    """A concrete int64/uint32 ``state.count`` outside int32 would wrap (2**40 -> 0) in jit."""
    tx = _make_tx()
    state = tx.init(PARAMS)._replace(count=count)
    snapshot = _snapshot(state)
    if jit:  # the caller's jit narrows it before jrmsprop sees it: only a closed-over one is seen
        update = jax.jit(lambda g, p: tx.update(g, state, p))
    else:
        update = lambda g, p: tx.update(g, state, p)
    with pytest.raises(ValueError, match=r"^rmsprop: `state\.count` is -?\d+, .*int32"):
        update(GOOD_GRADS, PARAMS)
    _assert_unchanged(state, snapshot)


def test_an_int64_count_that_fits_int32_is_used():
    tx = _make_tx()
    state = tx.init(PARAMS)
    got = tx.update(GOOD_GRADS, state._replace(count=np.int64(5)), PARAMS)
    want = tx.update(GOOD_GRADS, state._replace(count=jnp.asarray(5, jnp.int32)), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert got[1].count.dtype == jnp.int32 and int(got[1].count) == 6


# Every hyperparameter that can be large (ρ and momentum are at most 1), by factory and the
# user's name; True where the framework stores it as float32 whatever the parameters' dtype
# (``Rule.float32_hyperparameters``): refused even with x64 on.
OVERFLOW_ARGUMENTS = [
    (jrmsprop.rmsprop, {}, "learning_rate", True),
    (jrmsprop.rmsprop, {}, "decay", True),
    (jrmsprop.rmsprop, {}, "epsilon", False),
    (compat.keras3, {}, "learning_rate", True),
    (compat.keras3, {}, "epsilon", False),
    (compat.keras3, {}, "weight_decay", False),
    (compat.torch, {}, "lr", False),
    (compat.torch, {}, "eps", False),
    (compat.torch, {}, "weight_decay", False),
    (compat.tf1, {"learning_rate": 0.1}, "learning_rate", True),
    (compat.tf1, {"learning_rate": 0.1}, "epsilon", True),
    (compat.optax_rmsprop, {"learning_rate": 0.1}, "learning_rate", False),
    (compat.optax_rmsprop, {"learning_rate": 0.1}, "eps", False),
    (compat.optax_rmsprop, {"learning_rate": 0.1}, "initial_scale", False),
    (jrmsprop.keras_clipping, {}, "clipvalue", False),
    (jrmsprop.keras_clipping, {}, "clipnorm", False),
    (jrmsprop.keras_clipping, {}, "global_clipnorm", False),
]
_OVERFLOW_IDS = [f"{f.__name__}-{a}" for f, _, a, _ in OVERFLOW_ARGUMENTS]


def _call(factory: Any, base: dict[str, Any], arg: str, value: Any) -> Any:
    return factory(**{**base, arg: value})


@pytest.mark.parametrize("value", [1e39, np.float64(-1e39) * -1, 3.5e38], ids=repr)
@pytest.mark.parametrize("factory, base, arg, float32", OVERFLOW_ARGUMENTS, ids=_OVERFLOW_IDS)
def test_a_value_that_overflows_float32_is_refused(factory, base, arg, float32, value):
    """Finite but above float32's largest: it would be inf (inf/NaN steps, frozen parameters)."""
    with pytest.raises(ValueError, match=rf"^`{arg}` must be at most 3\.40282e\+38.*float32"):
        _call(factory, base, arg, value)


@pytest.mark.parametrize("factory, base, arg, float32", OVERFLOW_ARGUMENTS, ids=_OVERFLOW_IDS)
def test_float32_max_itself_is_accepted(factory, base, arg, float32):
    _call(factory, base, arg, float(np.finfo(np.float32).max))


@pytest.mark.parametrize(
    "kwargs, arg",
    [({"decay": 1e39}, "decay"), ({"epsilon": 1e39}, "epsilon"), ({"clipnorm": 1e39}, "clipnorm")],
    ids=["decay", "epsilon", "clipnorm"],
)
def test_the_wrapper_refuses_a_value_that_overflows_float32(kwargs, arg):
    with pytest.raises(ValueError, match=rf"`{arg}` must be at most .*float32"):
        jrmsprop.RMSprop(**kwargs)


@pytest.mark.parametrize("factory, base, arg, float32", OVERFLOW_ARGUMENTS, ids=_OVERFLOW_IDS)
def test_with_x64_only_float32_hyperparameters_must_fit_float32(x64, factory, base, arg, float32):
    """With x64 on, float64 parameters can use a value above float32's range, unless the
    framework stores that hyperparameter as float32 anyway (Keras's lr, TF1's ε, ...)."""
    if float32:
        with pytest.raises(ValueError, match=rf"^`{arg}` must be at most .*used as a float32"):
            _call(factory, base, arg, 1e39)
        return
    tx = _call(factory, base, arg, 1e39)
    p = {"w": jnp.array([1.0, 2.0, 3.0], jnp.float64)}
    g = {"w": jnp.array([0.5, -1.0, 2.0], jnp.float64)}
    updates = tx.update(g, tx.init(p), p)[0]["w"]
    assert updates.dtype == jnp.float64
    assert np.all(np.isfinite(np.asarray(updates))), updates


# --------------------------------------------------------------------------- schedules

# factory, its other arguments, the argument (user's name), a schedule with a constant bad value
CONSTANT_BAD_SCHEDULES = [
    (jrmsprop.rmsprop, {}, "learning_rate", lambda c: jnp.float32(-1.0)),
    (jrmsprop.rmsprop, {}, "rho", lambda c: jnp.asarray(-1.0)),
    (jrmsprop.rmsprop, {}, "momentum", lambda c: jnp.float32(0.5) * 3),  # computed: 1.5
    (jrmsprop.rmsprop, {}, "decay", lambda c: jnp.asarray(-0.5, jnp.bfloat16)),
    (jrmsprop.rmsprop, {}, "epsilon", lambda c: np.float64(1e39)),  # NumPy: overflows float32
    (compat.torch, {}, "lr", optax.constant_schedule(-0.5)),
    (compat.torch, {}, "alpha", lambda c: jnp.asarray(jnp.nan)),
    (compat.tf1, {"learning_rate": 0.1}, "decay", lambda c: jnp.asarray(1.5)),
    (compat.keras3, {}, "weight_decay", lambda c: jnp.asarray(-0.1)),
    (compat.keras3, {}, "learning_rate", (lambda neg: lambda c: neg)(jnp.asarray(-1.0))),
]


@pytest.mark.parametrize(
    "factory, base, arg, schedule",
    CONSTANT_BAD_SCHEDULES,
    ids=[f"{f.__name__}-{a}-{i}" for i, (f, _, a, _) in enumerate(CONSTANT_BAD_SCHEDULES)],
)
def test_a_schedule_with_a_constant_bad_value_is_refused(factory, base, arg, schedule):
    """A schedule's value at step 0 is range-checked at construction whatever its type (a JAX
    array included), as the same Python number would be."""
    with pytest.raises(ValueError, match=rf"^the schedule given as `{arg}` returned a bad value"):
        factory(**base, **{arg: schedule})


def test_a_schedule_over_a_traced_value_is_not_range_checked():
    """Built inside a jit, a schedule that closes over a traced value cannot be read at
    construction: it is used as it is."""

    @jax.jit
    def step(lr):
        tx = jrmsprop.rmsprop(lambda count: lr)
        return tx.update(G3, tx.init(P3), P3)[0]["w"]

    np.testing.assert_array_equal(step(jnp.float32(0.1)), _step(jrmsprop.rmsprop(0.1)))


def test_a_schedule_with_a_constant_good_value_gives_the_numbers_of_that_value():
    got = _step(jrmsprop.rmsprop(lambda c: jnp.float32(0.1), momentum=lambda c: jnp.asarray(0.5)))
    want = _step(jrmsprop.rmsprop(0.1, momentum=lambda c: 0.5))
    np.testing.assert_array_equal(got, want)


def test_checking_a_schedule_adds_nothing_to_the_compiled_update():
    """The schedule is called once at construction (at step 0, checked) and then once per step,
    not twice; a step-dependent value still works."""
    calls = []

    def schedule(count):
        jax.debug.callback(lambda c: calls.append(int(c)), count)
        return jnp.asarray(0.1, jnp.float32) / (1 + count.astype(jnp.float32))

    tx = jrmsprop.rmsprop(schedule)
    state = tx.init(P3)
    for _ in range(3):
        _, state = tx.update(G3, state, P3)
    jax.effects_barrier()
    assert calls == [0, 0, 1, 2]


@pytest.mark.parametrize(
    "factory, base, arg",
    [
        (jrmsprop.rmsprop, {}, "learning_rate"),
        (jrmsprop.rmsprop, {}, "momentum"),
        (compat.torch, {}, "alpha"),
        (compat.tf1, {"learning_rate": 0.1}, "decay"),
        (compat.optax_rmsprop, {"learning_rate": 0.1}, "eps"),
    ],
    ids=["rmsprop-lr", "rmsprop-momentum", "torch-alpha", "tf1-decay", "optax-eps"],
)
@pytest.mark.parametrize(
    "schedule",
    [lambda: 0.1, lambda *, count: 0.1, lambda a, b: 0.1],
    ids=["no-argument", "keyword-only", "two-arguments"],
)
def test_a_schedule_that_does_not_take_the_step_count_is_refused_at_construction(
    factory, base, arg, schedule
):
    with pytest.raises(
        TypeError, match=rf"^the schedule given as `{arg}` must take the step count"
    ):
        factory(**base, **{arg: schedule})


def test_a_schedule_with_a_default_argument_is_still_a_schedule():
    tx = jrmsprop.rmsprop(lambda count, scale=1.0: scale * 0.1 / (1 + count.astype(jnp.float32)))
    np.testing.assert_array_equal(_step(tx), _step(jrmsprop.rmsprop(0.1)))


# --------------------------------------------------------------------------- a subtree for a leaf


@pytest.mark.parametrize(
    "subtree",
    [{"a": jnp.ones((2, 3))}, [jnp.ones(3), jnp.ones(3)], (jnp.ones((2, 3)),)],
    ids=["dict", "list-of-rows", "tuple"],
)
@pytest.mark.parametrize("where", ["grads", "params", "update_and_apply"])
def test_subtree_in_place_of_a_leaf_is_refused(subtree, where):
    """``flatten_up_to`` hands back a whole subtree where the state has one leaf: a list of rows
    was stacked into the (2, 3) leaf and accepted, a dict failed inside NumPy; both name the
    leaf."""
    tx = jrmsprop.rmsprop(0.1, momentum=0.5, centered=True)
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}
    bad = {"w": subtree, "b": jnp.ones(2)}
    calls = {
        "grads": lambda: tx.update(bad, state, params),
        "params": lambda: tx.update(grads, state, bad),
        "update_and_apply": lambda: jrmsprop.update_and_apply(tx, bad, state, params),
    }
    name = {"grads": "updates", "params": "params", "update_and_apply": "grads"}[where]
    with pytest.raises(ValueError, match=rf"`{name}` at \['w'\] is a subtree"):
        calls[where]()
    for slot in ("momentum", "mg"):  # (state.rms is the structure the others are read by)
        bad_state = state._replace(**{slot: {"w": subtree, "b": jnp.zeros(2)}})
        with pytest.raises(ValueError, match=rf"`state.{slot}` at \['w'\] is a subtree"):
            tx.update(grads, bad_state, params)


@pytest.mark.parametrize(
    "make, prefix",
    [
        (lambda: jrmsprop.rmsprop(0.1), "rmsprop"),
        (lambda: compat.torch(0.1), "compat.torch"),
        (lambda: compat.keras3(0.1), "compat.keras3"),
        (lambda: compat.tf1(0.1), "compat.tf1"),
    ],
)
def test_structure_and_leaf_errors_name_the_preset(make, prefix):
    """Errors about the gradients, parameters and state start with the preset the user called."""
    tx = make()
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    cases = [
        (lambda: tx.update({"w": jnp.ones(4)}, state, params), ValueError, "gradient at"),
        (lambda: tx.update({"w": jnp.ones(3, jnp.int32)}, state, params), TypeError, "gradient"),
        (lambda: tx.update({"v": jnp.ones(3)}, state, params), ValueError, "tree structure"),
        (lambda: tx.update({"w": [1.0, 2.0, 3.0]}, state, params), ValueError, "subtree"),
        (lambda: tx.update(params, state._replace(count=jnp.ones(2, jnp.int32))), ValueError, ""),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=rf"^{re.escape(prefix)}: .*{text}"):
            call()


PRESETS_AT_01 = {
    "rmsprop": lambda **kw: jrmsprop.rmsprop(0.1, **kw),
    "keras3": lambda **kw: compat.keras3(0.1, **kw),
    "torch": lambda **kw: compat.torch(0.1, **kw),
    "tf1": lambda **kw: compat.tf1(0.1, **kw),
    "optax_rmsprop": lambda **kw: compat.optax_rmsprop(0.1, **kw),
}
SLOT_CONFIGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "both": {"momentum": 0.9, "centered": True},
}
TWO_LEAVES = {"b": jnp.array([0.5, -0.5]), "w": jnp.arange(6.0).reshape(2, 3) / 10}
TWO_GRADS = {"b": jnp.array([1.0, -2.0]), "w": jnp.full((2, 3), 0.3)}


# ---------------------------------------------------------- leaves that are not arrays, complex rms


@pytest.mark.parametrize("preset", list(PRESETS_AT_01))
@pytest.mark.parametrize(
    "params, where, got",
    [
        ({"w": "abc"}, r"\['w'\]", "str 'abc'"),
        ({"b": jnp.ones(2), "w": [1.0, b"x"]}, r"\['w'\]\[1\]", "bytes b'x'"),
        ({"w": (object(),)}, r"\['w'\]\[0\]", "object"),
    ],
)
def test_init_refuses_leaves_that_are_not_arrays_naming_params_and_the_leaf(
    preset, params, where, got
):
    tx = PRESETS_AT_01[preset]()
    with pytest.raises(
        TypeError, match=rf"`params` at {where} must be an array or a number.*{got}"
    ):
        tx.init(params)


def test_init_still_takes_python_and_numpy_numbers():
    state = jrmsprop.rmsprop().init({"a": 1.0, "b": np.float32(2.0), "c": 1 + 2j})
    assert state.rms["a"].dtype == jnp.float32 and state.rms["c"].dtype == jnp.float32


@pytest.mark.parametrize("config", list(SLOT_CONFIGS))
@pytest.mark.parametrize("preset", list(PRESETS_AT_01))
def test_init_gives_real_parameters_a_real_rms_in_every_preset(preset, config):
    """The premise of the check below, and the one exception: compat.torch treats a complex
    parameter as a pair of real ones and keeps a complex rms for it."""
    tx = PRESETS_AT_01[preset](**SLOT_CONFIGS[config])
    state = tx.init({**TWO_LEAVES, "c": jnp.ones(2, jnp.complex64)})
    assert all(not jnp.iscomplexobj(state.rms[k]) for k in TWO_LEAVES)
    assert jnp.iscomplexobj(state.rms["c"]) == (preset == "torch")


@pytest.mark.parametrize("with_params", [True, False])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("config", list(SLOT_CONFIGS))
@pytest.mark.parametrize("preset", list(PRESETS_AT_01))
def test_complex_rms_for_a_real_parameter_is_refused(preset, config, jit, with_params):
    tx = PRESETS_AT_01[preset](**SLOT_CONFIGS[config])
    state = tx.init(TWO_LEAVES)
    bad = state._replace(rms={**state.rms, "w": state.rms["w"].astype(jnp.complex64)})
    snapshot = _snapshot(bad)
    update = jax.jit(tx.update) if jit else tx.update
    args = (TWO_GRADS, bad, TWO_LEAVES) if with_params else (TWO_GRADS, bad)
    with pytest.raises(TypeError, match=r"`state.rms` at \['w'\] has complex dtype complex64"):
        update(*args)
    _assert_unchanged(bad, snapshot)


@pytest.mark.parametrize("config", list(SLOT_CONFIGS))
def test_torch_complex_rms_for_a_complex_parameter_still_works(config):
    tx = compat.torch(0.1, **SLOT_CONFIGS[config])
    params = {"c": jnp.array([1.0 + 2.0j, -0.5j])}
    state = tx.init(params)
    grads = {"c": jnp.array([0.3 - 0.1j, 1.0 + 0.0j])}
    for args in ((grads, state), (grads, state, params)):
        updates, new_state = tx.update(*args)
        assert new_state.rms["c"].dtype == jnp.complex64
        assert updates["c"].dtype == jnp.complex64


@pytest.mark.parametrize("bad", ["ab", b"ab", object()], ids=["str", "bytes", "object"])
@pytest.mark.parametrize("where", ["updates", "params", "grads"])
def test_update_names_a_leaf_that_is_not_an_array(bad, where):
    """JAX refused such a leaf as a jit argument with "Error interpreting argument to <function
    _tree_update>", naming neither the argument nor the leaf."""
    tx = PRESETS_AT_01["torch"]()
    state = tx.init(TWO_LEAVES)
    snapshot = _snapshot(state)
    tree = {"b": bad, "w": TWO_GRADS["w"]}
    call = {
        "updates": lambda: tx.update(tree, state, TWO_LEAVES),
        "params": lambda: tx.update(TWO_GRADS, state, tree),
        "grads": lambda: jrmsprop.update_and_apply(tx, tree, state, TWO_LEAVES),
    }[where]
    with pytest.raises(TypeError, match=rf"^compat.torch: `{where}` at \['b'\] must be an array"):
        call()
    _assert_unchanged(state, snapshot)
