"""Argument checks shared by every entry point (functional core, presets, wrapper, Keras 3).

One place decides what a valid hyperparameter is, so the error a user sees is the same whichever
API they called, and it always names the argument as *they* wrote it (``alpha`` for the PyTorch
preset, ``decay`` for TF1's ρ, ``learning_rate`` for the core).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

#: The largest step count: the count is int32 (TF's and optax's), and never wraps around.
INT32_MAX = int(np.iinfo(np.int32).max)

# Valid ranges (inclusive) of the hyperparameters, by their name in the core.
# ``finite``: inf is refused too (an infinite ε or learning rate turns parameters into NaN).
RANGES: dict[str, tuple[float, float | None]] = {
    "learning_rate": (0.0, None),
    "rho": (0.0, 1.0),
    "momentum": (0.0, 1.0),
    "epsilon": (0.0, None),
    "decay": (0.0, None),
    "weight_decay": (0.0, None),
    "initial_rms": (0.0, None),
    "one_minus_rho": (0.0, 1.0),
    # gradient-clipping thresholds (an infinite clipnorm turns every gradient into inf/inf = NaN)
    "clip": (0.0, None),
}


# A framework's own checks, by its argument names: ``(message, refuses)``. Where the framework
# refuses a value too, an entry point with its API raises its ValueError with its text first, so
# code that matches the message keeps working (``{value}``: as given, ``{type}``: its type).
FrameworkChecks = Mapping[str, tuple[str, Callable[[float], bool]]]

# tf_keras.optimizers.legacy.RMSprop (OptimizerV2)
KERAS2_MESSAGES: FrameworkChecks = {
    "momentum": (
        "`momentum` must be between [0, 1]. Received: momentum={value} (of type {type}).",
        lambda x: x < 0 or x > 1,
    ),
    **{
        name: (f"Expected {name} >= 0, received: {{value}}", lambda x: x < 0)
        for name in ("lr", "decay", "clipnorm", "clipvalue", "global_clipnorm")
    },
}
# torch.optim.RMSprop (``if not 0.0 <= lr``: NaN refused too)
TORCH_MESSAGES: FrameworkChecks = {
    name: (f"Invalid {what}: {{value}}", lambda x: not 0 <= x)
    for name, what in (
        ("lr", "learning rate"),
        ("eps", "epsilon value"),
        ("alpha", "alpha value"),
        ("momentum", "momentum value"),
        ("weight_decay", "weight_decay value"),
    )
}


# The largest finite float32: a larger number becomes inf where it is used as a float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def x64_enabled() -> bool:
    """Whether JAX computes in 64 bits now (``jax_enable_x64``, also as a context manager)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


# tf.keras.backend.epsilon(): what Keras 2 stores for ``epsilon`` given as 0 or None
# (``self.epsilon = epsilon or backend.epsilon()``).
KERAS_EPSILON = 1e-7


def abbreviated(value: Any, limit: int = 400) -> str:
    """``str(value)``, its middle cut out when it is longer than ``limit`` characters.

    Error messages quote tree structures and JAX's own messages, which list every leaf: for a
    model with thousands of leaves that is hundreds of kilobytes. The start and the end are what
    tell the structures apart.
    """
    text = str(value)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} ... [{len(text) - 2 * half} characters left out] ... {text[-half:]}"


def tree_description(treedef: Any) -> str:
    """A tree structure for an error message: abbreviated, with its number of leaves."""
    return f"{abbreviated(treedef)} with {treedef.num_leaves} leaves"


def _describe(low: float, high: float | None) -> str:
    return f"in [{low:g}, {high:g}]" if high is not None else f"finite and >= {low:g}"


def is_schedule(value: Any) -> bool:
    """Whether a hyperparameter value is a schedule (a callable that is not an array)."""
    return callable(value) and not hasattr(value, "shape")


def concrete_scalar(name: str, value: Any) -> float | None:
    """``value`` as a Python float, or None when it is traced (or a schedule).

    Raises a ``TypeError`` naming ``name`` for ``None``, booleans, strings, complex and integer-
    less garbage, and a ``ValueError`` for arrays that are not 0-d.
    """
    if is_schedule(value):
        return None
    if value is None:
        raise TypeError(f"`{name}` must be a real number, got None")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real number, got the boolean {value!r}")
    if isinstance(value, int):  # a Python int of any size (NumPy has no dtype above 2**64)
        try:
            return float(value)
        except OverflowError:
            raise ValueError(
                f"`{name}` must be a finite number, got an integer of {len(str(abs(value)))} "
                "digits, too large even for a float64"
            ) from None
    if isinstance(value, jax.core.Tracer):
        if jnp.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar (0-d), got shape {jnp.shape(value)}")
        check_real_dtype(name, value.dtype)
        return None
    try:
        array = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a real number, got {value!r}") from e
    if (
        array.dtype == object
        or array.dtype.kind in "US"
        or (array.dtype.kind == "V" and not jnp.issubdtype(array.dtype, jnp.floating))
    ):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    if array.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar (0-d), got shape {array.shape}")
    check_real_dtype(name, array.dtype)
    return float(array)


def check_real_dtype(name: str, dtype: Any) -> None:
    """Refuses booleans, complex and non-numeric dtypes for a hyperparameter ``name``."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bool_ or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise TypeError(f"`{name}` must be a real number, got dtype {dtype.name}")


def check_range(name: str, scalar: float, kind: str | None = None, float32: bool = False) -> float:
    """Raises a ``ValueError`` naming ``name`` unless ``scalar`` lies in the range of ``kind``.

    Finite means finite where the value is used, which is float32 unless JAX computes in 64
    bits: a number whose magnitude exceeds float32's largest (about 3.4e38, e.g. ``1e39``) is
    refused when

    * ``float32`` is set: the framework stores the hyperparameter as a float32 value whatever
      the parameters' dtype (``Rule.float32_hyperparameters``: TF 2.x Keras's learning rate, ρ,
      momentum and ``decay``, ...), so it would be inf even for float64 parameters; or
    * JAX's x64 mode is off (the default, checked when the value is checked): every array is
      then at most float32, so the value becomes inf (an inf learning rate or weight decay
      gives inf/NaN steps, an inf ε freezes the parameters).

    With x64 on, a value that is not stored as float32 may exceed float32's range: float64
    parameters use it as it is (float32 parameters would see inf; that is not checked, as the
    dtype is only known at ``update``).
    """
    low, high = RANGES[kind or name]
    if (
        math.isnan(scalar)
        or math.isinf(scalar)
        or scalar < low
        or (high is not None and scalar > high)
    ):
        raise ValueError(f"`{name}` must be {_describe(low, high)}, got {scalar}")
    if abs(scalar) > FLOAT32_MAX and (float32 or not x64_enabled()):
        why = (
            "it is used as a float32 value"
            if float32
            else "JAX computes in float32 (enable jax_enable_x64 for float64 parameters)"
        )
        raise ValueError(
            f"`{name}` must be at most {FLOAT32_MAX:g}, the largest float32, got {scalar:g}: "
            f"{why}, where it would be inf"
        )
    return scalar


def check_hyperparameter(
    name: str,
    value: Any,
    kind: str | None = None,
    float32: bool = False,
    messages: FrameworkChecks | None = None,
) -> float | None:
    """Checks one hyperparameter; returns its value when concrete, else None (traced, schedule).

    Args:
      name: the argument's name as the user wrote it (used in the error message).
      value: a number, a 0-d array, a tracer, or a schedule (callable).
      kind: which range applies (a key of :data:`RANGES`); defaults to ``name``.
      float32: the value is used as a float32 whatever the parameters' dtype (see
        :func:`check_range`).
      messages: the framework's checks by argument name (:data:`KERAS2_MESSAGES`,
        :data:`TORCH_MESSAGES`): a value out of range that the framework refuses too raises
        the ``ValueError`` with the framework's message.
    """
    scalar = concrete_scalar(name, value)
    if scalar is None:
        return None
    try:
        return check_range(name, scalar, kind, float32)
    except ValueError as e:
        template, refuses = (messages or {}).get(name, ("", lambda _: False))
        if not refuses(scalar):
            raise
        raise ValueError(f"{template.format(value=value, type=type(value))} ({e})") from None


def legacy_lr(learning_rate: Any, kwargs: dict[str, Any]) -> Any:
    """The learning rate, given Keras 2's deprecated ``lr`` keyword (removed from ``kwargs``).

    ``tf_keras.optimizers.legacy``'s rule: ``lr`` (checked, unless None) replaces
    ``learning_rate``, with Keras's ``UserWarning``. Keras 3 (and ``compat.keras3``) refuse it.
    """
    if "lr" not in kwargs:
        return learning_rate
    lr = kwargs.pop("lr")
    if lr is not None:
        check_hyperparameter("lr", lr, "learning_rate", float32=True, messages=KERAS2_MESSAGES)
    warnings.warn("The `lr` argument is deprecated, use `learning_rate` instead.", stacklevel=3)
    return learning_rate if lr is None else lr


def jit_value(value: Any, scalar: float | None) -> Any:
    """A checked hyperparameter ``value`` as a factory passes it on into ``jit``.

    An integer that is not a JAX array (a Python int, a NumPy integer scalar or 0-d array)
    becomes ``scalar``, its checked value as a Python float, so it has the precision of a Python
    number: ``jit`` would otherwise narrow an int64 to int32 with x64 off (``2**32`` becomes 0,
    ``2**31`` negative) or refuse a Python int >= 2**31 only when the update runs. Everything
    else is returned as it is (``scalar`` is None for a traced value or a schedule).
    """
    if scalar is None or isinstance(value, jax.Array):
        return value
    if isinstance(value, int) or np.asarray(value).dtype.kind in "iu":
        return scalar
    return value


def check_schedule_signature(name: str, schedule: Any) -> None:
    """Refuses a schedule for ``name`` that cannot be called with one positional argument.

    As in optax, a schedule is a function of the step count, ``schedule(count)``. A Keras-style
    callable without arguments (``lambda: 0.1``) would fail deep inside the first ``update``;
    this names the argument at construction. A callable whose signature Python cannot read
    (some built-ins) is accepted as it is.
    """
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(0)
    except TypeError:
        raise TypeError(
            f"the schedule given as `{name}` must take the step count as its one positional "
            f"argument (`schedule(count)`, as in optax), but its signature is {signature}; for "
            "a constant, pass the number itself"
        ) from None


def check_bool(name: str, value: Any) -> bool:
    """Refuses anything but ``True``/``False`` (``'no'``, ``1``, ``None``) for flag ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"`{name}` must be True or False, got {value!r}")


def check_schedule_value(
    name: str, value: Any, kind: str | None = None, float32: bool = False
) -> jax.Array:
    """The value a schedule returned for ``name``, checked while tracing.

    It must be a 0-d floating-point value (an integer or boolean schedule is refused: it would
    silently truncate). A concrete value (anything but a JAX tracer: a Python or NumPy number,
    or a JAX array) is also range-checked, as :func:`check_range` with ``float32``.
    """
    concrete = not isinstance(value, jax.core.Tracer)
    is_array = isinstance(value, (jax.core.Tracer, jax.Array))
    dtype = value.dtype if is_array else np.asarray(value).dtype
    shape = np.shape(value)
    if shape != ():
        raise ValueError(f"the schedule given as `{name}` must return a scalar, got shape {shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"the schedule given as `{name}` must return a floating-point number, got dtype "
            f"{jnp.dtype(dtype).name}"
        )
    if concrete:  # a number or a JAX array that does not depend on the step: check the range
        check_schedule_range(name, value, kind, float32)
    return jnp.asarray(value)


def check_schedule_range(
    name: str, value: Any, kind: str | None = None, float32: bool = False
) -> None:
    """The range check of a concrete schedule output (see :func:`check_schedule_value`)."""
    try:
        check_range(name, float(np.asarray(value)), kind, float32)
    except ValueError as e:
        raise ValueError(f"the schedule given as `{name}` returned a bad value: {e}") from None


def _first(mask: np.ndarray, values: np.ndarray) -> str:
    """``value at index`` of the first ``True`` in ``mask``, for a message."""
    at = np.unravel_index(int(np.argmax(mask)), mask.shape)
    where = f" at index {list(map(int, at))}" if mask.ndim else ""
    return f"{str(values[at])}{where}"


def slot_values(label: str, values: np.ndarray, dtype: Any, squares: bool) -> np.ndarray:
    """``values`` (a NumPy array) converted to a slot's ``dtype``, refused where the conversion
    would change them beyond rounding: a finite value beyond the dtype's range (it would become
    inf) and, for a slot of squares (``rms``), a negative value (the next step takes its square
    root). NaN and inf are kept: they are what a framework's state holds after a NaN or
    overflowing gradient. The ``ValueError`` starts with ``label`` (the slot and its source).

    The one check of slot values loaded from outside: the saved-state loaders and the stateful
    wrapper's ``set_weights`` / ``state`` setter.
    """
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(values, dtype=dtype)  # what jnp.asarray(values, dtype) does
    overflow = np.isfinite(values) & ~np.isfinite(converted)
    if np.any(overflow):
        raise ValueError(
            f"{label} holds {_first(overflow, values)}, beyond the range of the slot's dtype "
            f"{dtype.name}, where it would become inf; a finite value must fit the slot's dtype "
            "(NaN and inf are loaded as they are)"
        )
    if squares:
        negative = np.zeros(converted.shape, bool)
        for part in (np.real(converted), np.imag(converted)) if dtype.kind == "c" else (converted,):
            negative |= part < 0
        if np.any(negative):
            raise ValueError(
                f"{label} holds the negative value {_first(negative, converted)}; this slot is "
                "a running average of squared gradients and must be >= 0 (or NaN)"
            )
    return converted


def as_jit_scalar(value: Any) -> Any:
    """A checked hyperparameter value as a 0-d array whose dtype is stable per kind of value.

    Python numbers keep Python precision (float64 where JAX stores it; the core then applies the
    framework's precision rule, e.g. TF's float32 hyperparameters); arrays keep their dtype
    (integers become float32). So it can be a ``jit`` argument that never recompiles when the
    value changes. ``value`` must already be checked (a real scalar).
    """
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) or not isinstance(
        value, (int, float)
    ):
        array = value if isinstance(value, jax.Array) else np.asarray(value)
        if not jnp.issubdtype(array.dtype, jnp.floating):
            return array.astype(np.float32)
        if isinstance(array, jax.Array):  # weak typing dropped (a dispatch only when needed)
            return array.astype(array.dtype) if array.weak_type else array
        return np.asarray(array, jax.dtypes.canonicalize_dtype(array.dtype))
    return np.asarray(value, jax.dtypes.canonicalize_dtype(np.float64))
