"""Keras 2's gradient clipping (``clipvalue``, ``clipnorm``, ``global_clipnorm``) for optax.

Each step follows the TensorFlow function Keras calls, operation by operation
(``tf.clip_by_value``, ``tf.clip_by_norm``, ``tf.clip_by_global_norm``), each product and
quotient rounded as TF's kernels round it. Sums below one SIMD packet (8 floats) are added in
index order, as TF's: float32 results are TF's bits for gradients of at most 7 elements (and at
most 7 gradients); longer sums agree to a few ulps. An :class:`jrmsprop.IndexedSlices` is
clipped by its ``values`` as given (duplicates not summed), as TF clips ``tf.IndexedSlices``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jrmsprop._src import arithmetic
from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.validation import KERAS2_MESSAGES, check_hyperparameter, is_schedule, jit_value

__all__ = ["check_clip_arguments", "keras_clipping"]


def check_clip_arguments(
    clipvalue: Any = None, clipnorm: Any = None, global_clipnorm: Any = None
) -> dict[str, Any]:
    """Each threshold ``None`` or a finite number ``>= 0`` (Keras's messages), not both norms.

    Returns:
      The thresholds that are set, integers as Python floats (see ``validation.jit_value``).
    """
    checked = {}
    for name, value in (
        ("clipvalue", clipvalue),
        ("clipnorm", clipnorm),
        ("global_clipnorm", global_clipnorm),
    ):
        if value is not None:
            if is_schedule(value):
                raise TypeError(f"`{name}` must be a number or a scalar array, got {value!r}")
            scalar = check_hyperparameter(name, value, kind="clip", messages=KERAS2_MESSAGES)
            checked[name] = jit_value(value, scalar)
    if clipnorm is not None and global_clipnorm is not None:
        raise ValueError(
            "Cannot accept both `clipnorm` and `global_clipnorm`. Received: "
            f"`clipnorm`={clipnorm}, `global_clipnorm`={global_clipnorm}."
        )
    return checked


def _values(who: str, path: Any, leaf: Any, complex_ok: bool = True) -> jax.Array:
    """A leaf's (or IndexedSlices') values, which must be floating point (or complex)."""
    where = jax.tree_util.keystr(tuple(path)) or "<root>"
    try:
        g = leaf.values if isinstance(leaf, IndexedSlices) else jnp.asarray(leaf)
    except TypeError as e:
        raise TypeError(
            f"{who}: the gradient at {where} must be an array of floating-point numbers, got "
            f"{type(leaf).__name__}"
        ) from e
    if not jnp.issubdtype(g.dtype, jnp.inexact if complex_ok else jnp.floating):
        dtype = jnp.dtype(g.dtype).name
        if jnp.issubdtype(g.dtype, jnp.complexfloating):
            raise TypeError(
                f"{who}: complex gradients cannot be clipped by value (the gradient at {where} "
                f"has dtype {dtype})"
            )
        raise TypeError(
            f"{who}: the gradient at {where} has dtype {dtype}; gradients must be floating "
            "point" + (" (or complex)" if complex_ok else "")
        )
    return g


def _map(fn, updates: Any) -> Any:
    """``fn(path, leaf, values)`` for every leaf (an IndexedSlices is one, rebuilt around the
    new values); None leaves pass through."""

    def apply(path: Any, leaf: Any) -> Any:
        if leaf is None:
            return None
        values = fn(path, leaf)
        if isinstance(leaf, IndexedSlices):
            return IndexedSlices(values, leaf.indices, leaf.dense_shape)
        return values

    is_leaf = lambda x: isinstance(x, IndexedSlices)  # noqa: E731
    return jax.tree_util.tree_map_with_path(apply, updates, is_leaf=is_leaf)


def _sum(x: jax.Array) -> jax.Array:
    """``Σ x`` over ``x`` flattened first (TF reduces all dimensions as one vector), in index
    order below 8 elements (XLA's own order is not fixed there); ``jnp.sum`` above."""
    x = x.reshape(-1)
    if x.shape[0] >= 8:
        return jnp.sum(x)
    total = jnp.zeros((), x.dtype) if x.shape[0] == 0 else x[0]
    for i in range(1, x.shape[0]):
        total = total + x[i]
    return total


def _by_value(c: Any):
    """``tf.clip_by_value(g, -c, c)``: ``maximum(minimum(g, c), -c)``."""

    def clip(path: Any, leaf: Any) -> jax.Array:
        g = _values("clipvalue", path, leaf, complex_ok=False)
        c_ = jnp.asarray(c).astype(g.dtype)
        return jnp.maximum(jnp.minimum(g, c_), -c_)

    return lambda updates: _map(clip, updates)


def _by_norm(c: Any):
    """``tf.clip_by_norm``: ``s = Σ|g|²``; ``n = sqrt(s)`` if ``s > 0`` else ``s``;
    ``(g·c) / max(n, c)`` (a traced negative ``c`` counts as 0)."""

    def clip(path: Any, leaf: Any) -> jax.Array:
        g = _values("clipnorm", path, leaf)
        c_ = jnp.maximum(jnp.asarray(c), 0).astype(arithmetic.real_dtype(g.dtype))
        finite = None if jnp.iscomplexobj(g) else lax.is_finite(g)
        # each g·g rounded before the sum (not contracted into a fused multiply-add)
        s = _sum(arithmetic.abs_sq(g.reshape(-1), None if finite is None else finite.reshape(-1)))
        n = jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, jnp.ones_like(s))), s)
        divisor = jnp.broadcast_to(jnp.maximum(n, c_).astype(g.dtype), g.shape)
        if finite is not None:
            # A per-element select, so that XLA keeps the division (by a broadcast scalar it
            # would multiply by the reciprocal, rounded differently); where g is not finite TF
            # gives NaN, and so does (g·c)/g.
            divisor = lax.select(finite, divisor, g)
        return (g * c_.astype(g.dtype)) / divisor

    return lambda updates: _map(clip, updates)


def _by_global_norm(c: Any):
    """``tf.clip_by_global_norm``: ``n = sqrt(2 Σ_leaves Σ|g|²·0.5)`` (each leaf's sum in its
    own dtype, then in the widest), ``g · (c · min(1/n, 1/c) + (n − n))``."""

    def clip(updates: Any) -> Any:
        is_leaf = lambda x: isinstance(x, IndexedSlices)  # noqa: E731
        leaves = [
            _values("global_clipnorm", path, leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(updates, is_leaf=is_leaf)
            if leaf is not None
        ]
        if not leaves:
            return updates
        halves = [
            _sum(
                arithmetic.abs_sq(g.reshape(-1)) * jnp.asarray(0.5, arithmetic.real_dtype(g.dtype))
            )
            for g in leaves
        ]
        dtype = functools.reduce(jnp.promote_types, [h.dtype for h in halves])
        n = jnp.sqrt(_sum(jnp.stack([h.astype(dtype) for h in halves])) * jnp.asarray(2.0, dtype))
        c_, one = jnp.asarray(c).astype(dtype), jnp.asarray(1.0, dtype)
        scale = c_ * jnp.minimum(one / n, one / c_) + (n - n)

        def rescale(path: Any, leaf: Any) -> jax.Array:
            g = _values("global_clipnorm", path, leaf)
            return g * scale.astype(g.dtype)

        return _map(rescale, updates)

    return clip


def keras_clipping(
    clipvalue: Any = None, clipnorm: Any = None, global_clipnorm: Any = None
) -> optax.GradientTransformation:
    """The Keras 2 optimizer's gradient clipping: clipvalue, then clipnorm, then global_clipnorm.

    Args:
      clipvalue: elementwise bound ``c``: ``tf.clip_by_value(g, -c, c)``, or None.
      clipnorm: per-gradient L2 norm bound: ``tf.clip_by_norm``, or None.
      global_clipnorm: bound of the norm of all gradients together:
        ``tf.clip_by_global_norm`` (not together with ``clipnorm``), or None.

    Returns:
      A stateless ``optax.GradientTransformation`` (thresholds may be traced scalars).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.keras_clipping(clipnorm=1.0)
      >>> tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(None))[0]["w"]
      Array([0.6, 0.8], dtype=float32)
    """
    checked = check_clip_arguments(clipvalue, clipnorm, global_clipnorm)
    steps = [
        build(checked[name])
        for name, build in (
            ("clipvalue", _by_value),
            ("clipnorm", _by_norm),
            ("global_clipnorm", _by_global_norm),
        )
        if name in checked
    ]

    def update_fn(updates, state, params=None):
        del params
        for step in steps:
            updates = step(updates)
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
