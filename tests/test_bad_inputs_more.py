"""More bad inputs to the functional API: each is refused with an error that names the argument
and the leaf, where before JAX failed with a message that named neither (or the input was
accepted and the state drifted).

* ``init`` with a leaf that is not an array or a number (a string): JAX's dtype error.
* a complex ``state.rms`` for a real parameter: accepted, and the state (and the updates)
  turned complex. ``init`` gives a real parameter a real ``rms`` in every preset; only
  ``compat.torch`` gives a complex parameter a complex one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrmsprop
from jrmsprop import compat
from tests.test_bad_inputs import _assert_unchanged, _snapshot

PRESETS = {
    "rmsprop": lambda **kw: jrmsprop.rmsprop(0.1, **kw),
    "keras3": lambda **kw: compat.keras3(0.1, **kw),
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
    with pytest.raises(TypeError, match=rf"^compat.torch: `{where}` at \['b'\] must be an array"):
        call()
    _assert_unchanged(state, snapshot)
