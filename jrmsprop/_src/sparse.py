"""Sparse (row) gradients: ``IndexedSlices`` and the row-wise RMSprop update.

TF 2.x Keras semantics: duplicate indices are summed first, then

* with a momentum slot, only the named rows of every slot and of the variable change;
* without one, ``rms`` (and ``mg``) decay on every row -- ``rms = ρ·rms`` everywhere, then the
  named rows receive their full update -- while only the named rows of the variable move.

Everything keeps static shapes (``jit``-friendly): the ``n`` indices of a gradient are
deduplicated into ``n`` slots, the unused ones padded with an out-of-range index whose gathers
read zeros and whose scatters are dropped. On the momentum path the work is proportional to the
touched rows; the table is only touched in place (given donated buffers).

Indices must lie in ``[0, dense_shape[0])``. Concrete (NumPy / non-traced) indices are checked when
the ``IndexedSlices`` is built, as TF checks them; traced indices cannot be checked inside ``jit``:
there an out-of-range row is dropped (its gradient is ignored) and a negative index counts from the
end, as in NumPy.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax import lax

from jrmsprop._src import arithmetic, validation


@jax.tree_util.register_pytree_node_class
class IndexedSlices:
    """A sparse gradient: ``values[i]`` is the gradient of row ``indices[i]`` of a table.

    The JAX counterpart of ``tf.IndexedSlices``: a dense tensor of shape ``dense_shape`` that is
    zero except on the rows named by ``indices`` (duplicates add up).

    Args:
      values: array of shape ``(n, *dense_shape[1:])``.
      indices: integer array of shape ``(n,)``, rows of the table.
      dense_shape: the shape of the dense tensor (a tuple of ints; static).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> g = jrmsprop.IndexedSlices(jnp.ones((2, 3)), jnp.array([0, 0]), (4, 3))
      >>> g.to_dense()[0]
      Array([2., 2., 2.], dtype=float32)
    """

    __slots__ = ("values", "indices", "dense_shape")

    def __init__(self, values: Any, indices: Any, dense_shape: Any):
        # Only a user's call runs these checks: JAX rebuilds the node (with tracers, or with
        # whatever a tree utility put in its leaves) through ``tree_unflatten``, which bypasses
        # ``__init__``. Python lists / tuples / numbers become NumPy arrays.
        values = _as_array("values", values)
        indices = _as_array("indices", indices)
        self.dense_shape = _as_shape(dense_shape)
        values_shape = getattr(values, "shape", None)
        indices_shape = getattr(indices, "shape", None)
        if indices_shape is not None and len(indices_shape) != 1:
            hint = " (one index i: pass [i])" if len(indices_shape) == 0 else ""
            raise ValueError(
                f"IndexedSlices: `indices` must be 1-D, got shape {tuple(indices_shape)}{hint}"
            )
        if values_shape is not None and indices_shape is not None:
            if tuple(values_shape[:1]) != tuple(indices_shape) or tuple(values_shape[1:]) != tuple(
                self.dense_shape[1:]
            ):
                raise ValueError(
                    "IndexedSlices: `values` must have shape (len(indices), *dense_shape[1:]) = "
                    f"{(*indices_shape, *self.dense_shape[1:])}, got {tuple(values_shape)}"
                )
        indices_dtype = getattr(indices, "dtype", None)
        if indices_dtype is not None and not jnp.issubdtype(indices_dtype, jnp.integer):
            raise TypeError(f"IndexedSlices: `indices` must be integers, got {indices_dtype}")
        check_index_range(indices, self.dense_shape[0])
        self.values = values
        self.indices = indices

    def tree_flatten(self):
        return (self.values, self.indices), self.dense_shape

    @classmethod
    def tree_unflatten(cls, dense_shape, children):
        obj = object.__new__(cls)
        obj.values, obj.indices = children
        obj.dense_shape = dense_shape
        return obj

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.dense_shape

    def to_dense(self) -> jax.Array:
        """The dense tensor (duplicates summed)."""
        for name in ("values", "indices"):
            part = getattr(self, name)
            if not (hasattr(part, "shape") and hasattr(part, "dtype")):
                raise TypeError(
                    f"IndexedSlices.to_dense: `{name}` is {_describe(part)}, not an array (this "
                    "IndexedSlices was rebuilt by a tree utility with other leaves)"
                )
        if math.prod(self.dense_shape) * jnp.dtype(self.values.dtype).itemsize > _MAX_ELEMENTS:
            raise ValueError(  # XLA would abort the process rather than raise
                f"IndexedSlices.to_dense: `dense_shape` {self.dense_shape} of "
                f"{jnp.dtype(self.values.dtype).name} is more than 2**63 - 1 bytes"
            )
        zeros = jnp.zeros(self.dense_shape, self.values.dtype)
        return zeros.at[self.indices].add(self.values, mode="drop")

    # NumPy defers ``ndarray + IndexedSlices`` to ``__radd__`` instead of broadcasting it.
    __array_ufunc__ = None

    def __radd__(self, param: Any) -> jax.Array:
        """``param + self``: the rows added to the named rows of ``param`` only (duplicates add
        up; out-of-range padding rows are dropped), so ``optax.apply_updates`` applies sparse
        updates. The result has ``param``'s dtype.

        Example:
          >>> import jax.numpy as jnp, optax, jrmsprop
          >>> u = jrmsprop.IndexedSlices(jnp.ones((1, 2)), jnp.array([1]), (3, 2))
          >>> optax.apply_updates({"w": jnp.zeros((3, 2))}, {"w": u})["w"]
          Array([[0., 0.],
                 [1., 1.],
                 [0., 0.]], dtype=float32)
        """
        return _apply_one((), param, self)

    def __repr__(self) -> str:
        return (
            f"IndexedSlices(values={self.values!r}, indices={self.indices!r}, "
            f"dense_shape={self.dense_shape})"
        )


# The largest number of elements an array may have (XLA counts them in int64; a larger dense
# shape aborts the process when the dense tensor is built).
_MAX_ELEMENTS = 2**63 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}..." if len(text) > 80 else text


def _as_array(name: str, value: Any) -> Any:
    """``values`` / ``indices`` as given (an array or tracer) or as a NumPy array (Python lists,
    tuples and numbers); a ``TypeError`` naming ``name`` for anything else (None, a string, a
    non-numeric dtype)."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"IndexedSlices: `{name}` must be an array, got {_describe(value)}")
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        if not isinstance(value, (list, tuple, bool, int, float, complex, np.generic)):
            raise TypeError(f"IndexedSlices: `{name}` must be an array, got {type(value).__name__}")
        try:
            if name == "indices" and isinstance(value, (list, tuple)) and len(value) == 0:
                value = np.zeros(0, np.int32)
            else:
                value = np.asarray(value)
        except (TypeError, ValueError) as e:  # ragged nested lists
            raise ValueError(
                f"IndexedSlices: `{name}` must be an array, got {_describe(value)} "
                f"({validation.abbreviated(e, 200)})"
            ) from e
    try:
        dtype = np.dtype(value.dtype)
    except TypeError as e:
        raise TypeError(
            f"IndexedSlices: `{name}` must be an array, got {type(value).__name__} with dtype "
            f"{value.dtype!r}"
        ) from e
    if not (dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number)):
        raise TypeError(
            f"IndexedSlices: `{name}` must be a numeric array, got dtype {dtype} "
            f"({_describe(value)})"
        )
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_


def check_index_range(indices: Any, num_rows: int) -> None:
    """A ``ValueError`` unless concrete ``indices`` lie in ``[0, num_rows)``, as TF checks them;
    traced indices cannot be checked (inside ``jit`` an out-of-range row is dropped)."""
    if isinstance(indices, jax.core.Tracer) or not np.size(indices):
        return
    try:
        concrete = np.asarray(indices)
    except (TypeError, ValueError):
        return
    if concrete.dtype.kind in "iu":
        low, high = concrete.min(), concrete.max()
        if low < 0 or high >= num_rows:
            bad = low if low < 0 else high
            raise ValueError(
                f"IndexedSlices: `indices` must lie in [0, {num_rows}) (dense_shape[0]), "
                f"got {int(bad)}"
            )


def _as_shape(dense_shape: Any) -> tuple[int, ...]:
    if type(dense_shape) is tuple and all(type(d) is int for d in dense_shape):
        return _checked_shape(dense_shape)  # the common case, and what __init__ stores
    if dense_shape is None or isinstance(dense_shape, (str, bytes)) or _is_bool(dense_shape):
        raise TypeError(
            f"IndexedSlices: `dense_shape` must be a tuple of ints, got {_describe(dense_shape)}"
        )
    if isinstance(dense_shape, (list, tuple)):
        for entry in dense_shape:
            if _is_bool(entry):  # NumPy would read True as 1
                raise TypeError(
                    f"IndexedSlices: `dense_shape` must be a tuple of ints, got "
                    f"{_describe(dense_shape)} (the entry {entry!r} is a boolean)"
                )
            if isinstance(entry, (list, tuple)) or np.ndim(entry) != 0:
                raise ValueError(
                    f"IndexedSlices: `dense_shape` must be a flat tuple of ints, got "
                    f"{_describe(dense_shape)} (the entry {_describe(entry)} is not one int)"
                )
    if isinstance(dense_shape, (list, tuple)) and all(
        isinstance(d, (int, np.integer)) for d in dense_shape
    ):  # (Python ints beyond int64 would make NumPy build an object array)
        return _checked_shape(tuple(int(d) for d in dense_shape))
    try:
        array = np.asarray(dense_shape)
    except (TypeError, ValueError) as e:  # a traced entry (or an unconvertible object)
        raise TypeError(
            f"IndexedSlices: `dense_shape` must be static (a tuple of ints), got "
            f"{_describe(dense_shape)}: {validation.abbreviated(e, 200)}"
        ) from e
    if array.ndim == 0 and array.dtype.kind in "iu":  # a bare int: a 1-D shape, as in JAX
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(
            "IndexedSlices: `dense_shape` must be a flat tuple of ints (1-D), got "
            f"{_describe(dense_shape)} of shape {array.shape}"
        )
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(
            f"IndexedSlices: `dense_shape` must be a tuple of ints, got "
            f"{_describe(dense_shape)} (dtype {array.dtype})"
        )
    return _checked_shape(tuple(int(d) for d in array))


def _checked_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not shape:
        raise ValueError("IndexedSlices: `dense_shape` must have at least one dimension")
    if min(shape) < 0:
        raise ValueError(f"IndexedSlices: `dense_shape` must not be negative, got {shape}")
    if max(shape) > _MAX_ELEMENTS or (min(shape) > 0 and math.prod(shape) > _MAX_ELEMENTS):
        raise ValueError(
            f"IndexedSlices: `dense_shape` {shape} has more elements than an array can hold "
            "(2**63 - 1)"
        )
    return shape


def deduplicate(grad: IndexedSlices) -> tuple[jax.Array, jax.Array]:
    """Sums the values of repeated indices (``tf.unsorted_segment_sum`` over ``tf.unique``).

    Returns ``(indices, values)`` of the same static length ``n`` as the input: the unique indices
    in ascending order, then padding set to ``dense_shape[0]`` (out of range) with zero values.
    The values of one index are summed in the order they come in, as TF's segment sum adds them.
    """
    n = grad.indices.shape[0]
    num_rows = grad.dense_shape[0]
    indices = grad.indices.astype(jnp.int32)
    # A traced negative index counts from the end (NumPy's rule, as the scatters apply it): made
    # non-negative first, so that -1 and num_rows - 1 are one row and are summed; an index still
    # negative is out of range, like one >= num_rows (dropped).
    indices = jnp.where(indices < 0, indices + num_rows, indices)
    indices = jnp.where(indices < 0, num_rows, indices)
    if n == 0:
        return indices, grad.values
    if (num_rows + 1) * n > 2**32:
        # The keys below would not fit in 32 bits: sort (index, position) pairs instead.
        unique, inverse = jnp.unique(
            indices, return_inverse=True, size=n, fill_value=jnp.int32(num_rows)
        )
        summed = jax.ops.segment_sum(grad.values, inverse.reshape(-1), num_segments=n)
        return unique, summed
    # One sort of single 32-bit keys, index·n + position, instead of the two-operand sort of
    # jnp.unique (about 3.5x slower on XLA:CPU: 1024 indices, 320 against 90 us). Keys are
    # distinct, so the order is total; within one index the positions ascend, so each segment
    # sums its values in input order.
    count = jnp.uint32(n)
    keys = lax.sort(indices.astype(jnp.uint32) * count + lax.iota(jnp.uint32, n))
    sorted_indices = (keys // count).astype(jnp.int32)
    positions = (keys % count).astype(jnp.int32)
    starts = jnp.concatenate([jnp.ones((1,), bool), sorted_indices[1:] != sorted_indices[:-1]])
    segments = jnp.cumsum(starts, dtype=jnp.int32) - 1
    unique = jnp.full((n,), num_rows, jnp.int32).at[segments].set(sorted_indices)
    summed = jax.ops.segment_sum(
        grad.values[positions], segments, num_segments=n, indices_are_sorted=True
    )
    return unique, summed


def _gather(table: jax.Array, rows: jax.Array) -> jax.Array:
    return table.at[rows].get(mode="fill", fill_value=0)


def _scatter(table: jax.Array, rows: jax.Array, values: jax.Array) -> jax.Array:
    return table.at[rows].set(values.astype(table.dtype), mode="drop")


def sparse_step(
    grad: IndexedSlices,
    param: jax.Array | None,
    rms: jax.Array,
    mom: jax.Array | None,
    mg: jax.Array | None,
    sc: arithmetic.Scalars,
    variant: arithmetic.Variant,
    dtype: Any,
    out_dtype: Any,
) -> tuple[IndexedSlices, jax.Array, jax.Array | None, jax.Array | None]:
    """The RMSprop update for one ``IndexedSlices`` gradient (the math of ``arithmetic``).

    ``dtype`` is the compute dtype, ``out_dtype`` that of the returned rows. Returns the (row)
    update as an ``IndexedSlices`` of ``-delta`` on unique rows, and the new slots (full tables).
    """
    # TF's sparse paths evaluate ms·ρ + g²·(1−ρ) (op by op); with a momentum slot the
    # SparseApplyRMSProp kernels also order the step their own way.
    variant = variant._replace(
        fused_order=False, sparse_fused_order=variant.fused_order and mom is not None
    )
    rows, values = deduplicate(grad)
    param_rows = None if param is None else _gather(param, rows)
    if mom is not None:
        # Lazy rows: only the named rows of every slot (and of the parameter) change.
        update, rms_rows, mom_rows, mg_rows = arithmetic.rmsprop_step(
            values,
            param_rows,
            _gather(rms, rows),
            _gather(mom, rows),
            None if mg is None else _gather(mg, rows),
            sc,
            variant,
            dtype,
            negate=True,
        )
        new_rms = _scatter(rms, rows, rms_rows)
        new_mom = None if mom_rows is None else _scatter(mom, rows, mom_rows)
        new_mg = None if mg is None or mg_rows is None else _scatter(mg, rows, mg_rows)
    else:
        # TF's order: every row decays (in place), the named rows gain (1−ρ)|g|² by a
        # scatter-add, then are read back. Reading the old rows first instead would keep the
        # old table alive and cost a full copy of it.
        # The decay is computed in the compute dtype (the helper the dense path uses), so a
        # bfloat16/float16 table rounds once, after the add, exactly as the dense step does.
        g = arithmetic.effective_gradient(values, param_rows, sc, variant, dtype)
        rms_inc, mg_inc = arithmetic.moment_increments(g, sc, centered=mg is not None)

        def decay_and_add(table: jax.Array, increment: jax.Array) -> jax.Array:
            decayed = arithmetic.decayed(table, sc.rho, increment.dtype)
            return decayed.at[rows].add(increment, mode="drop")

        full_rms = decay_and_add(rms, rms_inc)
        full_mg = None if mg is None or mg_inc is None else decay_and_add(mg, mg_inc)
        update, _ = arithmetic.step_from_moments(
            g,
            param_rows,
            _gather(full_rms, rows),
            None if full_mg is None else _gather(full_mg, rows),
            None,
            sc,
            variant,
            negate=True,
        )
        new_rms = full_rms.astype(rms.dtype)
        new_mg = None if full_mg is None or mg is None else full_mg.astype(mg.dtype)
        new_mom = None
    return IndexedSlices(update.astype(out_dtype), rows, grad.dense_shape), new_rms, new_mom, new_mg


def densify(tree: Any) -> Any:
    """Replaces every :class:`IndexedSlices` leaf of ``tree`` by its dense array.

    optax's transforms and wrappers that do arithmetic on the whole gradient tree
    (``optax.clip_by_global_norm``, ``optax.MultiSteps``, ...) see an ``IndexedSlices`` as two
    arrays (values *and* indices) and fail on it. Densify the gradients before them, or use
    :func:`jrmsprop.keras_clipping`, which understands sparse leaves; ``optax.apply_updates``
    applies sparse updates as they are (see ``IndexedSlices.__radd__``). Densifying gives up the
    lazy-row semantics of sparse updates: the dense gradient is zero on the other rows.

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> g = {"emb": jrmsprop.IndexedSlices(jnp.ones((2, 2)), jnp.array([0, 0]), (3, 2))}
      >>> jrmsprop.densify(g)["emb"]
      Array([[2., 2.],
             [0., 0.],
             [0., 0.]], dtype=float32)
    """
    return jax.tree.map(
        lambda x: x.to_dense() if isinstance(x, IndexedSlices) else x,
        tree,
        is_leaf=lambda x: isinstance(x, IndexedSlices),
    )


def apply_updates(params: Any, updates: Any) -> Any:
    """``optax.apply_updates`` that refuses what a parameter cannot hold, naming the leaf.

    An ``IndexedSlices`` update adds to its rows only; a complex update on a real parameter, a
    floating update on an integer one, or an update of another shape raises (optax drops the
    imaginary part, truncates, or broadcasts the parameter up). Used by the update-and-apply path.
    """
    paths_and_params, treedef = jax.tree_util.tree_flatten_with_path(params)
    try:
        update_leaves = treedef.flatten_up_to(updates)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"apply_updates: `updates` do not have the structure of `params` "
            f"({validation.tree_description(treedef)}): {validation.abbreviated(e)}"
        ) from e
    new_leaves = [
        _apply_one(path, p, u) for (path, p), u in zip(paths_and_params, update_leaves, strict=True)
    ]
    return treedef.unflatten(new_leaves)


def _apply_one(path: Any, param: Any, update: Any) -> Any:
    if update is None:
        return param
    param = jnp.asarray(param)
    where = jax.tree_util.keystr(path) or "<root>"
    if isinstance(update, IndexedSlices):
        if tuple(update.dense_shape) != tuple(param.shape):
            raise ValueError(
                f"apply_updates: the IndexedSlices update at {where} has dense_shape "
                f"{tuple(update.dense_shape)}; the parameter there has shape {param.shape}"
            )
        _check_lossless(where, param.dtype, update.values, "IndexedSlices update")
        return param.at[update.indices].add(update.values.astype(param.dtype), mode="drop")
    _check_lossless(where, param.dtype, update, "update")
    shape = tuple(jnp.shape(update))
    try:
        fits = shape == param.shape or jnp.broadcast_shapes(param.shape, shape) == param.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"apply_updates: the update at {where} has shape {shape}; the parameter there has "
            f"shape {param.shape} (an update must have the parameter's shape, or broadcast to "
            "it without changing it)"
        )
    return jnp.asarray(param + update).astype(param.dtype)


def _update_dtype(update: Any) -> np.dtype | None:
    """The dtype of an update leaf (a Python number's NumPy dtype), None when it has none."""
    dtype = getattr(update, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(update).dtype
        except (TypeError, ValueError):
            return None
    try:
        return np.dtype(dtype)
    except TypeError:
        return None


def _check_lossless(where: str, param_dtype: Any, update: Any, what: str) -> None:
    """Refuses an update whose kind the parameter's dtype cannot hold: a complex update on a real
    parameter (its imaginary part would be dropped) and a floating-point or complex update on an
    integer or boolean parameter (it would be truncated). A float32 update on a bfloat16 or
    float16 parameter only rounds (as ``optax.apply_updates`` does), and an integer update on a
    floating-point parameter is exact enough: both are allowed."""
    dtype = _update_dtype(update)
    if dtype is None:
        return
    param_dtype = jnp.dtype(param_dtype)
    update_complex = jnp.issubdtype(dtype, jnp.complexfloating)
    param_complex = jnp.issubdtype(param_dtype, jnp.complexfloating)
    param_inexact = jnp.issubdtype(param_dtype, jnp.inexact)
    if update_complex and not param_complex:
        raise TypeError(
            f"apply_updates: the {what} at {where} is complex ({dtype.name}) but the parameter "
            f"there is {param_dtype.name}: adding it would drop the imaginary part (take the "
            "real part of `updates`, or make `params` complex)"
        )
    if jnp.issubdtype(dtype, jnp.inexact) and not param_inexact:
        raise TypeError(
            f"apply_updates: the {what} at {where} has dtype {dtype.name} but the parameter there "
            f"is {param_dtype.name}: adding it would truncate the update (`params` must be "
            "floating-point, or `updates` integers)"
        )
