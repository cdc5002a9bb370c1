"""Argument checks shared by every entry point, so that an error names the argument as the user
wrote it (``alpha`` for ``compat.torch``, ``decay`` for TF1's ρ) whichever API they called."""

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

#: The largest step count: the count is int32 (TF's and optax's) and never wraps around.
INT32_MAX = int(np.iinfo(np.int32).max)
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: tf.keras.backend.epsilon(): Keras 2's ε for ``epsilon`` 0 or None (``epsilon or epsilon()``).
KERAS_EPSILON = 1e-7

# Valid ranges (inclusive; None: no upper bound but finite), by the core's name of the argument.
RANGES: dict[str, tuple[float, float | None]] = {
    **dict.fromkeys(("rho", "momentum", "one_minus_rho"), (0.0, 1.0)),
    **dict.fromkeys(
        ("learning_rate", "epsilon", "decay", "weight_decay", "initial_rms", "clip"), (0.0, None)
    ),
}

# A framework's own checks by its argument names, ``(message, refuses)``: its text leads where
# it refuses a value too, so code that matches it keeps working.
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
    for name, what in zip(
        ("lr", "eps", "alpha", "momentum", "weight_decay"),
        ("learning rate", "epsilon value", "alpha value", "momentum value", "weight_decay value"),
        strict=True,
    )
}


def abbreviated(value: Any, limit: int = 400) -> str:
    """``str(value)`` with its middle cut out beyond ``limit`` characters (a big tree's)."""
    text = str(value)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} ... [{len(text) - 2 * half} characters left out] ... {text[-half:]}"


def tree_description(treedef: Any) -> str:
    """A tree structure for an error message: abbreviated, with its number of leaves."""
    return f"{abbreviated(treedef)} with {treedef.num_leaves} leaves"


def is_schedule(value: Any) -> bool:
    """Whether a hyperparameter value is a schedule (a callable that is not an array)."""
    return callable(value) and not hasattr(value, "shape")


def concrete_scalar(name: str, value: Any) -> float | None:
    """``value`` as a Python float (None when traced or a schedule), or an error naming ``name``."""
    if is_schedule(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):  # a Python int of any size
        try:
            return float(value)
        except OverflowError:
            raise ValueError(
                f"`{name}` must be a finite number, got an integer of {len(str(abs(value)))} "
                "digits, too large even for a float64"
            ) from None
    array: Any = value
    if not isinstance(value, jax.core.Tracer):
        try:
            array = np.asarray(value)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return None
        except (TypeError, ValueError) as e:
            raise TypeError(f"`{name}` must be a real number, got {value!r}") from e
        if array.dtype.kind in "OUSV" and not jnp.issubdtype(array.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be a real number, got {value!r}")
    if jnp.ndim(array) != 0:
        raise ValueError(f"`{name}` must be a scalar (0-d), got shape {jnp.shape(array)}")
    dtype = jnp.dtype(array.dtype)
    if dtype == jnp.bool_ or not any(jnp.issubdtype(dtype, t) for t in (jnp.floating, jnp.integer)):
        raise TypeError(f"`{name}` must be a real number, got dtype {dtype.name}")
    return None if isinstance(value, jax.core.Tracer) else float(array)


def check_range(name: str, scalar: float, kind: str | None = None, float32: bool = False) -> float:
    """A ``ValueError`` naming ``name`` unless ``scalar`` lies in the range of ``kind`` and stays
    finite as a float32 where the framework stores it so (``float32``) or x64 is off."""
    low, high = RANGES[kind or name]
    if math.isinf(scalar) or not low <= scalar <= (math.inf if high is None else high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f"finite and >= {low:g}"
        raise ValueError(f"`{name}` must be {bounds}, got {scalar}")
    x64 = jax.dtypes.canonicalize_dtype(np.float64) == np.float64
    if abs(scalar) > FLOAT32_MAX and (float32 or not x64):
        why = "it is used as a float32 value" if float32 else "jax_enable_x64 is off"
        raise ValueError(
            f"`{name}` must be at most {FLOAT32_MAX:g}, the largest float32, got {scalar:g}: {why}"
        )
    return scalar


def check_hyperparameter(
    name: str,
    value: Any,
    kind: str | None = None,
    float32: bool = False,
    messages: FrameworkChecks | None = None,
) -> float | None:
    """Hyperparameter ``name`` (the user's) checked against the range of ``kind``: its value when
    concrete, else None; the framework's text (``messages``) leads where it refuses it too."""
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
    """Keras 2's deprecated ``lr`` (popped from ``kwargs``) replaces ``learning_rate``, warning."""
    if "lr" not in kwargs:
        return learning_rate
    lr = kwargs.pop("lr")
    if lr is not None:
        check_hyperparameter("lr", lr, "learning_rate", float32=True, messages=KERAS2_MESSAGES)
    warnings.warn("The `lr` argument is deprecated, use `learning_rate` instead.", stacklevel=3)
    return learning_rate if lr is None else lr


def jit_value(value: Any, scalar: float | None) -> Any:
    """``value`` for ``jit``: a Python or NumPy integer as the float ``scalar`` (not narrowed)."""
    if scalar is None or isinstance(value, jax.Array):
        return value
    return scalar if isinstance(value, int) or np.asarray(value).dtype.kind in "iu" else value


def check_schedule(name: str, schedule: Any, kind: str | None = None, float32: bool = False):
    """A schedule takes the step count and gives a floating-point scalar, in range at step 0."""
    try:
        inspect.signature(schedule).bind(0)
    except ValueError:  # a built-in whose signature Python cannot read
        pass
    except TypeError:
        raise TypeError(
            f"the schedule given as `{name}` must take the step count (`schedule(count)`), but "
            f"its signature is {inspect.signature(schedule)}"
        ) from None
    value = schedule(jnp.zeros([], jnp.int32))
    if np.shape(value) != ():
        raise ValueError(f"the schedule given as `{name}` must return a scalar, got {value!r}")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        raise TypeError(
            f"the schedule given as `{name}` must return a floating-point number, got {value!r}"
        )
    if not isinstance(value, jax.core.Tracer):
        try:
            check_range(name, float(np.asarray(value)), kind, float32)
        except ValueError as e:
            raise ValueError(f"the schedule given as `{name}` returned a bad value: {e}") from None


def check_bool(name: str, value: Any) -> bool:
    """Refuses anything but ``True``/``False`` (``'no'``, ``1``, ``None``) for flag ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"`{name}` must be True or False, got {value!r}")


def _first(mask: np.ndarray, values: np.ndarray) -> str:
    """``value at index`` of the first ``True`` in ``mask``."""
    at = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return f"{values[at]}" + (f" at index {list(map(int, at))}" if mask.ndim else "")


def slot_values(label: str, values: np.ndarray, dtype: Any, squares: bool) -> np.ndarray:
    """Loaded slot values as ``dtype``, refusing a finite value that would become inf and a
    negative one in a slot of squares; NaN and inf are kept (a state holds them after a NaN)."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(values, dtype=dtype)
    overflow = np.isfinite(values) & ~np.isfinite(converted)
    if np.any(overflow):
        raise ValueError(
            f"{label} holds {_first(overflow, values)}, beyond the range of the slot's dtype "
            f"{dtype.name} (it would become inf)"
        )
    if squares and np.any(negative := (np.real(converted) < 0) | (np.imag(converted) < 0)):
        raise ValueError(
            f"{label} holds the negative value {_first(negative, converted)}; a slot of squares "
            "must be >= 0"
        )
    return converted


def as_jit_scalar(value: Any) -> Any:
    """A checked scalar as a 0-d array whose dtype depends only on the kind of value, so that a
    new value never recompiles (integers become float32, weak typing dropped)."""
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return np.asarray(value, jax.dtypes.canonicalize_dtype(np.float64))
    array = value if isinstance(value, jax.Array) else np.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        return array.astype(np.float32)
    if isinstance(array, jax.Array):  # weak typing dropped (a dispatch only when needed)
        return array.astype(array.dtype) if array.weak_type else array
    return np.asarray(array, jax.dtypes.canonicalize_dtype(array.dtype))
