"""Numerics that users trip over: complex parameters, float64 hyperparameters, dtypes, and
jrmsprop's choice of slot dtype. Golden files from the real frameworks where one exists
(``tests/golden/numerics/generate_numerics.py``)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy_reference import Reference, assert_same_trajectory, run

import jrmsprop
from jrmsprop import compat

GOLDEN = Path(__file__).parent / "golden" / "numerics"


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("plain", dict()),
        ("momentum", dict(momentum=0.9)),
        ("centered", dict(centered=True)),
        ("centered_momentum_wd", dict(centered=True, momentum=0.5, weight_decay=0.1)),
    ],
)
def test_torch_complex_parameters_are_two_real_ones(name, kwargs):
    """compat.torch on complex64 follows torch.optim.RMSprop (view_as_real), 20 steps."""
    data = np.load(GOLDEN / "torch_complex.npz")
    tx = compat.torch(lr=0.01, **kwargs)
    p = jnp.asarray(data["p0"])
    state = tx.init(p)
    assert state.rms.dtype == jnp.complex64  # torch's square_avg layout
    step = jax.jit(tx.update)
    for t, g in enumerate(data["grads"]):
        u, state = step(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, u)
        # torch's CPU sqrt is not correctly rounded: float32 rounding, as for real parameters
        np.testing.assert_allclose(np.asarray(p), data[f"{name}/traj"][t], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(state.rms), data[f"{name}/square_avg"], rtol=2e-6, atol=1e-8
    )
    # |g|² with one real average (optax's convention) would be far off: the test can fail.
    mixed = jrmsprop.rmsprop(0.01, rho=0.99, epsilon=1e-8)
    q, s = jnp.asarray(data["p0"]), mixed.init(jnp.asarray(data["p0"]))
    for g in data["grads"]:
        u, s = mixed.update(jnp.asarray(g), s, q)
        q = q + u
    assert np.max(np.abs(np.asarray(q) - data["plain/traj"][-1])) > 1e-3


@pytest.mark.parametrize("centered", [False, True])
def test_torch_squares_the_scaled_gradient_so_huge_gradients_do_not_overflow(centered):
    """PyTorch's ``square_avg.addcmul_(g, g, value=1−α)`` forms ``((1−α)·g)·g``: a gradient of
    1e20 gives ``square_avg`` 1e38 (finite) and a step of ``lr`` (torch 2.13: p 1 → 0.9,
    square_avg 9.99999968e37), where ``(1−α)·(g·g)`` would overflow and leave p at 1."""
    tx = compat.torch(lr=0.1, alpha=0.99, centered=centered)
    p = jnp.ones(3, jnp.float32)
    g = jnp.asarray([1e20, -1e20, 1.0], jnp.float32)
    u, state = tx.update(g, tx.init(p), p)
    rms = np.float32(np.float32(0.01) * np.float32(1e20)) * np.float32(1e20)
    np.testing.assert_array_equal(state.rms[:2], [rms, rms])
    assert np.isfinite(np.asarray(optax.apply_updates(p, u))).all()
    if not centered:  # sqrt(1e38) is 1e19 exactly in float32 here: the step is lr·g/1e19
        np.testing.assert_allclose(np.asarray(optax.apply_updates(p, u))[:2], [0.0, 2.0])


def test_keras2_complex_uses_abs_squared_with_real_rms():
    """The documented Keras 2 deviation: |g|², a real rms slot (TF would square g itself)."""
    tx = jrmsprop.rmsprop(0.1)
    p = jnp.array([1 + 1j], jnp.complex64)
    g = jnp.array([3 + 4j], jnp.complex64)
    state = tx.init(p)
    u, state = tx.update(g, state, p)
    assert state.rms.dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(state.rms), [(np.float32(1) - np.float32(0.9)) * np.float32(25)]
    )
    expected = -0.1 * np.asarray(g) / (np.sqrt((np.float32(1) - np.float32(0.9)) * 25) + 1e-7)
    np.testing.assert_allclose(np.asarray(u), np.asarray(expected), rtol=1e-6)


def test_complex_gradient_for_real_parameter_raises():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    p = jnp.ones(3)
    with pytest.raises(TypeError, match=r"complex.*real"):
        tx.update(jnp.ones(3, jnp.complex64), tx.init(p), p)


@pytest.mark.parametrize("name", ["plain", "momentum_centered", "decay_eps"])
def test_keras2_float64_rounds_hyperparameters_to_float32_like_tf(x64, name):
    data = np.load(GOLDEN / "keras2_float64.npz")
    kwargs = dict(
        plain=dict(learning_rate=0.1, rho=0.9),
        momentum_centered=dict(learning_rate=0.1, rho=0.9, momentum=0.9, centered=True),
        decay_eps=dict(learning_rate=0.1, rho=0.9, momentum=0.3, decay=0.1, epsilon=0.1),
    )[name]
    for tx in (jrmsprop.rmsprop(**kwargs),):
        p = jnp.asarray(data["p0"], jnp.float64)
        state = tx.init(p)
        for t, g in enumerate(data["grads"]):
            u, state = tx.update(jnp.asarray(g), state, p)
            p = p + u
            np.testing.assert_array_equal(np.asarray(p), data[f"{name}/traj"][t])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(learning_rate=0.1), 0.6837739860773095),
        (dict(learning_rate=0.1, momentum=0.9), 0.6837739860773095),
        (dict(learning_rate=0.1, weight_decay=0.5), 0.6337739853322515),
    ],
)
def test_keras3_float64_rounds_only_the_learning_rate_to_float32(x64, kwargs, expected):
    """Keras 3 keeps ``learning_rate`` in a float32 variable, so a float64 variable sees
    ``float64(float32(0.1))``; ρ, μ, ε and weight decay are Python numbers. Expected: Keras 3.15
    (TensorFlow and JAX backends alike), one step from p = 1 with g = 0.3; the exact double lr
    gives 0.6837739907894443 and 0.6337739907894443."""
    tx = compat.keras3(**kwargs)
    p = jnp.asarray(1.0, jnp.float64)
    u, _ = tx.update(jnp.asarray(0.3, jnp.float64), tx.init(p), p)
    assert float(p + u) == expected


def test_float32_params_with_bfloat16_gradients_get_float32_updates():
    tx = jrmsprop.rmsprop(0.1)
    p = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    g16 = jnp.array([0.1, 0.2, 0.3], jnp.bfloat16)
    u, _ = tx.update(g16, tx.init(p), p)
    ref, _ = tx.update(g16.astype(jnp.float32), tx.init(p), p)
    assert u.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(u), np.asarray(ref))


def test_float64_slots_compute_float32_gradients_in_float64(x64):
    tx = jrmsprop.rmsprop(0.1, slot_dtype=jnp.float64)
    p = jnp.array([1.0, 2.0], jnp.float32)
    g = jnp.array([0.1, 0.3], jnp.float32)
    u, s = tx.update(g, tx.init(p))
    assert s.rms.dtype == jnp.float64 and u.dtype == jnp.float32  # updates: the gradient's dtype
    g64 = np.asarray(g, np.float64)
    rms = (1 - np.float64(np.float32(0.9))) * g64 * g64
    np.testing.assert_array_equal(np.asarray(s.rms), rms)


@pytest.mark.parametrize("g", [1e-4, 300.0])
def test_float16_parameters_get_float32_slots(g):
    """float16 rms would underflow (1e-4² → 0: a 2.4× step) or overflow (300² → inf: frozen)."""
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    p = jnp.ones(4, jnp.float16)
    state = tx.init(p)
    assert state.rms.dtype == jnp.float32 and state.momentum.dtype == jnp.float32
    grad = jnp.full(4, g, jnp.float16)
    u, state = tx.update(grad, state, p)
    assert u.dtype == jnp.float16
    g32 = np.float32(np.float16(g))
    expected = np.float32(0.01) * g32 / np.sqrt(np.float32(1 - np.float32(0.9)) * g32 * g32 + 1e-7)
    np.testing.assert_allclose(np.asarray(u, np.float32), -expected, rtol=1e-3)
    assert np.all(np.isfinite(np.asarray(state.rms)))
    assert jrmsprop.rmsprop(slot_dtype=jnp.float16).init(p).rms.dtype == jnp.float16


@pytest.mark.slow
def test_sparse_rows_decay_like_the_dense_step_in_bfloat16():
    """Without momentum every rms row decays; bf16 tables round once, as the dense step does."""
    tx = jrmsprop.rmsprop(0.1)
    p = jnp.linspace(-1, 1, 12, dtype=jnp.bfloat16).reshape(4, 3)
    rng = np.random.default_rng(3)
    state = tx.init(p)._replace(rms=jnp.asarray(rng.uniform(0.1, 1, (4, 3)), jnp.bfloat16))
    rows = jnp.array([1, 3])
    values = jnp.asarray(rng.normal(size=(2, 3)), jnp.bfloat16)
    sparse = jrmsprop.IndexedSlices(values, rows, (4, 3))
    dense = jnp.zeros((4, 3), jnp.bfloat16).at[rows].set(values)
    _, s_sparse = tx.update(sparse, state, p)
    _, s_dense = tx.update(dense, state, p)
    np.testing.assert_array_equal(
        np.asarray(s_sparse.rms, np.float32), np.asarray(s_dense.rms, np.float32)
    )


@pytest.mark.parametrize("jit_init", [False, True])
@pytest.mark.parametrize("jit_update", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.slow
def test_inject_hyperparams_is_exact_in_every_calling_style(jit_init, jit_update, momentum):
    """ε moves with the momentum the user wrote, not with whether init was traced."""
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    grads = [
        {"w": jnp.array([0.5, 0.1, -0.3]) * (k + 1), "b": jnp.array(0.2 - k)} for k in range(4)
    ]
    ref = jrmsprop.rmsprop(0.1, momentum=momentum, epsilon=1.0)
    tx = optax.inject_hyperparams(jrmsprop.rmsprop)(
        learning_rate=0.1, momentum=momentum, epsilon=1.0
    )
    init = jax.jit(tx.init) if jit_init else tx.init
    update = jax.jit(tx.update) if jit_update else tx.update
    s_ref, s = ref.init(params), init(params)
    for g in grads:
        u_ref, s_ref = ref.update(g, s_ref, params)
        u, s = update(g, s, params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_ref), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("jit", [False, True])
def test_injected_momentum_picks_the_formula_by_its_value_at_each_step(jit):
    """An injected momentum keeps its slot; 0 computes what no momentum does, 0.9 what 0.9 does."""
    tx = optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1, momentum=0.0)
    p, g = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.3, -0.7, 1.1])
    init, update = (jax.jit(tx.init), jax.jit(tx.update)) if jit else (tx.init, tx.update)
    state = init(p)
    u0, state = update(g, state, p)
    np.testing.assert_array_equal(
        u0, jrmsprop.rmsprop(0.1).update(g, jrmsprop.rmsprop(0.1).init(p))[0]
    )
    np.testing.assert_array_equal(state.inner_state.momentum, np.zeros(3))  # the buffer untouched
    state.hyperparams["momentum"] = jnp.asarray(0.9)
    plain = jrmsprop.rmsprop(0.1, momentum=0.9)
    ref_state = plain.init(p)._replace(rms=state.inner_state.rms, count=state.inner_state.count)
    u1, _ = update(g, state, p)
    np.testing.assert_array_equal(u1, plain.update(g, ref_state)[0])


def test_negative_count_does_not_produce_nan():
    for tx in (jrmsprop.rmsprop(0.1), jrmsprop.rmsprop(0.1, decay=0.01, momentum=0.9)):
        p = jnp.ones(3)
        state = tx.init(p)._replace(count=jnp.asarray(-4, jnp.int32))
        u, _ = tx.update(jnp.full(3, 0.5), state, p)
        ref, _ = tx.update(jnp.full(3, 0.5), tx.init(p), p)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(ref))  # t counts as 0


def test_nan_gradient_poisons_rms_and_apply_if_finite_skips_it():
    p = jnp.ones(2)
    tx = jrmsprop.rmsprop(0.1)
    _, state = tx.update(jnp.array([jnp.nan, 1.0]), tx.init(p), p)
    assert np.isnan(np.asarray(state.rms)[0])  # as in Keras: NaN for good
    safe = optax.apply_if_finite(jrmsprop.rmsprop(0.1), max_consecutive_errors=3)
    s = safe.init(p)
    u, s = safe.update(jnp.array([jnp.nan, 1.0]), s, p)
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])
    u, s = safe.update(jnp.array([1.0, 1.0]), s, p)
    assert np.all(np.isfinite(np.asarray(u))) and np.all(np.asarray(u) < 0)


def test_abstract_params_and_eval_shape():
    tx = jrmsprop.rmsprop(momentum=0.9, centered=True)
    abstract = {"w": jax.ShapeDtypeStruct((3, 2), jnp.float32)}
    state = tx.init(abstract)
    assert state.rms["w"].shape == (3, 2) and state.momentum["w"].dtype == jnp.float32
    shapes = jax.eval_shape(tx.init, abstract)
    assert shapes.mg["w"] == jax.ShapeDtypeStruct((3, 2), jnp.float32)


def test_indexed_slices_compose_with_optax_through_densify_and_jrmsprop_clipping():
    p = {"e": jnp.zeros((5, 3))}
    g = {"e": jrmsprop.IndexedSlices(jnp.ones((2, 3)), jnp.array([1, 3]), (5, 3))}
    dense = jrmsprop.densify(g)
    ms = optax.MultiSteps(jrmsprop.rmsprop(0.1), every_k_schedule=2)
    s = ms.init(p)
    with jax.numpy_dtype_promotion("standard"):  # optax's MultiSteps divides by an int count
        u1, s = ms.update(dense, s, p)
        u2, s = ms.update(dense, s, p)
    ref_tx = jrmsprop.rmsprop(0.1)
    ref, _ = ref_tx.update(dense, ref_tx.init(p), p)  # the mean of two equal gradients
    np.testing.assert_array_equal(np.asarray(u1["e"]), np.zeros((5, 3)))
    np.testing.assert_array_equal(np.asarray(u2["e"]), np.asarray(ref["e"]))
    clipped, _ = jrmsprop.keras_clipping(global_clipnorm=1.0).update(g, optax.EmptyState())
    assert isinstance(clipped["e"], jrmsprop.IndexedSlices)
    np.testing.assert_allclose(float(jnp.linalg.norm(clipped["e"].values)), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(clipped["e"].indices), [1, 3])


@pytest.mark.parametrize("jit", [False, True])
def test_injected_weight_decay_is_the_same_in_every_calling_style(jit):
    """A traced weight decay: applied when params are passed; refused when it is non-zero and
    they are not (never silently skipped); not needed when it is 0, as an eager call."""
    p = jnp.array([1.0, -2.0, 3.0])
    g = jnp.array([0.1, -0.2, 0.3])
    zero = optax.inject_hyperparams(compat.torch)(lr=0.01)
    decayed = optax.inject_hyperparams(compat.torch)(lr=0.01, weight_decay=0.1)
    update = jax.jit(decayed.update) if jit else decayed.update
    u_with, _ = update(g, decayed.init(p), p)
    u_eager, _ = decayed.update(g, decayed.init(p), p)
    np.testing.assert_array_equal(np.asarray(u_with), np.asarray(u_eager))
    u_zero, _ = (jax.jit(zero.update) if jit else zero.update)(g, zero.init(p))
    ref, _ = zero.update(g, zero.init(p), p)
    np.testing.assert_array_equal(np.asarray(u_zero), np.asarray(ref))
    assert not np.array_equal(np.asarray(u_with), np.asarray(ref))  # the decay is really there
    with pytest.raises(Exception, match="weight decay needs"):
        jax.block_until_ready(update(g, decayed.init(p)))


@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
@pytest.mark.parametrize("style", ["jit", "inject_hyperparams"])
def test_division_by_the_root_stays_a_division(style, epsilon):
    """Without momentum ε is added outside the root, ``lr·g / (sqrt(v) + ε)``. A non-zero
    constant ε keeps the divisor from being a bare square root, so the update leaves out the
    guard of :func:`exact_sqrt`; with ε = 0 XLA folds the add away and would rewrite the division
    into ``g·rsqrt(v)`` (different bits in about 40% of float32 elements) unless the guard stays.
    Bit for bit against the NumPy reference, ε concrete (``jit``) and traced. A concrete ε = 0
    means Keras's 1e-7 in ``rmsprop``, so that case runs PyTorch's rule (also ε outside the root;
    its no-momentum step is ``(lr·g)/avg``, the same division)."""
    rng = np.random.default_rng(7)
    p0 = [rng.standard_normal(4096).astype(np.float32)]
    grads = [[rng.standard_normal(4096).astype(np.float32)] for _ in range(3)]
    want = run(Reference(learning_rate=0.01, epsilon=epsilon), p0, grads)
    if style == "jit" and epsilon == 0.0:
        kwargs = dict(lr=0.01, alpha=0.9, eps=0.0)
        want = run(Reference.from_kwargs("torch", kwargs), p0, grads)
        tx = compat.torch(**kwargs)
    elif style == "jit":
        tx = jrmsprop.rmsprop(0.01, epsilon=epsilon)
    else:
        tx = optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.01, epsilon=epsilon)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    params, state, got = [jnp.asarray(p) for p in p0], tx.init([jnp.asarray(p0[0])]), []
    for g in grads:
        params, state = step(params, state, [jnp.asarray(g[0])])
        got.append(params)
    assert_same_trajectory(got, want)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("framework", ["keras2", "keras3"])
def test_non_finite_values_match_the_reference(framework, momentum, centered):
    """Overflowing, infinite and NaN gradients, and the infinite slots they leave, give the
    reference's values (NaN where it has NaN): the guards against fused multiply-adds keep
    the result for every input, not only for finite ones. Jitted, bit for bit."""
    grads = [
        np.array([1e20, -1e20, np.inf, -np.inf, np.nan, 1.0, 0.0, 3e-15], np.float32),
        np.array([0.5, -2.0, 1.0, 0.25, 1.0, -np.inf, 1e20, -0.0], np.float32),
        np.array([1.0, 1.0, -1.0, 1.0, 0.0, 1.0, -1.0, 2.0], np.float32),
    ]
    p0 = np.linspace(-1, 1, 8).astype(np.float32)
    kwargs = dict(learning_rate=0.01, rho=0.9, momentum=momentum, centered=centered)
    ref = Reference.from_kwargs(framework, kwargs)
    tx = jrmsprop.rmsprop(**kwargs) if framework == "keras2" else compat.keras3(**kwargs)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, state, want = jnp.asarray(p0), tx.init(jnp.asarray(p0)), [p0]
    for t, g in enumerate(grads):
        p, state = step(p, state, jnp.asarray(g))
        with np.errstate(all="ignore"):
            want = ref.apply([g], want)
        np.testing.assert_array_equal(np.asarray(p), want[0], err_msg=f"step {t + 1}")
        for name in ("rms", "mg", "momentum"):
            slot = getattr(state, name)
            if slot is not None:
                np.testing.assert_array_equal(
                    np.asarray(slot), ref.slots[(name, 0)], err_msg=f"{name}, step {t + 1}"
                )
        if t == 0:  # g² overflowed: the slot holds infinities, not only NaN
            assert np.isinf(np.asarray(state.rms)).any()
    assert np.isnan(np.asarray(p)).any() and np.isfinite(np.asarray(p)).any()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("epsilon", [0, 0.0, np.float32(0), None])
def test_keras2_epsilon_zero_or_none_means_keras_default(momentum, epsilon):
    """Keras 2 stores ``epsilon or backend.epsilon()``: ε = 0 or None trains with 1e-7, in
    ``rmsprop`` and the wrapper alike. tf_keras 2.21, lr 0.1, p 1, g 1e-4, one
    step: 0.68476915 without momentum, 0.9685342 with (ε = 0 itself gives 0.68377227)."""
    expected = {0.0: np.float32(0.68476915), 0.9: np.float32(0.9685342)}[momentum]
    g, p = jnp.asarray(1e-4, jnp.float32), jnp.asarray(1.0, jnp.float32)
    for tx in (jrmsprop.rmsprop(0.1, momentum=momentum, epsilon=epsilon),):
        u, _ = tx.update(g, tx.init(p), p)
        assert np.float32(p + u) == expected
    opt = jrmsprop.RMSprop(0.1, momentum=momentum, epsilon=epsilon)
    v = jrmsprop.Variable(1.0)
    opt.apply_gradients([(g, v)])
    assert np.float32(v.numpy()) == expected
