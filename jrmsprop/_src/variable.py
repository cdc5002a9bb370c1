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

from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.validation import check_bool

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


def _python_scalar_dtype(value: Any) -> np.dtype | None:
    """The TF default dtype of Python data (scalars and nested lists), or None."""
    if type(value) in _PYTHON_DTYPES:
        return np.dtype(_PYTHON_DTYPES[type(value)])
    if isinstance(value, (list, tuple)):
        kinds = np.asarray(value).dtype.kind
        return np.dtype(
            {"b": np.bool_, "i": np.int32, "u": np.int32, "f": np.float32, "c": np.complex64}.get(
                kinds, np.float32
            )
        )
    return None


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
        try:
            value = as_array(initial_value, dtype)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"Variable: `initial_value` must be a number or an array of numbers, got "
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

    def _coerce(self, value: Any, what: str) -> jax.Array:
        if isinstance(value, Variable):
            value = value.value
        source = value.dtype if hasattr(value, "dtype") else _python_scalar_dtype(value)
        if source is None:
            source = np.asarray(value).dtype
        source = np.dtype(getattr(source, "as_numpy_dtype", source))  # TF DTypes too
        allowed = {"b": "biufc", "i": "iufc", "u": "iufc", "f": "fc", "c": "c"}
        if dtype_kind(self.dtype) not in allowed.get(dtype_kind(source), ""):
            raise TypeError(
                f"Variable {self._name!r}: cannot {what} a value of dtype {source} to a variable "
                f"of dtype {self.dtype}"
            )
        new = as_array(value, self.dtype)
        if new.shape != self._value.shape:
            raise ValueError(
                f"Variable {self._name!r}: cannot {what} a value of shape {tuple(new.shape)} to "
                f"a variable of shape {self.shape}"
            )
        return new

    def assign(
        self, value: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Replaces the value (same shape; cast to the variable's dtype). Returns the variable."""
        del use_locking, name
        self._store(self._coerce(value, "assign"))
        return self if read_value else None

    def assign_add(
        self, delta: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Adds ``delta`` to the value. Returns the variable."""
        del use_locking, name
        delta = self._coerce(delta, "add")
        self._store((self._value + delta).astype(self.dtype))
        return self if read_value else None

    def assign_sub(
        self, delta: Any, use_locking: Any = None, name: Any = None, read_value: bool = True
    ) -> Variable | None:
        """Subtracts ``delta`` from the value. Returns the variable."""
        del use_locking, name
        delta = self._coerce(delta, "subtract")
        self._store((self._value - delta).astype(self.dtype))
        return self if read_value else None

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
        array = value if is_jax else np.asarray(value)
        kind = dtype_kind(array.dtype)
        if kind not in ("fc" if is_jax else "iufc") or (
            kind == "c" and dtype_kind(var.dtype) != "c"
        ):
            raise TypeError(
                f"Gradient for variable {var.name!r} has dtype {array.dtype}, the variable "
                f"{var.dtype}"
            )
        return array if is_jax else jnp.array(array, dtype=var.dtype)

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
