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


# ---- loaders: state_from_torch / state_from_keras2 (jrmsprop._src.saved_state) ----------------

from jrmsprop._src import checkpoint as saved_state  # noqa: E402
from jrmsprop._src import porting  # noqa: E402


def _bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert (a.dtype, a.shape) == (b.dtype, b.shape), (what, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), what


def _same_state(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        _bits(x, y, jax.tree_util.keystr(path))


def test_compat_exports_the_saved_state_loaders():
    """compat.state_from_* are the fixed loaders (compat.py must import them from saved_state)."""
    assert compat.state_from_torch is porting.state_from_torch
    assert compat.state_from_keras2 is saved_state.state_from_keras2


def _torch_sd(int_keys=True):
    rng = np.random.default_rng(3)
    state = {
        i: {
            "step": np.float32(7),
            "square_avg": rng.random(n).astype(np.float32),
            "momentum_buffer": rng.standard_normal(n).astype(np.float32),
        }
        for i, n in ((0, 3), (1, 2))
    }
    groups = [{"params": [0, 1], "lr": 0.01, "momentum": 0.9, "centered": False}]
    return {
        "state": state if int_keys else {str(k): v for k, v in state.items()},
        "param_groups": groups,
    }


def test_state_from_torch_accepts_decimal_string_keys_and_never_drops_state():
    params = [jnp.ones(3), jnp.full(2, 0.5)]
    want = porting.state_from_torch(_torch_sd(), params)
    got = porting.state_from_torch(_torch_sd(int_keys=False), params)  # as after JSON
    assert int(got.count) == 7
    _same_state(want, got)
    tx = compat.torch(lr=0.01, momentum=0.9)
    grads = [jnp.full(3, 0.25), jnp.full(2, -1.0)]
    _same_state(tx.update(grads, want, params), tx.update(grads, got, params))
    sd = _torch_sd()
    sd["state"] = {5: sd["state"][0], 6: sd["state"][1]}  # none matches a listed parameter
    with pytest.raises(ValueError, match=r"entries for parameters \[5, 6\].*would be lost"):
        porting.state_from_torch(sd, params)
    sd = _torch_sd()
    sd["state"][2] = sd["state"][1]
    with pytest.raises(ValueError, match=r"entries for parameters \[2\]"):
        porting.state_from_torch(sd, params)
    sd = _torch_sd()
    sd["state"]["1"] = sd["state"][1]
    with pytest.raises(ValueError, match="two entries for parameter 1"):
        porting.state_from_torch(sd, params)
    sd = _torch_sd()
    sd["state"]["first"] = sd["state"].pop(0)
    with pytest.raises(ValueError, match=r"key 'first'.* must be a parameter index"):
        porting.state_from_torch(sd, params)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.complex64])
def test_loaded_states_have_init_structure_and_dtypes(dtype):
    params = [jnp.ones(3, dtype), jnp.ones((2, 2), dtype)]
    rng = np.random.default_rng(4)
    saved = [rng.random(np.shape(p)).astype(np.float32) for p in params]
    # keras2 / keras3 / rmsprop: real rms (also for complex parameters), momentum and mg complex
    keras_rms = [s.astype(np.complex64) if dtype == jnp.complex64 else s for s in saved]
    weights = [np.int64(3)] + keras_rms + saved + [0.5 * s for s in saved]
    state = saved_state.state_from_keras2(weights, params, momentum=True, centered=True)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    init = tx.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(init)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(init), strict=True):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
    # the values are the saved ones, converted exactly, and the next step is init's step
    for got, s in zip(state.rms, saved, strict=True):
        _bits(got, np.asarray(jnp.asarray(s, init.rms[0].dtype)), "rms")
    same = init._replace(
        count=jnp.int32(3),
        rms=[jnp.asarray(s, r.dtype) for s, r in zip(saved, init.rms, strict=True)],
        momentum=[jnp.asarray(s, m.dtype) for s, m in zip(saved, init.momentum, strict=True)],
        mg=[jnp.asarray(0.5 * s, m.dtype) for s, m in zip(saved, init.mg, strict=True)],
    )
    grads = [jnp.full(np.shape(p), 0.5, dtype) for p in params]
    _same_state(tx.update(grads, state, params), tx.update(grads, same, params))
    # torch: every slot in the dtype compat.torch's init gives
    sd = {
        "state": {
            i: {"step": np.float32(3), "square_avg": s, "momentum_buffer": s, "grad_avg": s}
            for i, s in enumerate(saved)
        },
        "param_groups": [{"params": [0, 1], "momentum": 0.9, "centered": True}],
    }
    state = porting.state_from_torch(sd, params)
    init = compat.torch(lr=0.01, momentum=0.9, centered=True).init(params)
    assert jax.tree.structure(state) == jax.tree.structure(init)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(init), strict=True):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)


def test_complex_rms_with_an_imaginary_part_is_refused():
    params = [jnp.ones(2, jnp.complex64)]
    rms = np.array([1 + 0j, 2 + 1e-3j], np.complex64)
    with pytest.raises(ValueError, match=r"rms\[0\]: complex values with a non-zero imaginary"):
        saved_state.state_from_keras2([1, rms], params, momentum=False, centered=False)


def _sd(step=1, momentum=0, params=(0,), centered=False):
    return {
        "state": {0: {"step": step, "square_avg": np.ones(2, np.float32)}},
        "param_groups": [{"params": list(params), "momentum": momentum, "centered": centered}],
    }


@pytest.mark.parametrize(
    "call, error, words",
    [
        (
            lambda p: saved_state.state_from_keras2(
                [np.nan, np.ones(2)], p, momentum=False, centered=False
            ),
            ValueError,
            r"`weights\[0\]` \(iterations\) must be a non-negative integer, got nan",
        ),
        (
            lambda p: saved_state.state_from_keras2(
                [np.inf, np.ones(2)], p, momentum=False, centered=False
            ),
            ValueError,
            r"`weights\[0\]` \(iterations\) must be a non-negative integer, got inf",
        ),
        (
            lambda p: saved_state.state_from_keras2(
                [np.ones(3), np.ones(2)], p, momentum=False, centered=False
            ),
            ValueError,
            r"`weights\[0\]` \(iterations\) must be a number",
        ),
        (
            lambda p: saved_state.state_from_keras2(
                [1, np.ones(2)], p, momentum="yes", centered=False
            ),
            TypeError,
            "`momentum` must be True or False, got 'yes'",
        ),
        (
            lambda p: saved_state.state_from_keras2(
                [1, np.ones(2)], p, momentum=False, centered=None
            ),
            TypeError,
            "`centered` must be True or False, got None",
        ),
        (
            lambda p: porting.state_from_torch(_sd(momentum=None), p),
            ValueError,
            r"`state_dict\['param_groups'\]\[0\]\['momentum'\]` must be a non-negative",
        ),
        (
            lambda p: porting.state_from_torch(_sd(centered="no"), p),
            ValueError,
            r"\['centered'\]` must be True or False",
        ),
        (
            lambda p: porting.state_from_torch(_sd(step=np.nan), p),
            ValueError,
            r"`state_dict\['state'\]\[0\]\['step'\]` must be a non-negative integer",
        ),
        (
            lambda p: porting.state_from_torch(_sd(step=np.inf), p),
            ValueError,
            r"\['step'\]` must be a non-negative integer, got inf",
        ),
        (
            lambda p: porting.state_from_torch(_sd(params=(0, 0)), p + p),
            ValueError,
            r"indices \[0\] appear more than once",
        ),
        (
            lambda p: porting.state_from_torch(_sd(), [jnp.ones(2, jnp.int32)]),
            TypeError,
            r"parameter at \[0\] has dtype int32; RMSprop needs floating-point",
        ),
        (
            lambda p: saved_state.state_from_keras2(
                [1, np.ones(2)], [jnp.ones(2, jnp.int32)], momentum=False, centered=False
            ),
            TypeError,
            r"parameter at \[0\] has dtype int32",
        ),
    ],
)
def test_loaders_refuse_bad_values_naming_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call([jnp.ones(2)])


# ---- framework errors and configs taken as they are -------------------------------------------

# compat.torch: (arguments, torch.optim.RMSprop's own message). Verified against torch 2.13 in
# test_live_frameworks.py; jrmsprop's rule follows in parentheses.
TORCH_ERRORS = [
    (dict(lr=-1), "Invalid learning rate: -1"),
    (dict(lr=float("nan")), "Invalid learning rate: nan"),
    (dict(lr=jnp.asarray(-0.5)), "Invalid learning rate: -0.5"),
    (dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (dict(momentum=-1.0), "Invalid momentum value: -1.0"),
    (dict(weight_decay=-2), "Invalid weight_decay value: -2"),
    (dict(alpha=-0.5), "Invalid alpha value: -0.5"),
]


@pytest.mark.parametrize("kwargs, message", TORCH_ERRORS, ids=lambda x: str(x)[:30])
def test_torch_raises_torchs_message(kwargs, message):
    (arg,) = kwargs
    with pytest.raises(ValueError) as info:
        compat.torch(**kwargs)
    assert str(info.value).startswith(f"{message} (`{arg}` must be")


# Values torch accepts but jrmsprop refuses: jrmsprop's own message, naming torch's argument.
TORCH_STRICTER = [
    (dict(alpha=1.5), "`alpha` must be in [0, 1], got 1.5"),
    (dict(momentum=2.5), "`momentum` must be in [0, 1], got 2.5"),
    (dict(lr=float("inf")), "`lr` must be finite and >= 0, got inf"),
    (dict(eps=1e39), "`eps` must be at most"),
]


@pytest.mark.parametrize("kwargs, message", TORCH_STRICTER, ids=lambda x: str(x)[:30])
def test_torch_stricter_checks_keep_jrmsprops_message(kwargs, message):
    with pytest.raises(ValueError) as info:
        compat.torch(**kwargs)
    assert str(info.value).startswith(message)


# torch 2.13's optimizer.state_dict()["param_groups"][0] of RMSprop([p], lr=0.1, momentum=0.5,
# maximize=True)
TORCH_GROUP = {
    "lr": 0.1,
    "momentum": 0.5,
    "alpha": 0.99,
    "eps": 1e-08,
    "centered": False,
    "weight_decay": 0,
    "capturable": False,
    "foreach": None,
    "maximize": True,
    "differentiable": False,
    "params": [0],
}


def test_torch_takes_a_param_group_as_it_is():
    p = jnp.array([1.0, -2.0])
    grads = [jnp.array([0.5, 0.25])] * 3
    want, _ = _steps(compat.torch(lr=0.1, momentum=0.5, maximize=True), p, grads)
    for flags in ({}, dict(capturable=True, foreach=True, differentiable=True)):
        got, _ = _steps(compat.torch(**{**TORCH_GROUP, **flags}), p, grads)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "flag, value", [("capturable", "yes"), ("foreach", 1), ("differentiable", None)]
)
def test_torch_execution_flags_must_be_booleans(flag, value):
    with pytest.raises(TypeError, match=f"`{flag}` must be True or False"):
        compat.torch(**{flag: value})


# Keras 3.15's keras.optimizers.RMSprop(0.01, momentum=0.9, weight_decay=0.004).get_config(),
# and tf_keras 2.21's tf_keras.optimizers.RMSprop(0.01).get_config() (TF >= 2.11's RMSprop).
KERAS3_CONFIG = {
    "name": "rm_sprop",
    "learning_rate": 0.009999999776482582,
    "weight_decay": 0.004,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
    "rho": 0.9,
    "momentum": 0.9,
    "epsilon": 1e-07,
    "centered": False,
}
TF_KERAS_2_11_CONFIG = {
    "name": "RMSprop",
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": 100,
    "jit_compile": False,
    "is_legacy_optimizer": False,
    "learning_rate": np.float32(0.01),
    "rho": 0.9,
    "momentum": 0.0,
    "epsilon": 1e-07,
    "centered": False,
}


@pytest.mark.parametrize("config", [KERAS3_CONFIG, TF_KERAS_2_11_CONFIG], ids=["keras3", "tf"])
def test_keras3_takes_a_saved_config_as_it_is(config):
    p = jnp.array([1.0, -2.0])
    grads = [jnp.array([0.5, 0.25])] * 3
    got, _ = _steps(compat.keras3(**config), p, grads)
    numbers = ("learning_rate", "rho", "momentum", "epsilon", "centered", "weight_decay")
    want, _ = _steps(compat.keras3(**{k: config[k] for k in numbers}), p, grads)
    np.testing.assert_array_equal(got, want)


# Options that change the numbers: refused by name unless off (None / False).
KERAS3_REFUSED = [
    ("clipnorm", 1.0, "clip the gradients before"),
    ("clipvalue", 0.5, r"optax\.clip\(clipvalue\)"),
    ("global_clipnorm", 0.0, "clip the gradients before"),
    ("use_ema", True, "leave it out"),
    ("loss_scale_factor", 128.0, "leave it out"),
    ("gradient_accumulation_steps", 2, r"optax\.MultiSteps"),
    ("is_legacy_optimizer", True, r"jrmsprop\.rmsprop"),
]


@pytest.mark.parametrize("key, value, instead", KERAS3_REFUSED)
def test_keras3_refuses_options_it_does_not_reproduce(key, value, instead):
    with pytest.raises(ValueError, match=rf"compat\.keras3: `{key}`={value!r} is not reproduced"):
        compat.keras3(**{**KERAS3_CONFIG, key: value})
    with pytest.raises(ValueError, match=instead):
        compat.keras3(**{key: value})


@pytest.mark.parametrize("name", ["lr", "decay", "foo"])
def test_keras3_refuses_unknown_arguments_naming_them(name):
    """Keras 3 has no ``lr`` nor ``decay``. Explicit keywords, no ``**kwargs``: optax's
    ``inject_hyperparams`` would pass an empty ``kwargs={}`` to a factory that had them."""
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'"):
        compat.keras3(**{name: 0.1})
