"""More bad inputs to the functional API: each is refused with an error that names the argument
and the leaf, where before JAX failed with a message that named neither (or the input was
accepted and the state drifted).

* ``init`` with a leaf that is not an array or a number (a string): JAX's dtype error.
* ``state.momentum_on`` that is not None or a boolean scalar: JAX's ``Pred must be a scalar``,
  or its "Error interpreting argument" for a string.
* a complex ``state.rms`` for a real parameter: accepted, and the state (and the updates)
  turned complex. ``init`` gives a real parameter a real ``rms`` in every preset; only
  ``compat.torch`` gives a complex parameter a complex one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop import compat
from tests.test_bad_inputs import _assert_unchanged, _snapshot

PRESETS = {
    "rmsprop": lambda **kw: jrmsprop.rmsprop(0.1, **kw),
    "keras2": lambda **kw: compat.keras2(0.1, **kw),
    "tf_keras_legacy": lambda **kw: compat.tf_keras_legacy(0.1, **kw),
    "keras3": lambda **kw: compat.keras3(0.1, **kw),
    "tf_keras_2_11": lambda **kw: compat.tf_keras_2_11(0.1, **kw),
    "torch": lambda **kw: compat.torch(0.1, **kw),
    "tf1": lambda **kw: compat.tf1(0.1, **kw),
    "optax_rmsprop": lambda **kw: compat.optax_rmsprop(0.1, **kw),
}
CONFIGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "both": {"momentum": 0.9, "centered": True},
}
PARAMS = {"b": jnp.array([0.5, -0.5]), "w": jnp.arange(6.0).reshape(2, 3) / 10}
GRADS = {"b": jnp.array([1.0, -2.0]), "w": jnp.full((2, 3), 0.3)}


# ---- init: leaves that are not arrays or numbers ----------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
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
    tx = PRESETS[preset]()
    with pytest.raises(
        TypeError, match=rf"`params` at {where} must be an array or a number.*{got}"
    ):
        tx.init(params)


def test_init_still_takes_python_and_numpy_numbers():
    state = jrmsprop.rmsprop().init({"a": 1.0, "b": np.float32(2.0), "c": 1 + 2j})
    assert state.rms["a"].dtype == jnp.float32 and state.rms["c"].dtype == jnp.float32


# ---- state.momentum_on ------------------------------------------------------------------------


def _traced_momentum_state(momentum: float = 0.9) -> tuple[Any, Any]:
    """A state whose ``momentum_on`` is set: a momentum that was traced at init."""
    tx = optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1, momentum=momentum)
    state = jax.jit(tx.init)(PARAMS)
    assert state.inner_state.momentum_on is not None
    return tx, state


def _with_momentum_on(state: Any, value: Any) -> Any:
    return state._replace(inner_state=state.inner_state._replace(momentum_on=value))


BAD_MOMENTUM_ON = [
    pytest.param("abc", TypeError, "str 'abc'", id="string"),
    pytest.param(jnp.array([True, False]), ValueError, r"shape \(2,\)", id="vector"),
    pytest.param(np.array([[1]]), ValueError, r"shape \(1, 1\)", id="matrix"),
    pytest.param(1j, TypeError, "complex", id="complex"),
    pytest.param(jnp.asarray(1j), TypeError, "complex64", id="complex-array"),
    pytest.param(np.array(["a"]), TypeError, "dtype", id="string-array"),
    pytest.param(object(), TypeError, "object", id="object"),
]


# What can be an argument of a caller's jit (a string or an object cannot).
JITTABLE_MOMENTUM_ON = [p for p in BAD_MOMENTUM_ON if p.id in ("vector", "matrix", "complex-array")]


@pytest.mark.parametrize(
    "jit, value, error, words",
    [pytest.param(False, *p.values, id=p.id) for p in BAD_MOMENTUM_ON]
    + [pytest.param(True, *p.values, id=f"jit-{p.id}") for p in JITTABLE_MOMENTUM_ON],
)
def test_garbage_momentum_on_is_refused_naming_it(jit, value, error, words):
    tx, state = _traced_momentum_state()
    bad = _with_momentum_on(state, value)
    update = jax.jit(tx.update) if jit else tx.update
    snapshot = _snapshot(state)
    with pytest.raises(
        error, match=rf"`state.momentum_on` must be None or a boolean scalar.*{words}"
    ):
        update(GRADS, bad, PARAMS)
    _assert_unchanged(state, snapshot)


@pytest.mark.parametrize("value, error, words", BAD_MOMENTUM_ON[:3])
def test_garbage_momentum_on_is_refused_also_where_the_state_has_a_momentum_slot(
    value, error, words
):
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    with pytest.raises(error, match=rf"`state.momentum_on`.*{words}"):
        tx.update(GRADS, tx.init(PARAMS)._replace(momentum_on=value), PARAMS)


@pytest.mark.parametrize("value", [jnp.asarray(True), np.bool_(True), True, jnp.int32(1)])
def test_valid_momentum_on_values_still_work(value):
    tx, state = _traced_momentum_state()
    expected = tx.update(GRADS, state, PARAMS)
    got = tx.update(GRADS, _with_momentum_on(state, value), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, got[0], expected[0])


@pytest.mark.parametrize("value", [jnp.asarray(False), np.bool_(False), False, 0])
def test_valid_momentum_on_off_values_still_work(value):
    tx, state = _traced_momentum_state(0.0)
    expected = tx.update(GRADS, state, PARAMS)
    got = tx.update(GRADS, _with_momentum_on(state, value), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, got[0], expected[0])


# ---- a complex rms for a real parameter -------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_init_gives_real_parameters_a_real_rms_in_every_preset(preset, config):
    """The premise of the check below, and the one exception: compat.torch treats a complex
    parameter as a pair of real ones and keeps a complex rms for it."""
    tx = PRESETS[preset](**CONFIGS[config])
    state = tx.init({**PARAMS, "c": jnp.ones(2, jnp.complex64)})
    assert all(not jnp.iscomplexobj(state.rms[k]) for k in PARAMS)
    assert jnp.iscomplexobj(state.rms["c"]) == (preset == "torch")


@pytest.mark.parametrize("with_params", [True, False])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_complex_rms_for_a_real_parameter_is_refused(preset, config, jit, with_params):
    tx = PRESETS[preset](**CONFIGS[config])
    state = tx.init(PARAMS)
    bad = state._replace(rms={**state.rms, "w": state.rms["w"].astype(jnp.complex64)})
    snapshot = _snapshot(bad)
    update = jax.jit(tx.update) if jit else tx.update
    args = (GRADS, bad, PARAMS) if with_params else (GRADS, bad)
    with pytest.raises(TypeError, match=r"`state.rms` at \['w'\] has complex dtype complex64"):
        update(*args)
    _assert_unchanged(bad, snapshot)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_torch_complex_rms_for_a_complex_parameter_still_works(config):
    tx = compat.torch(0.1, **CONFIGS[config])
    params = {"c": jnp.array([1.0 + 2.0j, -0.5j])}
    state = tx.init(params)
    grads = {"c": jnp.array([0.3 - 0.1j, 1.0 + 0.0j])}
    for args in ((grads, state), (grads, state, params)):
        updates, new_state = tx.update(*args)
        assert new_state.rms["c"].dtype == jnp.complex64
        assert updates["c"].dtype == jnp.complex64


# ---- update: leaves that are not arrays -------------------------------------------------------


@pytest.mark.parametrize("bad", ["ab", b"ab", object()], ids=["str", "bytes", "object"])
@pytest.mark.parametrize("where", ["updates", "params", "grads"])
def test_update_names_a_leaf_that_is_not_an_array(bad, where):
    """JAX refused such a leaf as a jit argument with "Error interpreting argument to <function
    _tree_update>", naming neither the argument nor the leaf."""
    tx = PRESETS["torch"]()
    state = tx.init(PARAMS)
    snapshot = _snapshot(state)
    tree = {"b": bad, "w": GRADS["w"]}
    call = {
        "updates": lambda: tx.update(tree, state, PARAMS),
        "params": lambda: tx.update(GRADS, state, tree),
        "grads": lambda: jrmsprop.update_and_apply(tx, tree, state, PARAMS),
    }[where]
    with pytest.raises(TypeError, match=rf"^compat.torch: `{where}` at \['b'\] is .*must be an"):
        call()
    _assert_unchanged(state, snapshot)
