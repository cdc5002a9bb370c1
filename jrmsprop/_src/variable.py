"""``jrmsprop.Variable``: a mutable holder of a ``jax.Array``, for the Keras-style optimizer.

JAX arrays are immutable; the stateful :class:`jrmsprop.RMSprop` needs something it can update in
place, as Keras updates a ``tf.Variable``. A :class:`Variable` is that: a named box around one
array whose value is *replaced* by ``assign`` and by the optimizer.

Buffer ownership. The optimizer *donates* a variable's current buffer to its compiled update (no
full-size copy), so an array previously read from ``v.value`` is deleted by the next
``apply_gradients``. Take a copy (``v.numpy()`` or ``jnp.copy(v.value)``) to keep an old value.
For the same reason the constructor and :meth:`Variable.assign` copy what they are given: the
caller's array is never donated away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src.sparse import IndexedSlices, check_index_range
from jrmsprop._src.validation import abbreviated, check_bool

__all__ = ["Variable", "as_gradient"]

# TF's rules for Python data: float -> float32, int -> int32 (tf.convert_to_tensor).
_PYTHON_DTYPES = {bool: np.bool_, int: np.int32, float: np.float32, complex: np.complex64}

# Keras' enum values for `synchronization` / `aggregation`, by lower-case name.
SYNCHRONIZATIONS = ("auto", "none", "on_write", "on_read")
AGGREGATIONS = ("none", "sum", "mean", "only_first_replica")


def canonical_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as JAX will store it (64-bit types narrowed unless x64 is enabled), silently."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype)))


def dtype_kind(dtype: Any) -> str:
    """NumPy's kind letter ('b', 'i', 'u', 'f', 'c', ...), with bfloat16 & co. counted as 'f'."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V" and jnp.issubdtype(dtype, jnp.floating):
        return "f"
    return dtype.kind


_INT32 = np.iinfo(np.int32)


def _python_int_dtype(array: np.ndarray) -> np.dtype:
    """TF's dtype for Python ints: int32 when every value fits, else int64."""
    if array.size and not (_INT32.min <= array.min() and array.max() <= _INT32.max):
        return np.dtype(np.int64)
    return np.dtype(np.int32)


def _python_scalar_dtype(value: Any, exact: np.ndarray | None = None) -> np.dtype | None:
    """The TF default dtype of Python data (scalars and nested lists), or None.

    ``exact`` is ``value`` as a NumPy array (computed here when not given).
    """
    if type(value) not in _PYTHON_DTYPES and not isinstance(value, (list, tuple)):
        return None
    if exact is None:
        exact = np.asarray(value)
    kind = "i" if exact.dtype.kind == "O" else exact.dtype.kind
    if kind in "iu":
        return _python_int_dtype(exact)
    return np.dtype({"b": np.bool_, "f": np.float32, "c": np.complex64}.get(kind, np.float32))


def exact_array(value: Any, what: str) -> Any:
    """``value`` as an array that holds it exactly, for the checks before a conversion.

    A ``jax.Array`` (or a Variable's value) as it is; anything else as a NumPy array of its own
    dtype (Python ints as int64, or as an object array beyond 64 bits). Raises a ``TypeError``
    that starts with ``what`` for ragged nested sequences and for anything that is not numbers.
    """
    if isinstance(value, Variable):
        value = value.value
    if isinstance(value, jax.Array):
        return value
    try:
        array = np.asarray(value)
    except ValueError as e:  # NumPy: "setting an array element with a sequence"
        ragged = "inhomogeneous" in str(e) or "with a sequence" in str(e)
        got = (
            "a ragged nested list (sub-lists of different lengths)"
            if ragged
            else (f"{type(value).__name__} ({e})")
        )
        raise TypeError(f"{what} must be an array of numbers, got {got}") from e
    except TypeError as e:
        raise TypeError(
            f"{what} must be an array of numbers, got {type(value).__name__} ({e})"
        ) from e
    if array.dtype.kind == "O" and array.size:
        if all(type(x) is int for x in array.flat):
            return array  # Python ints beyond 64 bits
        if all(isinstance(x, (int, float, complex, np.number)) for x in array.flat):
            # numbers mixed with ints beyond 64 bits ([0.5, 2**70]): as floating point
            complex_ = any(isinstance(x, (complex, np.complexfloating)) for x in array.flat)
            try:
                return array.astype(np.complex128 if complex_ else np.float64)
            except OverflowError as e:
                raise ValueError(f"{what}: {e}") from e
    if array.dtype.kind == "O" or not (
        dtype_kind(array.dtype) in "biufc" or jnp.issubdtype(array.dtype, jnp.number)
    ):
        if value is None or isinstance(value, (str, bytes)):
            got = abbreviated(repr(value), 80)
        elif array.dtype.kind == "O":
            got = type(value).__name__
        else:
            got = f"{type(value).__name__} of dtype {array.dtype}"
        raise TypeError(f"{what} must be an array of numbers, got {got}")
    return array


def _source_kind(dtype: Any) -> str:
    return "i" if np.dtype(dtype).kind == "O" else dtype_kind(dtype)


def _lossy(source: Any, target: np.dtype) -> bool:
    """Whether converting ``source`` values to ``target`` can lose more than the rounding of a
    floating-point conversion (so the values must be checked)."""
    source = np.dtype(source)
    if source == target:
        return False
    s, t = _source_kind(source), dtype_kind(target)
    if source.kind == "O":
        return True
    if t == "b":
        return s != "b"
    if t in "iu":
        if s == "b":
            return False
        if s in "iu":
            si, ti = np.iinfo(source), np.iinfo(target)
            return bool(si.min < ti.min or si.max > ti.max)
        return True
    if t in "fc":
        if s == "c":
            return t != "c"
        if s in "iu":
            return bool(np.iinfo(source).max > float(jnp.finfo(target).max))
    return False


def check_representable(exact: Any, target: Any, what: str, requested: Any = None) -> None:
    """Refuses values that ``target`` cannot hold: integers out of its range, NaN, inf and
    fractions for an integer dtype, values other than 0 and 1 for bool, integers beyond a float
    dtype's range, and complex numbers for a real dtype.

    ``exact`` is from :func:`exact_array`; ``what`` starts the message (it names the variable
    and the argument); ``requested`` is the dtype asked for, when JAX narrowed it to ``target``.
    The rounding of floating-point values (float64 to float32) is not a loss.
    """
    target = np.dtype(target)
    if not _lossy(exact.dtype, target):
        return
    s, t = _source_kind(exact.dtype), dtype_kind(target)
    if s == "c" and t != "c":
        raise TypeError(
            f"{what}: a complex value cannot be stored in dtype {target} (the imaginary part "
            "would be dropped)"
        )
    flat = np.asarray(exact).reshape(-1)
    if not flat.size:
        return
    if s == "f":
        flat = flat.astype(np.float64)
    if t == "b":
        bad = ~np.asarray((flat == 0) | (flat == 1), bool)
        reason = "only 0 and 1 can be stored as booleans"
    elif t in "iu":
        info = np.iinfo(target)
        low, high = float(info.min), float(info.max) + 1.0  # exact in float64
        if s == "f":
            bad = ~np.isfinite(flat) | (flat != np.trunc(flat)) | (flat < low) | (flat >= high)
        else:
            bad = np.asarray((flat < info.min) | (flat > info.max), bool)
        reason = f"it holds integers in [{info.min}, {info.max}]"
    else:
        limit = float(jnp.finfo(target).max)
        bad = np.asarray(abs(flat) > limit, bool)
        reason = f"its largest finite value is {limit:g}"
    if bad.any():
        value = flat[int(np.argmax(bad))]
        value = value.item() if isinstance(value, np.generic) else value
        if requested is not None and np.dtype(requested) != target:
            reason += f"; {np.dtype(requested)} is stored as {target} while JAX's x64 mode is off"
        raise ValueError(f"{what}: {value!r} cannot be represented in dtype {target} ({reason})")


def as_array(value: Any, dtype: Any = None, *, copy: bool = True) -> jax.Array:
    """Converts ``value`` (number, list, NumPy/JAX array, TF tensor, Variable) to a jax.Array.

    With ``dtype`` None the dtype follows TF: Python floats become float32 and Python ints int32;
    arrays keep theirs (64-bit narrowed to 32-bit when JAX's x64 mode is off). With ``copy`` the
    result never shares a buffer with the input.
    """
    if isinstance(value, Variable):
        value = value.value
    if dtype is None:
        dtype = _python_scalar_dtype(value)
    if dtype is None:
        dtype = value.dtype if isinstance(value, jax.Array) else np.asarray(value).dtype
    dtype = canonical_dtype(dtype)
    if isinstance(value, jax.Array):
        if value.dtype == dtype:
            return jnp.array(value, copy=True) if copy else value
        return value.astype(dtype)  # a new buffer
    return jnp.array(np.asarray(value), dtype=dtype)  # always a new device buffer


def _exact_integer_op(a: np.ndarray, b: np.ndarray, add: bool) -> np.ndarray:
    """``a + b`` (or ``a - b``) of integer (or bool) arrays, without wrapping: int64 when the
    result fits, else Python ints (an object array)."""
    if a.dtype.kind != "O" and b.dtype.kind != "O" and np.uint64 not in (a.dtype, b.dtype):
        x, y = a.astype(np.int64), b.astype(np.int64)
        result = x + y if add else x - y
        # two's-complement overflow: the result's sign differs from both (add) / from x and -y
        overflow = ((x ^ result) & ((y if add else ~y) ^ result)) < 0
        if not overflow.any():
            return result
    a, b = a.astype(object), b.astype(object)
    result = np.asarray(a + b if add else a - b, dtype=object)
    if all(-(2**63) <= int(v) < 2**63 for v in result.flat):
        return result.astype(np.int64)
    return result


# ---- the hook of RMSprop.minimize -------------------------------------------------------------

# While ``minimize`` computes gradients, a recorder (jrmsprop._src.minimize) is installed here and
# every read of a Variable is reported to it (``read`` / ``sparse_read``).
_local = threading.local()


def _recorder() -> Any:
    return getattr(_local, "recorder", None)


# ---- the Variable -----------------------------------------------------------------------------


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False):
    def method(self: Variable, other: Any) -> Any:
        if isinstance(other, Variable):
            other = other.value
        return op(other, self.value) if reflected else op(self.value, other)

    return method


def _unary(op: Callable[[Any], Any]):
    def method(self: Variable) -> Any:
        return op(self.value)

    return method


class Variable:
    """A mutable, named holder of a ``jax.Array`` (the JAX counterpart of ``tf.Variable``).

    Args:
      initial_value: the first value: a number, nested list, NumPy/JAX array, TF tensor, another
        Variable, or a callable of no arguments returning one. It is copied.
      name: the variable's name (default ``"Variable"``); the optimizer names slots after it.
      dtype: the dtype to store (default: float32 for Python floats, int32 for Python ints, an
        array's own dtype otherwise; 64-bit types are narrowed unless JAX's x64 mode is on).
      trainable: ``True`` or ``False``, recorded for Keras compatibility (JAX does not consult
        it). The default, ``None``, means True unless ``synchronization`` is ``"on_read"``, as
        in ``tf.Variable`` (which, unlike ``add_weight``, also accepts an explicit True with
        ``"on_read"``).
      synchronization: Keras/TF ``VariableSynchronization`` value (``"auto"``, ``"none"``,
        ``"on_write"``, ``"on_read"``, or the enum); recorded only -- a single-process JAX
        program has no replicas to synchronise.
      aggregation: Keras/TF ``VariableAggregation`` value (``"none"``, ``"sum"``, ``"mean"``,
        ``"only_first_replica"``, or the enum); recorded only, for the same reason.

    A Variable converts to arrays: ``np.asarray(v)`` (``__array__``, a copy), ``jnp.asarray(v)``
    (``__jax_array__``), and supports arithmetic, indexing and comparisons, which return plain
    ``jax.Array`` values. Recent JAX releases no longer call ``__jax_array__`` inside ``jnp``
    functions themselves (``jnp.sin(v)`` raises), so pass ``v.value`` to them. ``==`` is
    identity (Variables are hashable, like Python objects), not elementwise.

    Example:
      >>> import jrmsprop
      >>> v = jrmsprop.Variable([1.0, 2.0], name="w")
      >>> v.assign_add([0.5, 0.5]).numpy()
      array([1.5, 2.5], dtype=float32)
      >>> (2 * v).dtype
      dtype('float32')
    """

    __array_priority__ = 100  # NumPy defers binary operators to ours

    # Optional check of every assigned value (the optimizer's ``iterations`` and hyperparameter
    # Variables refuse out-of-range values); raises before the value changes.
    _check: Callable[[jax.Array], None] | None = None

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
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError as e:
                raise TypeError(f"Variable: `dtype` must be a dtype, got {dtype!r}") from e
        what = f"Variable {name if name is not None else 'Variable'!r}: `initial_value`"
        exact = exact_array(initial_value, what)
        requested = dtype
        if requested is None:
            requested = _python_scalar_dtype(initial_value, exact)
        if requested is None:
            requested = np.dtype(np.int64) if exact.dtype.kind == "O" else exact.dtype
        target = canonical_dtype(requested)
        check_representable(exact, target, what, requested)
        if exact.dtype.kind == "O":  # Python ints beyond 64 bits, checked: a float dtype holds them
            exact = exact.astype(np.float64)
        try:
            value = as_array(exact, target)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{what} must be a number or an array of numbers, got "
                f"{type(initial_value).__name__} ({e})"
            ) from e
        synchronization = enum_name("synchronization", synchronization, SYNCHRONIZATIONS)
        if trainable is None:  # TF: trainable unless synchronised on read
            trainable = synchronization != "on_read"
        else:
            trainable = check_bool("trainable", trainable)
        self._value = value
        self._name = name if name is not None else "Variable"
        self._trainable = trainable
        self._synchronization = synchronization
        self._aggregation = enum_name("aggregation", aggregation, AGGREGATIONS)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def value(self) -> jax.Array:
        """The current value (the live buffer: invalidated when the optimizer donates it)."""
        recorder = _recorder()
        if recorder is not None:
            recorder.read(self)
        return self._value

    def read_value(self) -> jax.Array:
        """The current value (``tf.Variable.read_value``)."""
        return self.value

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the current value."""
        return np.array(self.value, copy=True)

    def sparse_read(self, indices: Any, name: str | None = None) -> jax.Array:
        """Rows ``indices`` of the variable (``tf.Variable.sparse_read`` / an embedding lookup).

        Under :meth:`jrmsprop.RMSprop.minimize`, a variable that the loss reads *only* this way
        gets an :class:`jrmsprop.IndexedSlices` gradient (as TF's gather gradient), so it takes
        the sparse update path (lazy rows with momentum).
        """
        del name
        recorder = _recorder()
        if recorder is not None:
            return recorder.sparse_read(self, jnp.asarray(indices))
        return jnp.take(self._value, jnp.asarray(indices), axis=0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._value.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    @property
    def ndim(self) -> int:
        return self._value.ndim

    @property
    def size(self) -> int:
        return int(self._value.size)

    @property
    def name(self) -> str:
        return self._name

    @property
    def trainable(self) -> bool:
        return self._trainable

    @property
    def synchronization(self) -> str:
        """The Keras ``VariableSynchronization`` name given at creation (informational)."""
        return self._synchronization

    @property
    def aggregation(self) -> str:
        """The Keras ``VariableAggregation`` name given at creation (informational)."""
        return self._aggregation

    # -- writing ---------------------------------------------------------------------------------

    def _coerce(self, value: Any, what: str) -> Any:
        """``value`` as an exact array (see :func:`exact_array`) after checking that it is numbers
        of this variable's shape and of a kind of number its dtype accepts; not yet converted."""
        exact = exact_array(value, f"Variable {self._name!r}: the value to {what}")
        source = exact.dtype
        allowed = {"b": "biufc", "i": "iufc", "u": "iufc", "f": "fc", "c": "c"}
        if dtype_kind(self.dtype) not in allowed.get(_source_kind(source), ""):
            raise TypeError(
                f"Variable {self._name!r}: cannot {what} a value of dtype {source} to a variable "
                f"of dtype {self.dtype}"
            )
        if tuple(exact.shape) != self._value.shape:
            raise ValueError(
                f"Variable {self._name!r}: cannot {what} a value of shape {tuple(exact.shape)} "
                f"to a variable of shape {self.shape}"
            )
        return exact

    def _convert(self, exact: Any, what: str) -> jax.Array:
        """An exact array (from :meth:`_coerce`) in this variable's dtype, after the variable's
        own check (``iterations``' range, a hyperparameter's) of the value before it is narrowed
        and the check that the dtype can represent it."""
        if self._check is not None and _lossy(exact.dtype, self.dtype):
            # e.g. iterations = 2**32 (or 2**70, an object array of Python ints) names
            # `iterations`, before int32 wraps
            self._check(exact)
        check_representable(exact, self.dtype, f"Variable {self._name!r}: {what}")
        if exact.dtype.kind == "O":  # Python ints beyond 64 bits, checked: a float dtype holds them
            exact = exact.astype(np.float64)
        return as_array(exact, self.dtype)

    def assign(
        self, value: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Replaces the value (same shape; cast to the variable's dtype). Returns the variable.

        A value the dtype cannot represent (an integer out of range, NaN for an integer
        variable) is refused, as by ``tf.Variable.assign``."""
        del use_locking, name
        self._store(self._convert(self._coerce(value, "assign"), "the value to assign"))
        return self if read_value else None

    def assign_add(
        self, delta: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Adds ``delta`` to the value. Returns the variable.

        For an integer variable a sum out of the dtype's range is refused (it does not wrap)."""
        del use_locking, name
        self._store(self._combine(delta, "add"))
        return self if read_value else None

    def assign_sub(
        self, delta: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Subtracts ``delta`` from the value. Returns the variable (an integer variable refuses
        a difference out of the dtype's range)."""
        del use_locking, name
        self._store(self._combine(delta, "subtract"))
        return self if read_value else None

    def _combine(self, delta: Any, what: str) -> jax.Array:
        """The value plus (``what="add"``) or minus ``delta``, in the variable's dtype."""
        exact = self._coerce(delta, what)
        if dtype_kind(self.dtype) not in "biu":
            delta = self._convert(exact, f"the value to {what}")
            new = self._value + delta if what == "add" else self._value - delta
            return new.astype(self.dtype)
        # Integers: the exact result, checked before it is narrowed to the dtype.
        old = np.asarray(self._value)
        result = _exact_integer_op(old, np.asarray(exact), what == "add")
        return self._convert(result, "the sum" if what == "add" else "the difference")

    def _store(self, value: jax.Array) -> None:
        if self._check is not None:
            self._check(value)
        self._value = value

    def _replace(self, value: jax.Array) -> None:
        """Installs a new buffer without copying (the optimizer's outputs)."""
        self._value = value

    # -- conversions -----------------------------------------------------------------------------

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        del copy  # always a copy: a view would pin the buffer and block donation
        array = np.array(self.value, copy=True)
        return array if dtype is None else array.astype(dtype)

    def __jax_array__(self) -> jax.Array:
        return self.value

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return self.value.__index__()

    def __complex__(self) -> complex:
        return complex(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __len__(self) -> int:
        if not self._value.shape:
            raise TypeError("len() of a 0-d Variable")
        return self._value.shape[0]

    def __iter__(self) -> Iterator[jax.Array]:
        return iter(self.value)

    def __getitem__(self, index: Any) -> jax.Array:
        return self.value[index]

    def __repr__(self) -> str:
        return (
            f"<jrmsprop.Variable {self._name!r} shape={self.shape} dtype={self.dtype.name}, "
            f"numpy={np.array(self._value)!r}>"
        )

    __hash__ = object.__hash__

    __add__ = _binary(lambda a, b: a + b)
    __radd__ = _binary(lambda a, b: a + b, reflected=True)
    __sub__ = _binary(lambda a, b: a - b)
    __rsub__ = _binary(lambda a, b: a - b, reflected=True)
    __mul__ = _binary(lambda a, b: a * b)
    __rmul__ = _binary(lambda a, b: a * b, reflected=True)
    __truediv__ = _binary(lambda a, b: a / b)
    __rtruediv__ = _binary(lambda a, b: a / b, reflected=True)
    __floordiv__ = _binary(lambda a, b: a // b)
    __rfloordiv__ = _binary(lambda a, b: a // b, reflected=True)
    __mod__ = _binary(lambda a, b: a % b)
    __rmod__ = _binary(lambda a, b: a % b, reflected=True)
    __pow__ = _binary(lambda a, b: a**b)
    __rpow__ = _binary(lambda a, b: a**b, reflected=True)
    __matmul__ = _binary(lambda a, b: a @ b)
    __rmatmul__ = _binary(lambda a, b: a @ b, reflected=True)
    __lt__ = _binary(lambda a, b: a < b)
    __le__ = _binary(lambda a, b: a <= b)
    __gt__ = _binary(lambda a, b: a > b)
    __ge__ = _binary(lambda a, b: a >= b)
    __neg__ = _unary(lambda a: -a)
    __pos__ = _unary(lambda a: +a)
    __abs__ = _unary(abs)


def enum_name(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Normalises a Keras/TF enum value (a string, or an enum with ``.name``) to lower case."""
    name = getattr(value, "name", value)
    if not isinstance(name, str) or name.lower() not in allowed:
        raise ValueError(f"`{what}` must be one of {allowed} (or the TF enum), got {value!r}")
    return name.lower()


def as_gradient(grad: Any, var: Variable) -> Any:
    """One gradient as a jax.Array or IndexedSlices of the variable's shape (else an error)."""

    def values(value: Any) -> jax.Array:
        if isinstance(value, Variable):
            value = value.value
        is_jax = isinstance(value, jax.Array)
        array = exact_array(value, f"Gradient for variable {var.name!r}")
        kind = _source_kind(array.dtype)
        if kind not in ("fc" if is_jax else "iufc") or (
            kind == "c" and dtype_kind(var.dtype) != "c"
        ):
            raise TypeError(
                f"Gradient for variable {var.name!r} has dtype {array.dtype}, the variable "
                f"{var.dtype}"
            )
        if is_jax:
            return array
        check_representable(array, var.dtype, f"Gradient for variable {var.name!r}")
        if array.dtype.kind == "O":
            array = array.astype(np.float64)
        return jnp.array(array, dtype=var.dtype)

    if (
        type(grad) is IndexedSlices
        and isinstance(grad.values, jax.Array)
        and isinstance(grad.indices, jax.Array)
        and grad.dense_shape == var.shape
        and grad.values.dtype == var.dtype
        and grad.indices.ndim == 1
        and dtype_kind(grad.indices.dtype) in "iu"
        and grad.values.shape == (*grad.indices.shape, *var.shape[1:])
    ):
        # Already what the step takes (the common case: JAX arrays of the variable's dtype):
        # only the range of concrete indices is checked again, since an IndexedSlices rebuilt
        # by a tree utility never ran its constructor's checks.
        check_index_range(grad.indices, var.shape[0])
        return grad
    if isinstance(grad, IndexedSlices):
        indices = grad.indices if isinstance(grad.indices, jax.Array) else jnp.asarray(grad.indices)
        result = IndexedSlices(values(grad.values), indices, grad.dense_shape)
        shape = tuple(result.dense_shape)
    elif all(hasattr(grad, a) for a in ("values", "indices", "dense_shape")):
        # tf.IndexedSlices and lookalikes: TF ignores dense_shape; the variable's shape rules.
        result = IndexedSlices(
            values(grad.values), jnp.asarray(np.asarray(grad.indices)), var.shape
        )
        shape = var.shape
    else:
        result = values(grad)
        shape = tuple(result.shape)
    if isinstance(result, IndexedSlices) and (
        result.indices.ndim != 1 or dtype_kind(result.indices.dtype) not in "iu"
    ):
        raise TypeError(f"Gradient for variable {var.name!r}: indices must be 1-d integers")
    if shape != var.shape:
        raise ValueError(
            f"Gradient for variable {var.name!r} has shape {shape}, the variable {var.shape}"
        )
    return result
