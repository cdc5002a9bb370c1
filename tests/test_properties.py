"""Property tests: jrmsprop against the NumPy reference over random configurations.

Slow (up to a minute each on two shared cores), hence ``slow``.

Hypothesis draws the hyperparameters (learning rate, ρ, momentum zero or not, ε from 1e-10 to 1,
centered, Keras's ``decay``), the parameter tree (scalars, vectors, matrices, several leaves),
the dtypes and a few steps of random gradients; every run is compared with
``tests/numpy_reference.py`` (which reproduces the real frameworks' golden files, see
``test_golden.py``). Derandomized, so CI sees the same examples on every run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy_reference import Reference

import jrmsprop
from jrmsprop import compat

pytestmark = pytest.mark.slow

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True)

SHAPES = st.sampled_from([(), (1,), (3,), (2, 4), (3, 1, 2)])


@st.composite
def configs(draw, *, decay: bool = True) -> dict:
    """Keras 2 hyperparameters (the core's names)."""
    momentum = draw(st.sampled_from([0.0, None]))
    if momentum is None:
        momentum = draw(st.floats(0.05, 0.99))
    return dict(
        learning_rate=draw(st.floats(1e-4, 1.0)),
        rho=draw(st.floats(0.0, 0.999)),
        momentum=momentum,
        epsilon=10.0 ** draw(st.floats(-10.0, 0.0)),
        centered=draw(st.booleans()),
        decay=draw(st.sampled_from([0.0, 0.01, 0.2])) if decay else 0.0,
    )


@st.composite
def problems(draw, max_leaves: int = 3, max_steps: int = 4) -> tuple[list, list]:
    """Initial parameters (one leaf per shape) and ``steps`` lists of float64 gradients."""
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=max_leaves))
    steps = draw(st.integers(1, max_steps))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scales = [10.0 ** rng.uniform(-3, 1) for _ in shapes]
    params = [np.asarray(rng.standard_normal(s)) for s in shapes]
    grads = [
        [
            np.asarray(scale * rng.standard_normal(s))
            for s, scale in zip(shapes, scales, strict=True)
        ]
        for _ in range(steps)
    ]
    for gs in grads:  # exact zeros happen (ReLU, embeddings)
        for g in gs:
            g[rng.random(np.shape(g)) < 0.1] = 0.0
    return params, grads


def _cast(tree, dtype):
    return jax.tree.map(lambda x: np.asarray(x).astype(dtype), tree)


def _run(tx, params, grads, *, jit: bool, apply=optax.apply_updates):
    """Every step's parameters (NumPy) and the final state."""

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return apply(p, u), s

    step = jax.jit(step) if jit else step
    params = [jnp.asarray(p) for p in params]
    state = tx.init(params)
    trajectory = []
    for g in grads:
        params, state = step(params, state, [jnp.asarray(x) for x in g])
        trajectory.append([np.asarray(p) for p in params])
    return trajectory, state


def _reference(ref: Reference, params, grads):
    trajectory = []
    with np.errstate(all="ignore"):  # a centered variance may round below 0: NaN, as in TF
        for g in grads:
            params = ref.apply(g, params)
            trajectory.append(params)
    return trajectory


def _assert_same(got, expected, *, exact: bool = True, rtol=0.0, atol=0.0):
    __tracebackhide__ = True
    for t, (step_got, step_ref) in enumerate(zip(got, expected, strict=True)):
        for i, (a, b) in enumerate(zip(step_got, step_ref, strict=True)):
            assert a.dtype == b.dtype, (t, i, a.dtype, b.dtype)
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if exact:
                np.testing.assert_array_equal(a64, b64, err_msg=f"step {t}, leaf {i}")
            else:
                np.testing.assert_allclose(a64, b64, rtol=rtol, atol=atol, err_msg=f"{t}, {i}")


def _assert_slots(state, ref: Reference, n: int, *, exact: bool = True, rtol=0.0):
    __tracebackhide__ = True
    for name in ("rms", "momentum", "mg"):
        tree = getattr(state, name)
        if tree is None:
            assert (name, 0) not in ref.slots or (ref.rule == "tf1" and name == "momentum")
            continue
        for i, ours in enumerate(jax.tree.leaves(tree)[:n]):
            theirs = ref.slots[(name, i)]
            if exact:
                np.testing.assert_array_equal(np.asarray(ours, np.float64), theirs.astype(float))
            else:
                np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-30)


# --------------------------------------------------------------------------- Keras 2 (the core)


@settings(max_examples=10, **SETTINGS)
@given(config=configs(), problem=problems())
def test_core_float32_is_bit_exact_eager_and_jitted(config, problem):
    """``jrmsprop.rmsprop`` (eager and under ``jit``) equals the Keras 2 reference bit for bit."""
    params, grads = _cast(problem, np.float32)
    tx = jrmsprop.rmsprop(**config)
    expected = _reference(Reference(rule="keras2", **config), params, grads)
    for jit in (False, True):
        got, state = _run(tx, params, grads, jit=jit)
        _assert_same(got, expected)
        assert int(state.count) == len(grads)
    ref = Reference(rule="keras2", **config)
    _reference(ref, params, grads)
    _assert_slots(state, ref, len(params))
    assert (state.momentum is not None) == (config["momentum"] > 0)
    assert (state.mg is not None) == config["centered"]


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture], **SETTINGS)
@given(config=configs(), problem=problems())
def test_core_float64_is_bit_exact(x64, config, problem):
    """With 64-bit floats enabled, float64 parameters are computed in float64, bit for bit."""
    params, grads = _cast(problem, np.float64)
    expected = _reference(Reference(rule="keras2", dtype=np.float64, **config), params, grads)
    got, state = _run(jrmsprop.rmsprop(**config), params, grads, jit=True)
    _assert_same(got, expected)
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(state.rms))


@settings(max_examples=5, **SETTINGS)
@given(
    config=configs(),
    problem=problems(),
    dtype=st.sampled_from([jnp.bfloat16, jnp.float16]),
)
def test_core_low_precision_params_compute_in_float32(config, problem, dtype):
    """bfloat16/float16 parameters: float32 arithmetic, slots and parameters rounded back."""
    storage = np.dtype(ml_dtypes.bfloat16) if dtype == jnp.bfloat16 else np.dtype(np.float16)
    params, grads = _cast(problem, storage)
    # float16 slots would under/overflow (g² of 1e-4 or 300): jrmsprop keeps them in float32
    slot_storage = np.float32 if dtype == jnp.float16 else storage
    ref = Reference(
        rule="keras2", dtype=np.float32, storage=storage, slot_storage=slot_storage, **config
    )
    expected = _reference(ref, params, grads)
    got, state = _run(jrmsprop.rmsprop(**config), params, grads, jit=True)
    _assert_same(got, expected)
    slots = jax.tree.leaves((state.rms, state.momentum, state.mg))
    assert all(x.dtype == np.dtype(slot_storage) for x in slots)
    assert state.count.dtype == jnp.int32


# --------------------------------------------------------------------------- presets


@settings(max_examples=6, **SETTINGS)
@given(config=configs(decay=False), problem=problems(max_leaves=2, max_steps=3))
def test_keras3_and_tf1_presets_are_bit_exact(config, problem):
    """``compat.keras3`` and ``compat.tf1`` (rms from 1) against their reference rules."""
    params, grads = _cast(problem, np.float32)
    config = dict(config)
    del config["decay"]
    keras3 = compat.keras3(**config)
    got, _ = _run(keras3, params, grads, jit=True)
    _assert_same(got, _reference(Reference(rule="keras3", **config), params, grads))
    tf1_kwargs = dict(config, decay=config["rho"])
    del tf1_kwargs["rho"]
    got, state = _run(compat.tf1(**tf1_kwargs), params, grads, jit=True)
    ref = Reference.from_kwargs("tf1", tf1_kwargs)
    _assert_same(got, _reference(ref, params, grads))
    _assert_slots(state, ref, len(params))


@settings(max_examples=6, **SETTINGS)
@given(
    config=configs(decay=False),
    problem=problems(max_leaves=2, max_steps=3),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    maximize=st.booleans(),
)
def test_torch_and_keras3_weight_decay_to_float32_rounding(config, problem, weight_decay, maximize):
    """``compat.torch`` and Keras 3's weight decay: float32 rounding of the reference rules.

    Not bit for bit: PyTorch rounds ``(1−α)·g·g`` and ``lerp`` in its own order, and Keras 3's
    decoupled decay is its own rounded assignment (``test_golden.py`` measures both on the real
    frameworks).
    """
    params, grads = _cast(problem, np.float32)
    # Two float orders agree to rounding only where the problem is well conditioned: with ρ near
    # 0, centered rms − mg² is pure cancellation (both ≈ g²) and ε ≈ 0 divides by that noise.
    config = dict(config, rho=0.5 + config["rho"] / 2)
    if config["centered"]:
        config["epsilon"] = max(config["epsilon"], 1e-4)
    torch_kwargs = dict(
        lr=config["learning_rate"],
        alpha=config["rho"],
        eps=config["epsilon"],
        weight_decay=weight_decay,
        momentum=config["momentum"],
        centered=config["centered"],
        maximize=maximize,
    )
    got, _ = _run(compat.torch(**torch_kwargs), params, grads, jit=True)
    expected = _reference(Reference.from_kwargs("torch", torch_kwargs), params, grads)
    scale = max(float(np.max(np.abs(np.concatenate([p.ravel() for p in params])))), 1.0)
    _assert_same(got, expected, exact=False, rtol=1e-5, atol=1e-6 * scale)
    keras3_kwargs = {k: v for k, v in config.items() if k != "decay"}
    got, _ = _run(
        compat.keras3(**keras3_kwargs, weight_decay=weight_decay), params, grads, jit=True
    )
    ref = Reference(rule="keras3", weight_decay=weight_decay, **keras3_kwargs)
    _assert_same(got, _reference(ref, params, grads), exact=False, rtol=1e-6, atol=1e-7 * scale)


# --------------------------------------------------------------------------- sparse rows


@st.composite
def sparse_problems(draw) -> tuple[np.ndarray, list]:
    """A table and a few steps of (values, indices) with repeated rows."""
    rows = draw(st.integers(1, 8))
    row_shape = draw(st.sampled_from([(), (2,), (2, 3)]))
    steps = draw(st.integers(1, 4))
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, *row_shape)).astype(np.float32)
    batches = [
        (
            rng.standard_normal((n, *row_shape)).astype(np.float32),
            rng.integers(0, rows, size=n).astype(np.int32),
        )
        for _ in range(steps)
    ]
    return table, batches


@settings(max_examples=10, **SETTINGS)
@given(
    config=configs(),
    problem=sparse_problems(),
    preset=st.sampled_from(["keras2", "tf1"]),
    jit=st.booleans(),
)
def test_indexed_slices_match_the_reference(config, problem, preset, jit):
    """``IndexedSlices`` leaves (with a dense leaf beside them) against TF's row rules.

    Keras 2: lazy rows with a momentum slot, decay of every row without; TF1: always lazy.
    """
    table, batches = problem
    if preset == "tf1":
        kwargs = dict(config, decay=config["rho"])
        del kwargs["rho"]
        tx = compat.tf1(**kwargs)
    else:
        kwargs = config
        tx = jrmsprop.rmsprop(**config)
    ref = Reference.from_kwargs(preset, kwargs)
    dense = np.linspace(-1.0, 1.0, 3, dtype=np.float32)
    params = [table, dense]
    grads = [
        [jrmsprop.IndexedSlices(jnp.asarray(v), jnp.asarray(i), table.shape), np.cos(dense * t)]
        for t, (v, i) in enumerate(batches)
    ]
    ref_grads = [[(v, i), np.cos(dense * t)] for t, (v, i) in enumerate(batches)]
    expected = _reference(ref, params, ref_grads)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step) if jit else step
    p, s = [jnp.asarray(x) for x in params], tx.init(params)
    got = []
    for g in grads:
        p, s = step(p, s, g)
        got.append([np.asarray(x) for x in p])
    _assert_same(got, expected)
    _assert_slots(s, ref, 2)


@settings(max_examples=5, **SETTINGS)
@given(config=configs(), problem=sparse_problems())
def test_indexed_slices_equal_their_dense_gradient_without_momentum(config, problem):
    """Without a momentum slot the sparse rows give exactly the dense gradient's result."""
    config = dict(config, momentum=0.0)
    table, batches = problem
    tx = jrmsprop.rmsprop(**config)
    p_sparse = p_dense = jnp.asarray(table)
    s_sparse = s_dense = tx.init(p_sparse)
    for values, indices in batches:
        g = jrmsprop.IndexedSlices(jnp.asarray(values), jnp.asarray(indices), table.shape)
        u, s_sparse = tx.update(g, s_sparse)
        p_sparse = optax.apply_updates(p_sparse, u)
        u, s_dense = tx.update(g.to_dense(), s_dense)
        p_dense = optax.apply_updates(p_dense, u)
        touched = np.zeros(table.shape[0], bool)
        touched[indices] = True
        # untouched rows of the table do not move; touched rows move as the dense step moves
        np.testing.assert_array_equal(np.asarray(p_sparse)[~touched], table[~touched])
        np.testing.assert_array_equal(np.asarray(p_sparse)[touched], np.asarray(p_dense)[touched])
        np.testing.assert_array_equal(s_sparse.rms, s_dense.rms)
        table = np.asarray(p_sparse)
        p_dense = p_sparse


# --------------------------------------------------------------------------- the wrapper


@settings(max_examples=6, **SETTINGS)
@given(config=configs(), problem=problems(max_leaves=3, max_steps=3))
def test_stateful_wrapper_equals_the_core(config, problem):
    """``RMSprop(...).apply_gradients([(g, v), ...])`` moves Variables exactly as the core does."""
    params, grads = _cast(problem, np.float32)
    expected, state = _run(jrmsprop.rmsprop(**config), params, grads, jit=True)
    variables = [jrmsprop.Variable(jnp.asarray(p)) for p in params]
    opt = jrmsprop.RMSprop(**config)
    for t, g in enumerate(grads):
        opt.apply_gradients([(jnp.asarray(x), v) for x, v in zip(g, variables, strict=True)])
        for i, v in enumerate(variables):
            np.testing.assert_array_equal(np.asarray(v), expected[t][i], err_msg=f"{t}, {i}")
    assert int(np.asarray(opt.iterations)) == len(grads)
    for i, v in enumerate(variables):
        np.testing.assert_array_equal(np.asarray(opt.get_slot(v, "rms")), state.rms[i])
