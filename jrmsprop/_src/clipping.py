"""Keras 2 gradient clipping (``clipvalue``, ``clipnorm``, ``global_clipnorm``) as optax transforms.

Each transform reproduces the arithmetic of the TensorFlow function Keras 2 calls, in the same
order of operations (``tf.clip_by_value``, ``tf.clip_by_norm``, ``tf.clip_by_global_norm``), and
accepts :class:`jrmsprop.IndexedSlices` leaves the way TF treats ``tf.IndexedSlices``: the
operation acts on the ``values`` as given (duplicate indices are *not* summed first; the norm is
the norm of the values), and the indices pass through. ``None`` leaves pass through.

Thresholds may be numbers or (traced) scalar arrays, so a compiled step can take them as inputs.
Every product and quotient is rounded as TF's separate kernels round it, in every calling style
(eager, jitted, with constant thresholds inside a caller's ``jit``): squares are not contracted
into fused multiply-adds with the sum, and ``(g·c) / max(n, c)`` stays a division (see
:func:`clip_by_norm`). What remains is the order of the sums: XLA:CPU adds the elements of a
(float32) reduction one after the other, TF's Eigen kernels do so only below one SIMD packet
(x86 AVX builds: 8 elements) and then reduce packet-wise. So float32 results are bit-identical
to TF for gradients of at most 7 elements and, for ``global_clipnorm``, at most 7 gradients;
above that, norms agree to a few ulps, not always bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jrmsprop._src import arithmetic
from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.validation import KERAS2_MESSAGES, check_hyperparameter, is_schedule, jit_value

__all__ = [
    "check_clip_arguments",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "keras_clipping",
]


def _is_leaf(x: Any) -> bool:
    return isinstance(x, IndexedSlices)


def _values(leaf: Any) -> jax.Array:
    return leaf.values if isinstance(leaf, IndexedSlices) else jnp.asarray(leaf)


def _checked_values(who: str, path: Any, leaf: Any, complex_ok: bool = True) -> jax.Array:
    """``_values(leaf)`` after checking (from its dtype, while tracing) that the gradient is
    floating point (or complex, where ``complex_ok``); a TypeError names ``who`` and the leaf.

    An integer gradient would be clipped with a threshold truncated to an integer (or fail
    inside NumPy / JAX with a message that names neither)."""
    where = jax.tree_util.keystr(tuple(path)) or "<root>"
    try:
        g = _values(leaf)
    except TypeError as e:
        raise TypeError(
            f"{who}: the gradient at {where} must be an array of floating-point numbers, got "
            f"{type(leaf).__name__}"
        ) from e
    wanted = jnp.inexact if complex_ok else jnp.floating
    if not jnp.issubdtype(g.dtype, wanted):
        if jnp.issubdtype(g.dtype, jnp.complexfloating):
            raise TypeError(
                f"{who}: complex gradients cannot be clipped by value (the gradient at {where} "
                f"has dtype {jnp.dtype(g.dtype).name})"
            )
        raise TypeError(
            f"{who}: the gradient at {where} has dtype {jnp.dtype(g.dtype).name}; gradients must "
            "be floating point" + (" (or complex)" if complex_ok else "")
        )
    return g


def _rebuild(leaf: Any, values: jax.Array) -> Any:
    if isinstance(leaf, IndexedSlices):
        return IndexedSlices(values, leaf.indices, leaf.dense_shape)
    return values


def _check_threshold(name: str, value: Any) -> Any:
    """A concrete threshold must be a finite real number >= 0 (a traced one is not checked).

    Returns the threshold to use: a NumPy or Python integer as a Python float (see
    :func:`jrmsprop._src.validation.jit_value`: ``jnp.asarray(np.int64(2**32))`` would be 0 with
    x64 off), anything else as given. Finite means finite in float32 unless JAX's x64 mode is
    on (see :func:`jrmsprop._src.validation.check_range`): ``1e39`` would be an inf threshold
    for float32 gradients, and ``g·inf / inf`` is NaN.
    """
    if is_schedule(value):
        raise TypeError(f"`{name}` must be a number or a scalar array, got {value!r}")
    # Keras's own message for its argument names (``clipnorm``; not ``clip_norm``)
    scalar = check_hyperparameter(name, value, kind="clip", messages=KERAS2_MESSAGES)
    return jit_value(value, scalar)


def check_clip_arguments(
    clipvalue: Any = None, clipnorm: Any = None, global_clipnorm: Any = None
) -> None:
    """Checks Keras's clipping arguments: each None or a finite number >= 0, and ``clipnorm``
    and ``global_clipnorm`` not both set (the one place this rule is written).

    Raises:
      TypeError / ValueError naming the argument.
    """
    for name, value in (
        ("clipvalue", clipvalue),
        ("clipnorm", clipnorm),
        ("global_clipnorm", global_clipnorm),
    ):
        if value is not None:
            _check_threshold(name, value)
    if clipnorm is not None and global_clipnorm is not None:
        raise ValueError(
            "Cannot accept both `clipnorm` and `global_clipnorm`. Received: "
            f"`clipnorm`={clipnorm}, `global_clipnorm`={global_clipnorm}."
        )


def _threshold(value: Any, dtype: Any) -> jax.Array:
    return jnp.asarray(value).astype(dtype)


_TF_PACKET = 8  # float32 elements per SIMD packet of TF's x86 (AVX) reductions


def _sum_in_tf_order(x: jax.Array) -> jax.Array:
    """``Σ x`` over a vector, in index order where TF's kernels add in index order: below one
    SIMD packet (8 floats), spelled out as adds, since the order of XLA's own reduction is not
    fixed (jaxlib 0.5 rounds some 5-element sums differently from index order). Longer vectors
    take ``jnp.sum``: TF sums them packet by packet, an order not reproduced here.
    """
    if x.shape[0] >= _TF_PACKET:
        return jnp.sum(x)
    if x.shape[0] == 0:
        return jnp.zeros((), x.dtype)
    total = x[0]
    for i in range(1, x.shape[0]):
        total = total + x[i]
    return total


def _flat(x: jax.Array) -> jax.Array:
    """``x`` as a vector, reshaped *before* the elementwise operations that feed a sum.

    TF reduces over all dimensions as over one contiguous vector (its Eigen kernels add the
    first elements one after the other). XLA:CPU reduces a multi-dimensional array row by row
    for some shapes (``(2, 3)``: two row sums, then their sum), unless the operand is a vector
    already; a reshape after the elementwise operations is moved back before the reduction.
    """
    return x.reshape(-1)


def _map(fn, updates: Any) -> Any:
    """``fn(path, leaf)`` for every leaf (an IndexedSlices is one); None leaves pass through."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: None if leaf is None else fn(path, leaf), updates, is_leaf=_is_leaf
    )


def clip_by_value(clip_value: Any) -> optax.GradientTransformation:
    """Clips every gradient element to ``[-clip_value, clip_value]`` (Keras ``clipvalue``).

    ``tf.clip_by_value(g, -c, c)``: ``maximum(minimum(g, c), -c)`` (NaN propagates).

    Args:
      clip_value: the bound ``c >= 0`` (a finite number or a scalar array).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.clip_by_value(1.0)
      >>> tx.update({"w": jnp.array([-3.0, 0.5, 2.0])}, tx.init(None))[0]["w"]
      Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    clip_value = _check_threshold("clip_value", clip_value)

    def clip(path: Any, leaf: Any) -> Any:
        g = _checked_values("clip_by_value", path, leaf, complex_ok=False)
        c = _threshold(clip_value, g.dtype)
        return _rebuild(leaf, jnp.maximum(jnp.minimum(g, c), -c))

    def update_fn(updates, state, params=None):
        del params
        return _map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clip_by_norm(clip_norm: Any) -> optax.GradientTransformation:
    """Rescales each gradient whose L2 norm exceeds ``clip_norm`` (Keras ``clipnorm``).

    ``tf.clip_by_norm``, per leaf: ``s = Σ g²``; ``n = sqrt(s)`` if ``s > 0`` else ``s``;
    ``(g · c) / max(n, c)``, each product and the quotient rounded on its own, as TF's kernels
    round them. A traced negative ``c`` counts as 0.

    Args:
      clip_norm: the largest allowed norm ``c >= 0`` (a finite number or a scalar array).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.clip_by_norm(1.0)
      >>> tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(None))[0]["w"]
      Array([0.6, 0.8], dtype=float32)
    """
    clip_norm = _check_threshold("clip_norm", clip_norm)

    def clip(path: Any, leaf: Any) -> Any:
        g = _checked_values("clip_by_norm", path, leaf)
        rdtype = arithmetic.real_dtype(g.dtype)
        c = jnp.maximum(jnp.asarray(clip_norm), 0).astype(rdtype)
        # One is_finite(g) for both guards (a real g; complex is not TF's case).
        finite = None if jnp.iscomplexobj(g) else lax.is_finite(g)
        # Each g·g rounded before the sum (else LLVM contracts it into a fused multiply-add).
        flat_finite = None if finite is None else _flat(finite)
        l2sum = _sum_in_tf_order(arithmetic.abs_sq(_flat(g), flat_finite))
        positive = l2sum > 0
        l2sum_safe = jnp.where(positive, l2sum, jnp.ones_like(l2sum))
        l2norm = jnp.where(positive, jnp.sqrt(l2sum_safe), l2sum)
        divisor = jnp.broadcast_to(jnp.maximum(l2norm, c).astype(g.dtype), g.shape)
        if finite is not None:
            # XLA rewrites a division by a broadcast scalar into a multiplication by its
            # reciprocal, (g·c)·(1/max(n, c)), which rounds differently from TF's division in
            # about half of float32 elements. A per-element select is no broadcast. Where g is
            # not finite the divisor is g itself: TF's result there is NaN (±inf·c or NaN over
            # a norm that is inf or NaN), and so is (g·c)/g.
            divisor = lax.select(finite, divisor, g)
        clipped = (g * c.astype(g.dtype)) / divisor
        return _rebuild(leaf, clipped)

    def update_fn(updates, state, params=None):
        del params
        return _map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def global_norm(updates: Any) -> jax.Array:
    """``tf.global_norm``: ``sqrt(2 · Σ_leaves l2_loss(leaf))`` with ``l2_loss = Σ g²/2``.

    Each leaf's half squared norm is computed in its own (real) dtype, then all are summed in the
    widest of them. ``IndexedSlices`` count their values; ``None`` leaves are skipped.
    """
    leaves = [
        _checked_values("clip_by_global_norm", path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(updates, is_leaf=_is_leaf)
        if leaf is not None
    ]
    if not leaves:
        raise ValueError("global_norm: no gradients")
    halves = [
        _sum_in_tf_order(
            arithmetic.abs_sq(_flat(g)) * jnp.asarray(0.5, arithmetic.real_dtype(g.dtype))
        )
        for g in leaves
    ]
    dtype = halves[0].dtype
    for h in halves[1:]:
        dtype = jnp.promote_types(dtype, h.dtype)
    half = _sum_in_tf_order(jnp.stack([h.astype(dtype) for h in halves]))
    return jnp.sqrt(half * jnp.asarray(2.0, dtype))


def clip_by_global_norm(clip_norm: Any) -> optax.GradientTransformation:
    """Rescales all gradients together so their global norm is at most ``clip_norm``.

    ``tf.clip_by_global_norm`` (Keras ``global_clipnorm``): with ``n`` the :func:`global_norm`,
    ``scale = c · min(1/n, 1/c) + (n − n)`` (NaN when ``n`` is not finite) and every leaf becomes
    ``g · scale``. (optax's own ``clip_by_global_norm`` computes differently.)

    Args:
      clip_norm: the largest allowed global norm ``c >= 0`` (a finite number or a scalar array).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.clip_by_global_norm(2.0)
      >>> out = tx.update([jnp.array([3.0]), jnp.array([4.0])], tx.init(None))[0]
      >>> [o.tolist() for o in out]
      [[1.2000000476837158], [1.600000023841858]]
    """
    clip_norm = _check_threshold("clip_norm", clip_norm)

    def update_fn(updates, state, params=None):
        del params
        if not any(leaf is not None for leaf in jax.tree.leaves(updates, is_leaf=_is_leaf)):
            return updates, state
        norm = global_norm(updates)
        c = _threshold(clip_norm, norm.dtype)
        one = jnp.asarray(1.0, norm.dtype)
        scale = c * jnp.minimum(one / norm, one / c) + (norm - norm)

        def clip(path: Any, leaf: Any) -> Any:
            del path  # every leaf was checked by global_norm
            g = _values(leaf)
            return _rebuild(leaf, g * scale.astype(g.dtype))

        return _map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def keras_clipping(
    clipvalue: Any = None, clipnorm: Any = None, global_clipnorm: Any = None
) -> optax.GradientTransformation:
    """The Keras 2 optimizer's gradient clipping: clipvalue, then clipnorm, then global_clipnorm.

    Args:
      clipvalue: elementwise bound, or None.
      clipnorm: per-gradient norm bound, or None.
      global_clipnorm: global norm bound, or None (not together with ``clipnorm``).

    Returns:
      ``optax.identity()`` when nothing is set, the one transform when one is set, else their
      ``optax.chain`` in Keras's order.
    """
    check_clip_arguments(clipvalue, clipnorm, global_clipnorm)
    parts = []
    if clipvalue is not None:
        parts.append(clip_by_value(clipvalue))
    if clipnorm is not None:
        parts.append(clip_by_norm(clipnorm))
    if global_clipnorm is not None:
        parts.append(clip_by_global_norm(global_clipnorm))
    if not parts:
        return optax.identity()
    return parts[0] if len(parts) == 1 else optax.chain(*parts)
