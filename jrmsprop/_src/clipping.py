"""Keras 2's gradient clipping (``clipvalue``, ``clipnorm``, ``global_clipnorm``) for optax.

Each clip rounds as the TF op Keras calls; sums of under 8 elements are added in index order, as
TF's are. An :class:`jrmsprop.IndexedSlices` is clipped by its ``values`` as given, as in TF.
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

_is_slices = lambda x: isinstance(x, IndexedSlices)  # noqa: E731


def check_clip_arguments(
    clipvalue: Any = None, clipnorm: Any = None, global_clipnorm: Any = None
) -> dict[str, Any]:
    """The thresholds that are set, checked (finite, ``>= 0``, not both norms), ready for jit."""
    given = dict(clipvalue=clipvalue, clipnorm=clipnorm, global_clipnorm=global_clipnorm)
    checked = {k: v for k, v in given.items() if v is not None}
    for name, value in checked.items():
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
    where = jax.tree_util.keystr(tuple(path)) or "<root>"
    try:
        g = leaf.values if isinstance(leaf, IndexedSlices) else jnp.asarray(leaf)
    except TypeError as e:
        got = type(leaf).__name__
        raise TypeError(f"{who}: the gradient at {where} must be an array, got {got}") from e
    if not jnp.issubdtype(g.dtype, jnp.inexact if complex_ok else jnp.floating):
        dtype = jnp.dtype(g.dtype).name
        if jnp.issubdtype(g.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: complex gradients cannot be clipped by value ({where})")
        must = "gradients must be floating point"
        raise TypeError(f"{who}: the gradient at {where} has dtype {dtype}; {must}")
    return g


def _map(who: str, fn: Any, updates: Any, complex_ok: bool = True) -> Any:
    """``fn(values)`` for every gradient (an IndexedSlices rebuilt around them); None passes."""

    def apply(path: Any, leaf: Any) -> Any:
        if leaf is None:
            return None
        values = fn(_values(who, path, leaf, complex_ok))
        if isinstance(leaf, IndexedSlices):
            return IndexedSlices(values, leaf.indices, leaf.dense_shape)
        return values

    return jax.tree_util.tree_map_with_path(apply, updates, is_leaf=_is_slices)


def _sum(x: jax.Array) -> jax.Array:
    """``Σ x`` over ``x`` flattened, in index order below 8 elements (XLA's order is not fixed)."""
    x = x.reshape(-1)
    if x.shape[0] >= 8:
        return jnp.sum(x)
    total = jnp.zeros((), x.dtype) if x.shape[0] == 0 else x[0]
    for i in range(1, x.shape[0]):
        total = total + x[i]
    return total


def _by_value(c: Any, g: jax.Array) -> jax.Array:
    """``tf.clip_by_value(g, -c, c)``."""
    c = jnp.asarray(c).astype(g.dtype)
    return jnp.maximum(jnp.minimum(g, c), -c)


def _by_norm(c: Any, g: jax.Array) -> jax.Array:
    """``tf.clip_by_norm``: ``s = Σ|g|²``, ``n = √s`` if ``s > 0`` else ``s``, ``g·c / max(n, c)``
    (a traced negative ``c`` counts as 0)."""
    c = jnp.maximum(jnp.asarray(c), 0).astype(arithmetic.real_dtype(g.dtype))
    finite = None if jnp.iscomplexobj(g) else lax.is_finite(g)
    # each g·g rounded before the sum (not contracted into a fused multiply-add)
    s = _sum(arithmetic.abs_sq(g.reshape(-1), None if finite is None else finite.reshape(-1)))
    n = jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, jnp.ones_like(s))), s)
    divisor = jnp.broadcast_to(jnp.maximum(n, c).astype(g.dtype), g.shape)
    if finite is not None:
        # a select keeps XLA's division (by a broadcast scalar it would multiply by the rounded
        # reciprocal); where g is not finite TF gives NaN, and so does (g·c)/g
        divisor = lax.select(finite, divisor, g)
    return (g * c.astype(g.dtype)) / divisor


def _by_global_norm(c: Any, updates: Any) -> Any:
    """``tf.clip_by_global_norm``: ``n = √(2 Σ Σ|g|²·0.5)`` (each leaf's sum in its own dtype,
    then in the widest), ``g · (c · min(1/n, 1/c) + (n − n))``."""
    leaves = jax.tree_util.tree_leaves_with_path(updates, is_leaf=_is_slices)
    halves = [
        _sum(arithmetic.abs_sq(g.reshape(-1)) * jnp.asarray(0.5, arithmetic.real_dtype(g.dtype)))
        for g in (_values("global_clipnorm", path, leaf) for path, leaf in leaves)
    ]
    if not halves:
        return updates
    dtype = functools.reduce(jnp.promote_types, [h.dtype for h in halves])
    n = jnp.sqrt(_sum(jnp.stack([h.astype(dtype) for h in halves])) * jnp.asarray(2.0, dtype))
    c, one = jnp.asarray(c).astype(dtype), jnp.asarray(1.0, dtype)
    scale = c * jnp.minimum(one / n, one / c) + (n - n)
    return _map("global_clipnorm", lambda g: g * scale.astype(g.dtype), updates)


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

    def update_fn(updates, state, params=None):
        del params
        if "clipvalue" in checked:
            clip = functools.partial(_by_value, checked["clipvalue"])
            updates = _map("clipvalue", clip, updates, complex_ok=False)
        if "clipnorm" in checked:
            updates = _map("clipnorm", functools.partial(_by_norm, checked["clipnorm"]), updates)
        if "global_clipnorm" in checked:
            updates = _by_global_norm(checked["global_clipnorm"], updates)
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
