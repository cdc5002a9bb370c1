"""``jrmsprop.keras_clipping``: ``clipnorm`` / ``global_clipnorm`` bit for bit in TF's order.

``tf.clip_by_norm``: ``s = reduce_sum(g*g)``, ``n = sqrt(s)`` where ``s > 0`` else ``s``,
``(g*c) / maximum(n, c)``. ``tf.clip_by_global_norm``: ``h_i = l2_loss(g_i) = Σ (g*g)*0.5``,
``n = sqrt(Σ h_i * 2)``, ``scale = c * minimum(1/n, 1/c) + (n - n)``, ``g * scale``. Each
operation rounds to float32 on its own, and TF's Eigen kernels add fewer than one SIMD packet
(8 floats on x86 AVX builds) of elements in index order, so for gradients of at most 7 elements
(and at most 7 gradients) a NumPy float32 re-derivation gives TF's bits. jrmsprop must give them
too, eagerly, jitted with a traced threshold and jitted with a constant one (where XLA knows more
and rewrites more).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop

F32 = np.float32
SHAPES = [(1,), (2,), (3,), (5,), (7,), (2, 2), (2, 3), (3, 2), (1, 7), (7, 1), ()]


def _seq_sum(x: np.ndarray) -> np.float32:
    total = F32(0)
    for v in np.ravel(x):
        total = F32(total + v)
    return total


def _np_clip_by_norm(g: np.ndarray, c: float) -> np.ndarray:
    c = F32(max(c, 0.0))
    with np.errstate(all="ignore"):
        s = _seq_sum((g * g).astype(F32))
        n = np.sqrt(s) if s > 0 else s
        return ((g * c).astype(F32) / np.maximum(F32(n), c)).astype(F32)


def _np_clip_by_global_norm(gs: list[np.ndarray], c: float) -> list[np.ndarray]:
    c = F32(c)
    with np.errstate(all="ignore"):
        halves = np.array([_seq_sum(((g * g).astype(F32) * F32(0.5)).astype(F32)) for g in gs])
        n = np.sqrt(F32(_seq_sum(halves.astype(F32)) * F32(2)))
        scale = F32(F32(c * np.minimum(F32(1) / n, F32(1) / c)) + F32(n - n))
        return [(g * scale).astype(F32) for g in gs]


def _assert_bits(actual, expected) -> None:
    """Bit for bit, except that any NaN matches any NaN."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype == F32 and a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
    a, e = np.where(np.isnan(a), F32(0), a), np.where(np.isnan(e), F32(0), e)
    np.testing.assert_array_equal(a.view(np.uint32), e.view(np.uint32))


def _gradient(rng: np.random.Generator, shape) -> np.ndarray:
    return (rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3))).astype(F32)


def _threshold(rng: np.random.Generator, size: int) -> float:
    # About as often below the norm (clipped) as above it (unchanged).
    return float(F32(rng.uniform(0.2, 1.5) * np.sqrt(max(size, 1))))


def _norm(c, x):
    return jrmsprop.keras_clipping(clipnorm=c).update(x, None)[0]


def _global(c, x):
    return jrmsprop.keras_clipping(global_clipnorm=c).update(x, None)[0]


_norm_jit = jax.jit(lambda x, c: _norm(c, x))
_global_jit = jax.jit(lambda x, c: _global(c, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.slow
def test_clip_by_norm_bits_match_tf_order(shape):
    rng = np.random.default_rng(len(shape) * 10 + int(np.prod(shape)))
    for i in range(16):
        g = _gradient(rng, shape)
        c = _threshold(rng, g.size)
        expected = _np_clip_by_norm(g, c)
        _assert_bits(_norm(c, jnp.asarray(g)), expected)
        _assert_bits(_norm_jit(g, jnp.float32(c)), expected)
        if i < 4:  # a constant threshold inside the caller's jit (one compilation each)
            _assert_bits(jax.jit(lambda x, c=c: _norm(c, x))(g), expected)


@pytest.mark.parametrize("shapes", [[(2,)], [(3,), (2, 2)], [(7,), (1,), (2, 3)]], ids=str)
@pytest.mark.slow
def test_clip_by_global_norm_bits_match_tf_order(shapes):
    rng = np.random.default_rng(sum(int(np.prod(s)) for s in shapes))
    for i in range(16):
        gs = [_gradient(rng, s) for s in shapes]
        c = _threshold(rng, sum(g.size for g in gs))
        expected = _np_clip_by_global_norm(gs, c)
        for out in (_global(c, gs), _global_jit(gs, jnp.float32(c))) + (
            (jax.jit(lambda x, c=c: _global(c, x))(gs),) if i < 4 else ()
        ):
            for o, e in zip(out, expected, strict=True):
                _assert_bits(o, e)


@pytest.mark.parametrize(
    "g",
    [[np.inf, 1.0], [1.0, np.nan], [-np.inf, 2.0, 3.0], [0.0, 0.0], [3e38, 3e38], [1e-30, 2e-30]],
    ids=str,
)
@pytest.mark.parametrize("c", [0.0, 0.5, 1e30])
def test_clip_by_norm_special_values(g, c):
    g = np.array(g, F32)
    expected = _np_clip_by_norm(g, c)
    _assert_bits(_norm(c, jnp.asarray(g)), expected)
    _assert_bits(_norm_jit(g, jnp.float32(c)), expected)


@pytest.mark.frameworks
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_live_tf_clip_by_norm_and_global_norm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(2024)
    for i in range(120):
        shape = SHAPES[i % len(SHAPES)]
        g = _gradient(rng, shape)
        c = _threshold(rng, g.size)
        expected = tf.clip_by_norm(tf.constant(g), c).numpy()
        _assert_bits(_norm(c, jnp.asarray(g)), expected)
        _assert_bits(_norm_jit(g, jnp.float32(c)), expected)

        gs = [_gradient(rng, SHAPES[(i + k) % len(SHAPES)]) for k in range(1 + i % 3)]
        c = _threshold(rng, sum(x.size for x in gs))
        expected = [t.numpy() for t in tf.clip_by_global_norm([tf.constant(x) for x in gs], c)[0]]
        for o, e in zip(_global_jit(gs, jnp.float32(c)), expected, strict=True):
            _assert_bits(o, e)


# ---- gradients that are not floating point ------------------------------------------------------

CLIPPERS = [
    ("clipvalue", lambda: jrmsprop.keras_clipping(clipvalue=0.5)),
    ("clipnorm", lambda: jrmsprop.keras_clipping(clipnorm=0.5)),
    ("global_clipnorm", lambda: jrmsprop.keras_clipping(global_clipnorm=0.5)),
]


@pytest.mark.parametrize("who, make", CLIPPERS, ids=[c[0] for c in CLIPPERS])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "grads, where, dtype",
    [
        ({"b": jnp.ones(2), "w": jnp.array([1, 2])}, r"\['w'\]", "int32"),
        ({"w": [jnp.ones(2), jnp.array([True])]}, r"\['w'\]\[1\]", "bool"),
        (
            {"e": jrmsprop.IndexedSlices(jnp.array([[1, 2]]), jnp.array([0]), (3, 2))},
            r"\['e'\]",
            "int32",
        ),
    ],
)
def test_integer_gradients_are_refused_naming_the_leaf(who, make, jit, grads, where, dtype):
    """Named by the argument and the leaf (an integer gradient would be clipped with a
    truncated threshold, or fail inside NumPy or JAX)."""
    tx = make()
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(
        TypeError,
        match=rf"{who}: the gradient at {where} has dtype {dtype}; gradients must be "
        "floating point",
    ):
        update(grads, tx.init(None))


@pytest.mark.parametrize("who, make", CLIPPERS, ids=[c[0] for c in CLIPPERS])
def test_string_gradient_is_refused_naming_the_leaf(who, make):
    tx = make()
    with pytest.raises(TypeError, match=rf"{who}: the gradient at \['w'\] must be an array"):
        tx.update({"w": "abc"}, tx.init(None))


def test_complex_gradients_are_refused_by_clipvalue_and_clipped_by_norm():
    g = {"w": jnp.array([3.0 + 4.0j])}
    tx = jrmsprop.keras_clipping(clipvalue=1.0)
    with pytest.raises(TypeError, match=r"complex gradients cannot be clipped by value.*\['w'\]"):
        tx.update(g, tx.init(None))
    for tx in (jrmsprop.keras_clipping(clipnorm=1.0), jrmsprop.keras_clipping(global_clipnorm=1.0)):
        out = tx.update(g, tx.init(None))[0]["w"]
        np.testing.assert_allclose(np.asarray(out), [0.6 + 0.8j], rtol=1e-6)


# ---- Keras's order, IndexedSlices, None leaves, thresholds --------------------------------


def _np_clip_by_norm64(g, c):
    """A float64 reference (not TF's order of float32 operations)."""
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * c / max(norm, c)


def test_clipping_transforms_against_numpy():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4)).astype(np.float32) * 3
    b = rng.standard_normal(5).astype(np.float32)
    tree = {"a": jnp.asarray(a), "b": jnp.asarray(b), "none": None}
    out, _ = jrmsprop.keras_clipping(clipvalue=1.0).update(tree, optax.EmptyState())
    np.testing.assert_array_equal(out["a"], np.clip(a, -1, 1))
    assert out["none"] is None
    out, _ = jrmsprop.keras_clipping(clipnorm=1.5).update(tree, optax.EmptyState())
    np.testing.assert_allclose(out["a"], _np_clip_by_norm64(a, 1.5), rtol=1e-6)
    np.testing.assert_allclose(out["b"], _np_clip_by_norm64(b, 1.5), rtol=1e-6)
    small, _ = jrmsprop.keras_clipping(clipnorm=100.0).update(tree, optax.EmptyState())
    np.testing.assert_allclose(small["a"], a, rtol=1e-6)
    zero, _ = jrmsprop.keras_clipping(clipnorm=1.0).update({"z": jnp.zeros(3)}, optax.EmptyState())
    np.testing.assert_array_equal(zero["z"], 0.0)
    out, _ = jrmsprop.keras_clipping(global_clipnorm=2.0).update(tree, optax.EmptyState())
    total = np.sqrt(np.sum(a.astype(np.float64) ** 2) + np.sum(b.astype(np.float64) ** 2))
    np.testing.assert_allclose(out["a"], a * 2.0 / total, rtol=1e-6)
    np.testing.assert_allclose(out["b"], b * 2.0 / total, rtol=1e-6)
    nan, _ = jrmsprop.keras_clipping(global_clipnorm=2.0).update([jnp.array([np.inf, 1.0])], None)
    assert np.isnan(np.asarray(nan[0])).all()  # TF: a non-finite norm gives NaN


def test_clipping_indexed_slices_uses_values_as_given():
    values = np.array([[3.0, 4.0], [1.0, 1.0]], np.float32)
    g = jrmsprop.IndexedSlices(jnp.asarray(values), jnp.array([2, 2]), (3, 2))
    (out,), _ = jrmsprop.keras_clipping(clipnorm=1.0).update((g,), None)
    assert isinstance(out, jrmsprop.IndexedSlices) and out.dense_shape == (3, 2)
    np.testing.assert_allclose(out.values, values / np.sqrt(27.0), rtol=1e-6)
    np.testing.assert_array_equal(out.indices, [2, 2])
    (out,), _ = jrmsprop.keras_clipping(clipvalue=2.0).update((g,), None)
    np.testing.assert_array_equal(out.values, np.clip(values, -2, 2))
    (out, d), _ = jrmsprop.keras_clipping(global_clipnorm=1.0).update(
        (g, jnp.array([0.0, 0.0])), None
    )
    np.testing.assert_allclose(out.values, values / np.sqrt(27.0), rtol=1e-6)


def test_keras_clipping_order_and_errors():
    g = np.array([10.0, -1.0, 0.5], np.float32)
    tx = jrmsprop.keras_clipping(clipvalue=1.0, clipnorm=1.0)
    (out,), _ = tx.update((jnp.asarray(g),), tx.init(None))
    np.testing.assert_allclose(out, _np_clip_by_norm64(np.clip(g, -1, 1), 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="Cannot accept both"):
        jrmsprop.keras_clipping(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        jrmsprop.keras_clipping(clipvalue=-1.0)
