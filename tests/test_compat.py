"""Presets and state transfer (independent NumPy re-derivations; the real frameworks are in
test_golden.py / test_live_frameworks.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy_reference import Reference

import jrmsprop
from jrmsprop import compat

f32 = np.float32


def _steps(tx, p, grads, with_params=True):
    s = tx.init(p)
    for g in grads:
        u, s = tx.update(g, s, p if with_params else None)
        p = optax.apply_updates(p, u)
    return p, s


def _grads(n=15, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _reference_run(ref, p0, grads):
    p = p0
    for g in grads:
        (p,) = ref.apply([g], [p])
    return p


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_torch_preset_matches_numpy_torch_rule(momentum, centered, maximize):
    kwargs = dict(
        lr=0.01,
        alpha=0.9,
        eps=1e-3,
        weight_decay=0.1,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )
    p0 = np.linspace(-1, 1, 4).astype(np.float32)
    grads = _grads()
    expected = _reference_run(Reference.from_kwargs("torch", kwargs), p0, grads)
    got, _ = _steps(compat.torch(**kwargs), jnp.asarray(p0), grads)
    # PyTorch rounds (1−α)·g·g and lerp in its own order: float32 rounding, not bit for bit
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [None, 0.01])
def test_keras3_preset_matches_numpy_keras3_rule(momentum, weight_decay):
    p0 = np.linspace(-1, 1, 4).astype(np.float32)
    grads = _grads(seed=1)
    ref = Reference(
        rule="keras3", learning_rate=0.05, momentum=momentum, weight_decay=weight_decay or 0.0
    )
    expected = _reference_run(ref, p0, grads)
    got, _ = _steps(
        compat.keras3(0.05, momentum=momentum, weight_decay=weight_decay), jnp.asarray(p0), grads
    )
    if weight_decay is None:
        np.testing.assert_array_equal(got, expected)
    else:  # the decay is its own rounded assignment in Keras 3: float32 rounding
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_tf1_preset_rms_starts_at_one_eps_inside(momentum, centered):
    p0 = np.ones(4, f32)
    grads = _grads(seed=2)
    ref = Reference.from_kwargs(
        "tf1",
        dict(learning_rate=0.1, decay=0.9, momentum=momentum, epsilon=1e-10, centered=centered),
    )
    expected = _reference_run(ref, p0, grads)
    got, state = _steps(
        compat.tf1(0.1, momentum=momentum, centered=centered), jnp.asarray(p0), grads
    )
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(state.rms, ref.slots[("rms", 0)])
    # one step from p = 1, g = 2: rms = 0.9·1 + 0.1·4 = 1.3, p = 1 − 0.1·2/√1.3
    one, _ = _steps(compat.tf1(0.1, momentum=momentum), jnp.ones(1), [np.full(1, 2.0, f32)])
    np.testing.assert_allclose(one, 1 - 0.2 / np.sqrt(1.3), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(momentum=0.9),
        dict(centered=True),
        dict(eps_in_sqrt=False, momentum=0.5),
        dict(initial_scale=0.5, centered=True, momentum=0.9),
    ],
    ids=str,
)
def test_optax_mapping_gives_optax_numbers(kwargs):
    grads = _grads(n=30, seed=3)
    p0 = jnp.linspace(-1.0, 1.0, 4)
    ours, _ = _steps(compat.optax_rmsprop(0.01, decay=0.8, eps=1e-4, **kwargs), p0, grads)
    theirs, _ = _steps(optax.rmsprop(0.01, decay=0.8, eps=1e-4, **kwargs), p0, grads)
    # optax multiplies by rsqrt / a reciprocal where we divide: a few ulp apart
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["nesterov", "bias_correction"])
def test_optax_mapping_rejects_unsupported(name):
    with pytest.raises(ValueError, match=name):
        compat.optax_rmsprop(0.1, **{name: True})


def test_state_from_keras2_continues_like_an_uninterrupted_run():
    params = {"a": jnp.linspace(0.0, 1.0, 3), "b": jnp.ones((2, 2))}
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    grads = [jax.tree.map(lambda x, i=i: jnp.cos(x * (i + 1)), params) for i in range(8)]
    state = tx.init(params)
    p = params
    for g in grads[:4]:
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    leaves = jax.tree.leaves  # Keras order: every rms, then momentum, then mg
    weights = [np.asarray(4, np.int64)] + [
        np.asarray(x) for x in leaves(state.rms) + leaves(state.momentum) + leaves(state.mg)
    ]
    restored = compat.state_from_keras2(weights, p, momentum=True, centered=True)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    with pytest.raises(ValueError, match="1 \\+ 3·2 = 7"):
        compat.state_from_keras2(weights[:-1], p, momentum=True, centered=True)
    with pytest.raises(ValueError, match="shape"):
        compat.state_from_keras2(
            [weights[0], np.ones(5)] + weights[2:], p, momentum=True, centered=True
        )
    for not_a_list in (None, "weights", {"iter": weights[0]}, np.ones((7, 3))):
        with pytest.raises(TypeError, match="`weights` must be a list of arrays"):
            compat.state_from_keras2(not_a_list, p, momentum=True, centered=True)


def test_state_from_torch_builds_count_and_slots():
    sd = {
        "state": {
            0: {
                "step": np.float32(5),
                "square_avg": np.full(3, 2.0, np.float32),
                "momentum_buffer": np.full(3, 0.5, np.float32),
                "grad_avg": np.full(3, 0.1, np.float32),
            },
        },
        "param_groups": [{"params": [0, 1], "lr": 0.01, "momentum": 0.9, "centered": True}],
    }
    params = [jnp.zeros(3), jnp.zeros((2,))]
    s = compat.state_from_torch(sd, params)
    assert int(s.count) == 5
    np.testing.assert_array_equal(s.rms[0], 2.0)
    np.testing.assert_array_equal(s.momentum[0], 0.5)
    np.testing.assert_array_equal(s.mg[1], 0.0)  # never stepped: fresh slot
    with pytest.raises(ValueError, match="2 parameters"):
        compat.state_from_torch(sd, params[:1])
    sd["state"][1] = dict(
        sd["state"][0],
        step=np.float32(4),
        square_avg=np.ones(2, np.float32),
        momentum_buffer=np.ones(2, np.float32),
        grad_avg=np.ones(2, np.float32),
    )
    with pytest.raises(ValueError, match="unequally"):
        compat.state_from_torch(sd, params)


@pytest.mark.parametrize(
    "state_dict, error, words",
    [
        ([], TypeError, "a mapping"),
        ({"state": {}}, ValueError, "'state' and 'param_groups'"),
        ({"state": [], "param_groups": []}, ValueError, r"`state_dict\['state'\]` must be"),
        ({"state": {}, "param_groups": [{"lr": 1}]}, ValueError, "'params' list"),
        (
            {"state": {0: {"step": np.float32(1)}}, "param_groups": [{"params": [0]}]},
            ValueError,
            r"`state_dict\['state'\]\[0\]` lacks \['square_avg'\]",
        ),
        (
            {
                "state": {0: {"step": np.float32(1), "square_avg": np.ones(3, np.float32)}},
                "param_groups": [{"params": [0], "momentum": 0.9}],
            },
            ValueError,
            r"lacks \['momentum_buffer'\]",
        ),
    ],
)
def test_state_from_torch_refuses_malformed_state_dicts(state_dict, error, words):
    """Not a raw KeyError: the message names the part of ``state_dict`` that is wrong."""
    with pytest.raises(error, match=words):
        compat.state_from_torch(state_dict, [jnp.zeros(3)])
