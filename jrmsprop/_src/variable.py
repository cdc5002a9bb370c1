"""``jrmsprop.Variable``, and the stateful optimizer's step inputs and gradients.

The optimizer donates a variable's buffer: an array read from ``v.value`` is deleted by the next
step (``v.numpy()`` is a copy).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.validation import abbreviated, check_bool

__all__ = ["Variable", "compute_gradients", "flatten_variables", "initial_value", "step_inputs"]

_ENUMS = {
    "synchronization": ("auto", "none", "on_write", "on_read"),
    "aggregation": ("none", "sum", "mean", "only_first_replica"),
}
# The value kinds an assignment accepts, by the variable's kind.
_ASSIGNABLE = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}


def _enum(what: str, value: Any) -> str:
    name, allowed = getattr(value, "name", value), _ENUMS[what]
    if not isinstance(name, str) or name.lower() not in allowed:
        raise ValueError(f"`{what}` must be one of {allowed} (or the TF enum), got {value!r}")
    return name.lower()


def canonical_dtype(dtype: Any) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype)))


def dtype_kind(dtype: Any) -> str:
    """NumPy's kind letter, with bfloat16 & co. as ``'f'`` and Python ints (object) as ``'i'``."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V" and jnp.issubdtype(dtype, jnp.floating):
        return "f"
    return "i" if dtype.kind == "O" else dtype.kind


def _default_dtype(value: Any, exact: Any) -> np.dtype:
    """TF's dtype: float32, int32 (int64 beyond), complex64 or bool for Python data; else the
    array's own."""
    if type(value) not in (bool, int, float, complex) and not isinstance(value, (list, tuple)):
        return np.dtype(np.int64) if exact.dtype.kind == "O" else exact.dtype
    kind = dtype_kind(exact.dtype)
    if kind in "iu":
        fits = not exact.size or (-(2**31) <= exact.min() and exact.max() < 2**31)
        return np.dtype(np.int32 if fits else np.int64)
    return np.dtype({"b": np.bool_, "c": np.complex64}.get(kind, np.float32))


def exact_array(value: Any, what: str) -> Any:
    """``value`` as an array that holds it exactly (a ``jax.Array`` as it is, Python ints beyond
    64 bits as an object array); a ``TypeError`` starting with ``what`` if it is not numbers."""
    if isinstance(value, Variable):
        value = value.value
    if isinstance(value, jax.Array):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:
        ragged = "inhomogeneous" in str(e) or "with a sequence" in str(e)
        got = "a ragged nested list" if ragged else f"{type(value).__name__} ({e})"
        raise TypeError(f"{what} must be an array of numbers, got {got}") from e
    if array.dtype.kind == "O" and array.size:
        if all(type(x) is int for x in array.flat):
            return array
        if all(isinstance(x, (int, float, complex, np.number)) for x in array.flat):
            is_complex = any(isinstance(x, (complex, np.complexfloating)) for x in array.flat)
            try:
                return array.astype(np.complex128 if is_complex else np.float64)
            except OverflowError as e:
                raise ValueError(f"{what}: {e}") from e
    if array.dtype.kind == "O" or not (
        dtype_kind(array.dtype) in "biufc" or jnp.issubdtype(array.dtype, jnp.number)
    ):
        if value is None or isinstance(value, (str, bytes)):
            got = abbreviated(repr(value), 80)
        else:
            dtype = "" if array.dtype.kind == "O" else f" of dtype {array.dtype}"
            got = type(value).__name__ + dtype
        raise TypeError(f"{what} must be an array of numbers, got {got}")
    return array


def _narrows(source: np.dtype, target: np.dtype) -> bool:
    """Whether integers of ``source`` may lie beyond ``target``'s range."""
    return dtype_kind(source) in "iu" and (source.kind == "O" or not np.can_cast(source, target))


def convert(exact: Any, dtype: Any, what: str, requested: Any = None) -> jax.Array:
    """An :func:`exact_array` in ``dtype`` (a new buffer); values it cannot hold are refused, but
    floats round. ``requested``: the dtype asked for, if x64 being off narrowed it."""
    target = np.dtype(dtype)
    s, t = dtype_kind(exact.dtype), dtype_kind(target)
    if s == "c" and t != "c":
        raise TypeError(f"{what}: a complex value cannot be stored in dtype {target}")
    if t in "fc":
        high = float(jnp.finfo(target).max)
        low, reason = -high, f"its largest finite value is {high:g}"
    else:
        low, high = (0, 1) if t == "b" else (int(np.iinfo(target).min), int(np.iinfo(target).max))
        reason = f"it holds integers in [{low}, {high}]"
    flat = bad = np.zeros(0, bool)
    if s == "f" and t in "biu":
        flat = np.asarray(exact, np.float64).reshape(-1)
        bad = (flat != np.trunc(flat)) | (flat < low) | (flat >= float(high) + 1.0)
    elif _narrows(exact.dtype, target):
        flat = np.asarray(exact).reshape(-1)
        bad = (flat < low) | (flat > high)
    if bad.any():
        value = flat[int(np.argmax(bad))]
        value = value.item() if isinstance(value, np.generic) else value
        if requested is not None and np.dtype(requested) != target:
            reason += f"; {np.dtype(requested)} is stored as {target} while x64 is off"
        raise ValueError(f"{what}: {value!r} cannot be represented in dtype {target} ({reason})")
    if exact.dtype.kind == "O":  # Python ints beyond 64 bits, checked: a float dtype holds them
        exact = exact.astype(np.float64)
    return jnp.array(exact, target, copy=True)


def initial_value(initializer: Any, shape: Any, dtype: Any) -> jax.Array:
    """``'zeros'``, ``'ones'``, a callable ``(shape, dtype=)`` or a value (broadcast), once the
    shape and dtype make an array (XLA aborts, not raises, beyond 2**63 bytes)."""
    try:
        sizes = None if isinstance(shape, (str, bytes)) else list(shape)
    except TypeError:  # not iterable, or a 0-d array
        sizes = None
    for d in sizes or ():
        if isinstance(d, (bool, np.bool_)) or not hasattr(d, "__index__"):
            kind = "a boolean" if isinstance(d, (bool, np.bool_)) else type(d).__name__
            raise TypeError(f"`shape` must be a sequence of integers, got {shape!r} ({kind} {d!r})")
    if sizes is None:
        raise TypeError(f"`shape` must be a sequence of integers, got {shape!r}")
    shape = tuple(operator.index(d) for d in sizes)
    if any(d < 0 for d in shape):
        raise ValueError(f"`shape` must not have negative sizes, got {shape}")
    try:
        dtype = canonical_dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`dtype` must be a dtype, got {dtype!r}") from e
    if int(np.prod([d or 1 for d in shape], dtype=object)) * dtype.itemsize >= 2**63:
        raise ValueError(
            f"`shape` {shape} is too large for dtype {dtype.name}: 2**63 bytes or more"
        )
    if isinstance(initializer, str):
        if initializer.lower() not in ("zeros", "ones"):
            raise ValueError(f"Unknown `initializer` {initializer!r}: not 'zeros' or 'ones'")
        return (jnp.zeros if initializer.lower() == "zeros" else jnp.ones)(shape, dtype)
    if callable(initializer) and not isinstance(initializer, Variable):
        initializer = initializer(shape, dtype=dtype)
    array = convert(exact_array(initializer, "`initializer`"), dtype, "`initializer`")
    if array.shape != shape and array.ndim:
        raise ValueError(f"`initializer` gave shape {array.shape}, expected {shape}")
    return jnp.broadcast_to(array, shape)


# While ``minimize`` computes gradients, every read of a Variable is reported to a recorder.
_local = threading.local()


def _binary(op: Callable[[Any, Any], Any]) -> tuple[Callable, Callable]:
    """``op`` on a Variable's value, as a method and as its reflected method."""
    unwrap = lambda x: x.value if isinstance(x, Variable) else x  # noqa: E731
    return (lambda self, other: op(self.value, unwrap(other))), (
        lambda self, other: op(unwrap(other), self.value)
    )


class Variable:
    """A mutable, named holder of a ``jax.Array`` (the JAX counterpart of ``tf.Variable``).

    Args:
      initial_value: a number, nested list, array, tensor, Variable, or a callable returning
        one (copied).
      name: the name (default ``"Variable"``); the optimizer names slots after it.
      dtype: default TF's: float32 for Python floats, int32 for ints, an array's own (64-bit
        narrowed unless x64 is on). Values it cannot represent are refused, as by TF.
      trainable: ``True``/``False``; ``None`` means True unless ``synchronization="on_read"``.
      synchronization: a TF ``VariableSynchronization`` name or enum (recorded only).
      aggregation: a TF ``VariableAggregation`` name or enum (recorded only).

    Operators return ``jax.Array`` values; ``==`` is identity (Variables are hashable).

    Example:
      >>> import jrmsprop
      >>> v = jrmsprop.Variable([1.0, 2.0], name="w")
      >>> v.assign_add([0.5, 0.5]).numpy()
      array([1.5, 2.5], dtype=float32)
      >>> (2 * v).dtype
      dtype('float32')
    """

    __array_priority__ = 100
    # A check of every assigned value (the optimizer's iterations and hyperparameters).
    _check: Callable[[Any], None] | None = None

    def __init__(
        self,
        initial_value: Any,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool | None = None,
        *,
        synchronization: Any = "auto",
        aggregation: Any = "none",
    ):
        if callable(initial_value) and not isinstance(initial_value, Variable):
            initial_value = initial_value()
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Variable: `name` must be a string, got {name!r}")
        try:
            dtype = None if dtype is None else np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"Variable: `dtype` must be a dtype, got {dtype!r}") from e
        self._name = "Variable" if name is None else name
        what = f"Variable {self._name!r}: `initial_value`"
        exact = exact_array(initial_value, what)
        requested = _default_dtype(initial_value, exact) if dtype is None else dtype
        self._value = convert(exact, canonical_dtype(requested), what, requested)
        self._synchronization = _enum("synchronization", synchronization)
        self._aggregation = _enum("aggregation", aggregation)
        on_read = self._synchronization == "on_read"
        self._trainable = not on_read if trainable is None else check_bool("trainable", trainable)

    @property
    def value(self) -> jax.Array:
        """The current value (the live buffer, deleted when the optimizer donates it)."""
        recorder = getattr(_local, "recorder", None)
        if recorder is not None:
            recorder.dense.add(id(self))
        return self._value

    read_value = lambda self: self.value  # noqa: E731
    numpy = lambda self: np.array(self.value, copy=True)  # noqa: E731

    def sparse_read(self, indices: Any, name: str | None = None) -> jax.Array:
        """Rows ``indices``; under ``RMSprop.minimize`` they get an ``IndexedSlices`` gradient."""
        recorder = getattr(_local, "recorder", None)
        if recorder is not None:
            return recorder.sparse_read(self, jnp.asarray(indices))
        return jnp.take(self._value, jnp.asarray(indices), axis=0)

    shape = property(lambda self: tuple(self._value.shape))
    dtype = property(lambda self: self._value.dtype)
    ndim = property(lambda self: self._value.ndim)
    size = property(lambda self: int(self._value.size))
    name = property(lambda self: self._name)
    trainable = property(lambda self: self._trainable)
    synchronization = property(lambda self: self._synchronization)
    aggregation = property(lambda self: self._aggregation)

    def _update(self, value: Any, how: str, read_value: bool) -> Any:
        """Assigns ``value`` (``how``: ``"assign"``, ``"add"`` or ``"subtract"``), all checked
        first: shape, kind, and a result the dtype can hold (integers exactly, never wrapped)."""
        exact = exact_array(value, f"Variable {self._name!r}: the value to {how}")
        if dtype_kind(exact.dtype) not in _ASSIGNABLE[dtype_kind(self.dtype)]:
            raise TypeError(f"Variable {self._name!r}: cannot {how} dtype {exact.dtype}")
        if tuple(exact.shape) != self.shape:
            raise ValueError(f"Variable {self._name!r}: cannot {how} shape {exact.shape}")
        what = f"the value to {how}"
        if how != "assign" and dtype_kind(self.dtype) in "biu":
            old, exact = np.asarray(self._value).astype(object), np.asarray(exact).astype(object)
            exact = np.asarray(old + exact if how == "add" else old - exact, dtype=object)
            if all(-(2**63) <= int(v) < 2**63 for v in exact.flat):
                exact = exact.astype(np.int64)
            how, what = "assign", "the sum" if how == "add" else "the difference"
        if self._check is not None and _narrows(exact.dtype, self.dtype):
            self._check(exact)  # names e.g. `iterations` before int32 would refuse 2**32
        new = convert(exact, self.dtype, f"Variable {self._name!r}: {what}")
        if how != "assign":
            new = (self._value + new if how == "add" else self._value - new).astype(self.dtype)
        if self._check is not None:
            self._check(new)
        self._value = new
        return self if read_value else None

    def assign(self, value: Any, use_locking=None, name=None, read_value=True) -> Any:
        """Replaces the value (same shape, cast to the dtype). Returns the variable."""
        return self._update(value, "assign", read_value)

    def assign_add(self, delta: Any, use_locking=None, name=None, read_value=True) -> Any:
        """Adds ``delta`` (an integer sum out of the dtype's range is refused)."""
        return self._update(delta, "add", read_value)

    def assign_sub(self, delta: Any, use_locking=None, name=None, read_value=True) -> Any:
        """Subtracts ``delta`` (an integer difference out of range is refused)."""
        return self._update(delta, "subtract", read_value)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = np.array(self.value, copy=True)  # never a view: it would block donation
        return array if dtype is None else array.astype(dtype)

    def __jax_array__(self) -> jax.Array:
        return self.value

    def __len__(self) -> int:
        return len(self._value)  # TypeError for a 0-d Variable

    def __repr__(self) -> str:
        return (
            f"<jrmsprop.Variable {self._name!r} shape={self.shape} dtype={self.dtype.name}, "
            f"numpy={np.array(self._value)!r}>"
        )

    __hash__ = object.__hash__
    __float__ = lambda self: float(self.value)  # noqa: E731
    __int__ = lambda self: int(self.value)  # noqa: E731
    __index__ = lambda self: self.value.__index__()  # noqa: E731
    __complex__ = lambda self: complex(self.value)  # noqa: E731
    __bool__ = lambda self: bool(self.value)  # noqa: E731
    __iter__ = lambda self: iter(self.value)  # noqa: E731
    __getitem__ = lambda self, index: self.value[index]  # noqa: E731
    __neg__ = lambda self: -self.value  # noqa: E731
    __pos__ = lambda self: +self.value  # noqa: E731
    __abs__ = lambda self: abs(self.value)  # noqa: E731
    __add__, __radd__ = _binary(operator.add)
    __sub__, __rsub__ = _binary(operator.sub)
    __mul__, __rmul__ = _binary(operator.mul)
    __truediv__, __rtruediv__ = _binary(operator.truediv)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv)
    __mod__, __rmod__ = _binary(operator.mod)
    __pow__, __rpow__ = _binary(operator.pow)
    __matmul__, __rmatmul__ = _binary(operator.matmul)
    __lt__, __le__ = _binary(operator.lt)[0], _binary(operator.le)[0]
    __gt__, __ge__ = _binary(operator.gt)[0], _binary(operator.ge)[0]


# ---- the step's inputs ------------------------------------------------------------------------


def _gradient(grad: Any, var: Variable) -> Any:
    """One gradient as a jax.Array or IndexedSlices of the variable's shape and dtype."""
    what = f"Gradient for variable {var.name!r}"

    def values(value: Any) -> jax.Array:
        is_jax = isinstance(value.value if isinstance(value, Variable) else value, jax.Array)
        array = exact_array(value, what)
        kind = dtype_kind(array.dtype)
        if kind not in ("fc" if is_jax else "iufc") or (kind == "c" and var.dtype.kind != "c"):
            raise TypeError(f"{what} has dtype {array.dtype}, the variable {var.dtype}")
        return array if is_jax else convert(array, var.dtype, what)

    if all(hasattr(grad, a) for a in ("values", "indices", "dense_shape")):
        # tf.IndexedSlices and lookalikes: TF ignores dense_shape; the variable's shape rules
        shape = tuple(grad.dense_shape) if isinstance(grad, IndexedSlices) else var.shape
        indices = grad.indices
        indices = indices if isinstance(indices, jax.Array) else jnp.asarray(np.asarray(indices))
        result = IndexedSlices(values(grad.values), indices, shape)
    else:
        result = values(grad)
        shape = tuple(result.shape)
    if shape != var.shape:
        raise ValueError(f"{what} has shape {shape}, the variable {var.shape}")
    return result


def step_inputs(grads_and_vars: Iterable[Any]) -> tuple[list[Variable], tuple, list[str]]:
    """The variables that have a gradient, their gradients converted, and the names of those
    whose gradient is ``None`` (all ``None``, or a variable given twice: ``ValueError``)."""
    pairs = []
    for pair in grads_and_vars:
        try:
            grad, var = pair
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`grads_and_vars` must hold (gradient, variable) pairs: {pair!r}"
            ) from e
        if not isinstance(var, Variable):
            raise TypeError(f"apply_gradients: not a jrmsprop.Variable: {type(var).__name__}")
        pairs.append((grad, var))
    kept = [(g, v) for g, v in pairs if g is not None]
    if pairs and not kept:
        raise ValueError(
            f"No gradients provided for any variable: {abbreviated([v.name for _, v in pairs])}"
            f". Provided `grads_and_vars` is {abbreviated(pairs)}."
        )
    variables = [v for _, v in kept]
    if len(set(variables)) != len(variables):
        twice = next(v for i, v in enumerate(variables) if v in variables[:i])
        raise ValueError(f"{twice.name!r} appears more than once (in TF 2.x Keras, each applies)")
    # a JAX array of the variable's own type, shape and dtype is taken as it is (fast path)
    grads = tuple(
        g if type(g) is type(v._value) and g.aval == v._value.aval else _gradient(g, v)
        for g, v in kept
    )
    return variables, grads, [v.name for g, v in pairs if g is None]


def distinct_donations(donated: Sequence[Sequence[jax.Array] | None], others: Any):
    """``(donated, others)`` with a copy of every array already seen in a donated position: a
    donated buffer may appear once among a call's arguments (``loss = p**2 / 2``)."""
    seen: set[int] = set()

    def once(array: Any) -> Any:
        if id(array) in seen:
            array = jnp.array(array, copy=True)
        seen.add(id(array))
        return array

    groups = [None if group is None else tuple(map(once, group)) for group in donated]
    others = jax.tree.map(
        lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) and id(x) in seen else x,
        others,
    )
    return groups, others


# ---- minimize's gradients ---------------------------------------------------------------------


class _Reads:
    """Which Variables a loss reads: densely, or through ``sparse_read`` (row inputs, 2nd pass)."""

    def __init__(self, deltas: dict[int, list[jax.Array]] | None = None):
        self.dense: set[int] = set()
        self.sparse: dict[int, list[tuple[int, ...]]] = {}
        self.deltas, self.used = deltas, {}

    def sparse_read(self, var: Variable, indices: jax.Array) -> jax.Array:
        key, value, flat = id(var), var._value, indices.reshape(-1)
        if self.deltas is None:  # discovery: a plain gather
            self.sparse.setdefault(key, []).append(tuple(flat.shape))
            return jnp.take(value, indices, axis=0)
        queue, used = self.deltas.get(key, []), self.used.setdefault(key, [])
        if len(used) < len(queue) and queue[len(used)].shape == (*flat.shape, *value.shape[1:]):
            rows = jnp.take(jax.lax.stop_gradient(value), flat, axis=0) + queue[len(used)]
            used.append(flat)
            return rows.reshape((*indices.shape, *value.shape[1:]))
        self.dense.add(key)  # no matching row input: differentiated densely
        return jnp.take(value, indices, axis=0)


def flatten_variables(var_list: Any) -> list[Variable]:
    """A Variable or a nested list/tuple/dict of them as a flat list."""
    if isinstance(var_list, Variable):
        return [var_list]
    items = list(var_list.values()) if isinstance(var_list, dict) else var_list
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"`var_list` must be a list of jrmsprop.Variable, got {var_list!r}")
    for item in items:
        if not isinstance(item, (Variable, list, tuple, dict)):
            raise TypeError(f"`var_list` must hold jrmsprop.Variable objects, got {item!r}")
    return [v for item in items for v in flatten_variables(item)]


def _loss_array(out: Any) -> jax.Array:
    """The loss as an array, which must be floating point or complex."""
    text = out is None or isinstance(out, (str, bytes))
    try:
        array = None if text else jnp.asarray(out)
    except (TypeError, ValueError):
        array = None
    if array is None or not jnp.issubdtype(array.dtype, jnp.inexact):
        got = repr(out) if text else f"dtype {array.dtype}" if array is not None else type(out)
        raise TypeError(
            "`loss` must return a floating-point or complex scalar (or such an array, which is "
            f"summed), got {abbreviated(getattr(got, '__name__', got), 80)}"
        )
    return array


def compute_gradients(
    loss: Callable[[], Any], var_list: Any, grad_loss: Any = None, tape: Any = None
) -> list[tuple[Any, Variable]]:
    """The ``(gradient or None, variable)`` pairs of ``loss()`` by ``jax.vjp``, as TF's.

    A variable never read gets ``None``; one read only through ``sparse_read`` an
    :class:`IndexedSlices` (a second pass, with zero row inputs). Complex gradients are conjugated.
    """
    if tape is not None:
        raise NotImplementedError("minimize(tape=...): JAX has no tape; pass `loss` as a callable")
    if not callable(loss) or isinstance(loss, Variable):
        raise ValueError(f"`loss` must be a callable of no arguments, got {loss!r}")
    if callable(var_list) and not isinstance(var_list, Variable):
        loss()
        var_list = var_list()
    variables = flatten_variables(var_list)
    keys = [id(v) for v in variables]

    def evaluate(vals: list[jax.Array], reads: _Reads) -> jax.Array:
        saved = [v._value for v in variables]
        previous = getattr(_local, "recorder", None)
        try:
            for var, x in zip(variables, vals, strict=True):
                var._value = x
            _local.recorder = reads
            out = loss()
        finally:
            _local.recorder = previous
            for var, x in zip(variables, saved, strict=True):
                var._value = x
        return _loss_array(out._value if isinstance(out, Variable) else out)

    def cotangent(out: jax.Array) -> jax.Array:
        if grad_loss is None:
            return jnp.ones_like(out)
        ct = jnp.asarray(grad_loss.value if isinstance(grad_loss, Variable) else grad_loss)
        if ct.shape != out.shape:
            raise ValueError(f"`grad_loss` has shape {ct.shape} but the loss has shape {out.shape}")
        return jnp.conj(ct.astype(out.dtype))  # TF's convention; the gradients come back conj.

    first = _Reads()
    values = [v._value for v in variables]
    out, vjp = jax.vjp(lambda vals: evaluate(vals, first), values)
    dense = [jnp.conj(g) for g in vjp(cotangent(out))[0]]
    grads: list[Any] = [
        dense[i] if k in first.dense or k in first.sparse else None for i, k in enumerate(keys)
    ]
    sparse_only = [i for i, k in enumerate(keys) if k in first.sparse and k not in first.dense]
    if sparse_only:
        plan = {
            keys[i]: [jnp.zeros((*s, *variables[i].shape[1:]), variables[i].dtype) for s in shapes]
            for i in sparse_only
            for shapes in [first.sparse[keys[i]]]
        }

        def evaluate_rows(vals, deltas):
            second = _Reads(deltas)
            out = evaluate(vals, second)
            return out, ({k: list(second.used.get(k, [])) for k in deltas}, sorted(second.dense))

        out, vjp, (used, dense_keys) = jax.vjp(evaluate_rows, values, plan, has_aux=True)
        dense, row_grads = vjp(cotangent(out))
        for i in sparse_only:
            key, n = keys[i], len(used[keys[i]])
            grads[i] = jnp.conj(dense[i]) if key in dense_keys else None  # also read densely
            if not n:
                continue
            indices = jnp.concatenate([jnp.asarray(ix, jnp.int32) for ix in used[key]])
            rows = jnp.conj(jnp.concatenate(row_grads[key][:n], axis=0))
            if key in dense_keys:
                grads[i] = grads[i].at[indices].add(rows.astype(grads[i].dtype))
            else:
                grads[i] = IndexedSlices(rows, indices, variables[i].shape)
    return list(zip(grads, variables, strict=True))
