"""``compat.state_from_torch`` with several param groups: they must agree on every hyperparameter.

One :func:`jrmsprop.compat.torch` state serves one set of hyperparameters, so groups that differ
in ``lr``, ``alpha``, ``eps``, ``weight_decay``, ``momentum``, ``centered`` or ``maximize`` (a
missing key counting as torch's default) are refused with a ``ValueError`` naming the keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrmsprop import compat


def _sd(*groups, state=None):
    return {
        "state": {} if state is None else state,
        "param_groups": [{"params": [k], **g} for k, g in enumerate(groups)],
    }


def _params(n):
    return [jnp.zeros(k + 2) for k in range(n)]


@pytest.mark.parametrize(
    "first, second, keys",
    [
        ({"lr": 0.01, "alpha": 0.99}, {"lr": 1.0, "alpha": 0.5}, "['lr', 'alpha']"),
        ({"lr": 0.01}, {"lr": 0.1}, "['lr']"),
        ({"alpha": 0.99}, {"alpha": 0.9}, "['alpha']"),
        ({"eps": 1e-8}, {"eps": 1e-3}, "['eps']"),
        ({"weight_decay": 0}, {"weight_decay": 0.1}, "['weight_decay']"),
        ({"maximize": False}, {"maximize": True}, "['maximize']"),
        ({"momentum": 0.5}, {"momentum": 0.9}, "['momentum']"),  # both on, different values
        ({"momentum": 0}, {"momentum": 0.9}, "['momentum']"),
        ({"centered": False}, {"centered": True}, "['centered']"),
        # a key present in one group only: the other uses torch's default
        ({}, {"lr": 0.5}, "['lr']"),
        ({"alpha": 0.5}, {}, "['alpha']"),
        ({"maximize": True}, {}, "['maximize']"),
        ({}, {"weight_decay": 1e-4}, "['weight_decay']"),
    ],
)
def test_groups_with_different_hyperparameters_are_refused(first, second, keys):
    sd = _sd(first, second)
    with pytest.raises(ValueError, match="param groups") as info:
        compat.state_from_torch(sd, _params(2))
    message = str(info.value)
    assert f"differ in {keys}" in message, message
    assert "group 0" in message and "group 1" in message, message
    assert "state_dict['param_groups']" in message, message


def test_the_error_names_only_the_groups_that_differ_and_shows_their_values():
    sd = _sd({"lr": 0.01}, {"lr": 0.01}, {"lr": 0.02, "eps": 1e-8}, {"lr": 0.01})
    with pytest.raises(ValueError) as info:
        compat.state_from_torch(sd, _params(4))
    message = str(info.value)
    assert "differ in ['lr']" in message  # eps equals the default in every group
    assert 'group 0 has {"lr": 0.01}' in message
    assert 'group 2 has {"lr": 0.02}' in message
    assert "group 1" not in message and "group 3" not in message


@pytest.mark.parametrize(
    "first, second",
    [
        ({"lr": 0.01, "alpha": 0.99}, {"lr": 0.01, "alpha": 0.99}),
        # missing keys equal torch's defaults
        ({}, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0, "momentum": 0}),
        ({"centered": False, "maximize": False}, {}),
        # the same value in other types: int / float / NumPy
        ({"weight_decay": 0, "momentum": 0.0}, {"weight_decay": 0.0, "momentum": np.float64(0)}),
        ({"maximize": np.bool_(False)}, {"maximize": False}),
        # keys torch keeps that do not change the arithmetic may differ
        ({"foreach": None, "capturable": False}, {"foreach": True, "differentiable": False}),
    ],
)
def test_groups_that_agree_are_merged(first, second):
    state = compat.state_from_torch(_sd(first, second), _params(2))
    assert int(state.count) == 0
    assert [x.shape for x in state.rms] == [(2,), (3,)]


def test_agreeing_groups_continue_like_one_group():
    rng = np.random.default_rng(0)
    hyper = {"lr": 0.05, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True}
    entries = {
        k: {
            "step": np.float32(4),
            "square_avg": rng.random(k + 2).astype(np.float32),
            "momentum_buffer": rng.standard_normal(k + 2).astype(np.float32),
            "grad_avg": rng.standard_normal(k + 2).astype(np.float32),
        }
        for k in range(2)
    }
    two = compat.state_from_torch(_sd(hyper, dict(hyper), state=entries), _params(2))
    one = compat.state_from_torch(
        {"state": entries, "param_groups": [{"params": [0, 1], **hyper}]}, _params(2)
    )
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_momentum_buffer_is_ignored_at_momentum_zero():
    """torch keeps a momentum_buffer from a run with momentum but never reads it at momentum 0:
    the state (documented) has no momentum slot then."""
    entry = {
        "step": np.float32(2),
        "square_avg": np.ones(2, np.float32),
        "momentum_buffer": np.full(2, 3.0, np.float32),
    }
    sd = {"state": {0: entry}, "param_groups": [{"params": [0], "momentum": 0}]}
    state = compat.state_from_torch(sd, [jnp.zeros(2)])
    assert state.momentum is None
    assert "momentum_buffer" in compat.state_from_torch.__doc__
