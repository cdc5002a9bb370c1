"""Keras 2 config (de)serialisation for ``jrmsprop.RMSprop``: ``get_config`` / ``from_config``.

A TF 2.x Keras optimizer config is a flat dict of numbers, booleans and names; a learning-rate
schedule appears as a ``{'module', 'class_name', 'config', 'registered_name'}`` dict. This module
turns hyperparameter values into config entries and back; the optimizer only holds them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from jrmsprop._src.validation import concrete_scalar
from jrmsprop._src.variable import Variable

__all__ = [
    "deserialize_schedule",
    "is_keras_schedule",
    "is_step_schedule",
    "serialize_hyperparameter",
    "serialize_schedule",
    "config_to_kwargs",
]

# The keys whose value may be a serialised schedule in a config.
_SCHEDULE_KEYS = ("learning_rate", "rho", "momentum", "epsilon", "decay")


def _is_keras_learning_rate_schedule(value: Any) -> bool:
    """An instance of a Keras ``LearningRateSchedule`` (TF Keras, tf_keras or Keras 3), found by
    its class hierarchy so that no framework is imported."""
    return any(
        cls.__name__ == "LearningRateSchedule"
        and (cls.__module__ or "").split(".")[0] in ("keras", "tf_keras", "tensorflow")
        for cls in type(value).__mro__
    )


def is_step_schedule(value: Any) -> bool:
    """True for callables of the step: a Keras ``LearningRateSchedule``, or a callable that
    requires a positional argument (an optax schedule ``f(count)``).

    A callable that can be called without arguments (none, or all defaulted: ``lambda v=0.1:
    v``, a ``functools.partial`` that binds the required ones) is Keras's zero-argument
    callable: it is called with no arguments, never with the step (tf_keras's rule).
    """
    if not callable(value) or isinstance(value, Variable):
        return False
    if _is_keras_learning_rate_schedule(value):
        return True
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(
        p.kind in positional and p.default is inspect.Parameter.empty
        for p in signature.parameters.values()
    )


def is_keras_schedule(value: Any) -> bool:
    """A step schedule object with ``get_config`` (a Keras ``LearningRateSchedule`` or alike)."""
    return (
        is_step_schedule(value)
        and callable(getattr(value, "get_config", None))
        and not (inspect.isfunction(value) or inspect.ismethod(value))
    )


def serialize_schedule(value: Any) -> dict[str, Any]:
    """A Keras-style ``{'module', 'class_name', 'config', 'registered_name'}`` dict."""
    cls = type(value)
    return {
        "module": cls.__module__,
        "class_name": cls.__qualname__,
        "config": value.get_config(),
        "registered_name": None,
    }


# The packages a config's ``module`` may name: a class found there must still be a Keras
# ``LearningRateSchedule``. Anything else comes from ``custom_objects`` (as in Keras 3).
_SCHEDULE_PACKAGES = ("keras", "tf_keras", "tensorflow")


def _is_learning_rate_schedule_class(cls: Any) -> bool:
    """A subclass of a Keras ``LearningRateSchedule`` (TF Keras, tf_keras or Keras 3)."""
    return isinstance(cls, type) and any(
        base.__name__ == "LearningRateSchedule"
        and (base.__module__ or "").split(".")[0] in _SCHEDULE_PACKAGES
        for base in cls.__mro__
    )


def deserialize_schedule(config: dict[str, Any], custom_objects: dict[str, Any] | None = None):
    """Rebuilds an object from :func:`serialize_schedule`'s dict (or Keras's own).

    The class is looked up in ``custom_objects`` by ``class_name``. Otherwise it is imported from
    ``module`` only when that module belongs to Keras, tf_keras or TensorFlow (for TF Keras'
    public ``keras.*`` names, ``tf_keras.*`` first when installed) and the class is a Keras
    ``LearningRateSchedule``: a config read from a file names what gets imported and called, so
    nothing else is (any other class, e.g. your own schedule, goes in ``custom_objects``). The
    object is rebuilt with ``cls.from_config(config)`` when it has one, else ``cls(**config)``.
    """
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise ValueError(f"Cannot deserialize {config!r}: expected 'class_name' and 'config' keys")
    name = config["class_name"]
    if not isinstance(name, str):
        raise ValueError(f"Cannot deserialize {config!r}: 'class_name' must be a string")
    cls = (custom_objects or {}).get(name)
    if cls is None:
        cls = _import_schedule_class(name, config.get("module"))
    inner = config["config"]
    if not isinstance(inner, dict):
        raise ValueError(f"Cannot deserialize {name!r}: its 'config' must be a dict, got {inner!r}")
    if hasattr(cls, "from_config"):
        return cls.from_config(inner)
    return cls(**inner)


def _import_schedule_class(name: str, module: Any) -> Any:
    """The Keras ``LearningRateSchedule`` class ``name`` of ``module`` (see
    :func:`deserialize_schedule`); raises ``ValueError`` for anything else, before importing a
    module outside Keras / tf_keras / TensorFlow or calling anything."""
    if not module or not isinstance(module, str):
        raise ValueError(
            f"Cannot deserialize {name!r}: no 'module' in its config; pass the class in "
            "`custom_objects`"
        )
    if module.split(".")[0] not in _SCHEDULE_PACKAGES:
        raise ValueError(
            f"Cannot deserialize {name!r} from module {module!r}: only Keras learning-rate "
            "schedules are imported from a config (keras, tf_keras, tensorflow); pass your own "
            f"class as `custom_objects={{{name!r}: cls}}`"
        )
    # TF 2.x Keras writes its public "keras." module names: prefer tf_keras (Keras 2) there.
    candidates = [module]
    if module.startswith("keras."):
        candidates.insert(0, "tf_keras." + module[len("keras.") :])
    for candidate in candidates:
        try:
            obj: Any = importlib.import_module(candidate)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            continue
        if not _is_learning_rate_schedule_class(obj):
            raise ValueError(
                f"Cannot deserialize {name!r} from module {candidate!r}: it is not a Keras "
                "LearningRateSchedule; pass the class in `custom_objects` if you trust it"
            )
        return obj
    raise ValueError(
        f"Cannot deserialize {name!r}: not found in {candidates}; pass the class in "
        "`custom_objects`"
    )


def serialize_hyperparameter(name: str, value: Any, source: Any = None) -> Any:
    """The config entry of one hyperparameter (Keras' ``_serialize_hyperparameter``).

    Args:
      name: the hyperparameter (for error messages).
      value: its current value: a number, array, Variable, schedule or callable.
      source: the Python number it was set from, when it is stored rounded (a float32
        Variable): returned while the Variable still holds that number, so ``0.1`` stays ``0.1``.

    Returns:
      A number (a callable of no arguments: its current value), or a schedule's dict.
    """
    if isinstance(value, Variable):
        if source is not None and np.float32(source) == value.numpy():
            return source
        return float(value.numpy())
    if is_step_schedule(value):
        if is_keras_schedule(value):
            return serialize_schedule(value)
        raise ValueError(
            f"Cannot serialise `{name}`={value!r}: a schedule must have get_config() (e.g. a "
            "Keras LearningRateSchedule) to appear in get_config(); optax schedules are plain "
            "functions"
        )
    if callable(value):
        value = value()
    number = concrete_scalar(name, value)
    if number is None:
        raise ValueError(f"Cannot serialise `{name}`={value!r}")
    return value if type(value) is int else number


def config_to_kwargs(
    config: dict[str, Any], custom_objects: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Keras 2 optimizer config as constructor keywords: ``lr`` renamed ``learning_rate``,
    ``is_legacy_optimizer`` dropped, schedule dicts rebuilt (:func:`deserialize_schedule`)."""
    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict, got {type(config).__name__}")
    kwargs = dict(config)
    kwargs.pop("is_legacy_optimizer", None)
    if "lr" in kwargs:
        kwargs["learning_rate"] = kwargs.pop("lr")
    for key in _SCHEDULE_KEYS:
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = deserialize_schedule(kwargs[key], custom_objects)
    return kwargs
