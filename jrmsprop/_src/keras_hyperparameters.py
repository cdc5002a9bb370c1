"""Keras 2's rules for storing an optimizer's hyperparameters, for ``jrmsprop.RMSprop``.

TF 2.x Keras's ``OptimizerV2`` keeps its hyperparameters in a ``_hyper`` dict under rules of its
own. :class:`KerasHyperparameters` reproduces them; the optimizer holds one and its
``learning_rate``, ``rho``, ... properties are plain delegations (:func:`optimizer_property`):

* a number given for ``learning_rate``, ``rho``, ``momentum`` or ``decay`` is stored in a float32
  :class:`jrmsprop.Variable` (``opt.learning_rate.assign(0.5)`` works, as in Keras); setting a
  number again assigns it to the Variable already there (Keras' ``backend.set_value``). The
  Python number is remembered while the Variable holds it, so ``get_config`` says ``0.1``, not
  float32's ``0.10000000149``. Everything else (``epsilon``; arrays, tensors, schedules and
  callables for any name) is stored as given.
* ``decay`` is fixed at construction (Keras's ``_initial_decay``): the steps and ``get_config``
  use the constructor's value; ``opt.decay`` (its Variable) may be read, set and assigned, which
  changes nothing else -- as in Keras.
* ``epsilon`` of ``0`` or ``None`` given to the constructor means ``1e-7``, Keras's
  ``backend.epsilon()``; set later, ``0`` is 0 and ``None`` is refused (as Keras's step fails on
  it).
* every value is checked by the core's checks when it is given -- also ``assign`` on a
  hyperparameter Variable -- and a schedule's or callable's value whenever it is evaluated: a
  Keras ``LearningRateSchedule`` at ``iterations`` cast to float32 (as Keras casts it), another
  step schedule (a callable that requires a positional argument, e.g. optax's) at
  ``iterations``, a callable that can be called without arguments called so. A
  :class:`jrmsprop.Variable`, ``tf.Variable`` or NumPy array given by the user can change after
  it was given, so its value is checked again at every step (the Variables made here check
  every ``assign`` instead).
* the clip thresholds ``clipvalue``, ``clipnorm`` and ``global_clipnorm`` are stored as given,
  ``None`` when unset, and checked together (``clipnorm`` and ``global_clipnorm`` exclude each
  other).

Also here: the keywords a Keras 2 optimizer accepts (:func:`check_keywords`) and the Keras rule
for whether a momentum slot exists (:func:`keeps_momentum_slot`).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
import numpy as np

from jrmsprop._src import keras_config, validation
from jrmsprop._src.clipping import check_clip_arguments
from jrmsprop._src.transform import KERAS2
from jrmsprop._src.validation import KERAS_EPSILON, as_jit_scalar, concrete_scalar
from jrmsprop._src.variable import Variable

__all__ = [
    "CLIPS",
    "KerasHyperparameters",
    "check",
    "constructor_value",
    "check_keywords",
    "is_tensor",
    "keeps_momentum_slot",
    "optimizer_property",
]

CLIPS = ("clipvalue", "clipnorm", "global_clipnorm")
_KEYWORDS = ("clipnorm", "clipvalue", "decay", "global_clipnorm", "lr")  # OptimizerV2's **kwargs
_VARIABLE_HYPERS = ("learning_rate", "rho", "momentum", "decay")  # Keras: float32 Variables
_FIXED_HYPERS = ("decay",)  # Keras: steps and get_config use `_initial_decay`, the constructor's
_CONFIG_ORDER = ("learning_rate", "decay", "rho", "momentum", "epsilon")  # Keras 2's get_config
_FLOAT32_HYPERS = KERAS2.float32_hyperparameters  # TF stores them as float32 (see `check`)
# The core's check, with Keras's messages where Keras has a check of its own.
_check_hyperparameter = functools.partial(
    validation.check_hyperparameter, messages=validation.KERAS2_MESSAGES
)


def constructor_value(name: str, value: Any) -> Any:
    """What Keras 2's constructor stores for ``name``: ``epsilon or backend.epsilon()``, so an
    ``epsilon`` of ``None`` or ``0`` becomes ``1e-7``; every other value as given.

    Only the constructor applies this rule. ``opt.epsilon = 0`` later stores 0, and the next step
    divides by ``sqrt(v) + 0`` (TF 2.x Keras does the same: ``epsilon`` is then a plain
    attribute that the step converts to a tensor as it is).
    """
    if name == "epsilon" and (
        value is None or (not callable(value) and concrete_scalar(name, value) == 0)
    ):
        return KERAS_EPSILON
    return value


def check(name: str, value: Any, kind: str | None = None) -> Any:
    """The core's check of a hyperparameter; returns the value to store.

    Args:
      name: the hyperparameter, as the user wrote it (named by the error).
      value: a number, 0-d array, tensor, Variable, schedule or callable.
      kind: which range applies (see ``jrmsprop._src.validation.RANGES``); defaults to ``name``.

    TF 2.x Keras holds ``learning_rate``, ``rho``, ``momentum`` and ``decay`` as float32 whatever
    the variables' dtype (:data:`jrmsprop._src.transform.KERAS2`), so a value beyond float32's
    range is refused for them also when JAX's x64 mode is on.
    """
    _check_hyperparameter(name, value, kind, float32=(kind or name) in _FLOAT32_HYPERS)
    return value


def check_keywords(kwargs: dict[str, Any]) -> None:
    """Keras 2's rule for an optimizer's ``**kwargs``: only ``clipnorm``, ``clipvalue``,
    ``decay``, ``global_clipnorm`` and ``lr``; any other keyword is a ``TypeError``."""
    for key in kwargs:
        if key not in _KEYWORDS:
            raise TypeError(
                f"Unexpected keyword argument passed to optimizer: {key}. Allowed kwargs are "
                f"{set(_KEYWORDS)}."
            )


def is_tensor(value: Any) -> bool:
    """A JAX array, Variable or TF tensor/variable: stored as given, never copied to a number."""
    if isinstance(value, (jax.Array, Variable)):
        return True
    module = type(value).__module__ or ""
    return module.startswith("tensorflow") and hasattr(value, "dtype")


def _is_variable(value: Any) -> bool:
    """A :class:`jrmsprop.Variable` or a ``tf.Variable`` (which, in TF, is not a ``tf.Tensor``)."""
    if isinstance(value, Variable):
        return True
    tf = sys.modules.get("tensorflow")
    return (
        tf is not None
        and isinstance(value, getattr(tf, "Variable", ()))
        and not isinstance(value, getattr(tf, "Tensor", ()))
    )


def keeps_momentum_slot(momentum: Any) -> bool:
    """Keras's rule: ``isinstance(momentum, tf.Tensor) or callable(momentum) or momentum > 0``.

    A JAX array or TF tensor is a tensor (a slot whatever its value). A ``tf.Variable`` is not a
    ``tf.Tensor``, so it gets a slot only when its value is > 0; a :class:`jrmsprop.Variable`
    follows the same rule. The optimizer decides it once, at construction: later changes of
    ``momentum`` do not add or remove the slot (and with the slot, ε sits inside the square root).
    """
    if _is_variable(momentum):
        return bool(concrete_scalar("momentum", np.asarray(momentum)) > 0)
    return bool(is_tensor(momentum) or callable(momentum) or concrete_scalar("momentum", momentum))


def _check_assigned(name: str, value: Any) -> None:
    """The check of a hyperparameter Variable's assignments (``opt.rho.assign(2)`` raises)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.size == 1:
        value = value.item()  # a Python int beyond 64 bits, as given
    _check_hyperparameter(name, value)


def _checked_on_assign(variable: Variable, name: str) -> bool:
    """Whether ``variable`` is one this class made for ``name``: it checks every assignment by
    ``name``'s rule, so its value needs no check when a step reads it."""
    check = variable._check
    return (
        isinstance(check, functools.partial)
        and check.func is _check_assigned
        and check.args == (name,)
    )


def _is_mutable(value: Any) -> bool:
    """A value that can change after it was given (and checked): a :class:`jrmsprop.Variable`,
    a ``tf.Variable`` or a NumPy array."""
    return isinstance(value, np.ndarray) or _is_variable(value)


class KerasHyperparameters:
    """An optimizer's hyperparameters and clip thresholds, stored by Keras 2's rules.

    Args:
      prefix: the optimizer's name: the hyperparameter Variables are ``f"{prefix}/{name}"``.
      values: the hyperparameters by name (RMSprop's: ``learning_rate``, ``rho``, ``momentum``,
        ``epsilon``, ``decay``).
      clip: ``clipvalue``, ``clipnorm`` and ``global_clipnorm``, each ``None`` when unset.

    Every value and threshold is checked before any is stored: a bad one raises an error that
    names it.
    """

    def __init__(self, prefix: str, values: dict[str, Any], clip: dict[str, Any]):
        values = {name: constructor_value(name, value) for name, value in values.items()}
        for name, value in values.items():
            check(name, value)
        check_clip_arguments(**clip)
        self._prefix = prefix
        self._values: dict[str, Any] = {}
        self._sources: dict[str, Any] = {}  # Python numbers behind float32 Variables
        self._clip = dict(clip)
        for name, value in values.items():
            self.set(name, value)
        # Keras's `_initial_decay`: what the steps and get_config use, whatever is set later.
        self._initial = {
            name: check(name, values[name]) for name in _FIXED_HYPERS if name in values
        }

    def get(self, name: str) -> Any:
        """What is stored for a hyperparameter or clip threshold (a Variable for numbers given
        for ``learning_rate``, ``rho`` and ``momentum``)."""
        return self._clip[name] if name in CLIPS else self._values[name]

    def set(self, name: str, value: Any) -> None:
        """Checks and stores a hyperparameter or clip threshold; on error nothing changes."""
        if name in CLIPS:
            clip = dict(self._clip, **{name: value})
            check_clip_arguments(**clip)
            self._clip = clip
            return
        value = check(name, value)
        previous = self._values.get(name)
        number = None if callable(value) or is_tensor(value) else float(np.asarray(value))
        if name not in _VARIABLE_HYPERS or number is None:
            self._values[name] = value
            self._sources.pop(name, None)
        elif isinstance(previous, Variable):
            previous.assign(np.float32(number))  # Keras: backend.set_value(hyper, value)
            if name in self._sources:
                self._sources[name] = number
        else:
            variable = Variable(np.float32(number), name=f"{self._prefix}/{name}", trainable=False)
            variable._check = functools.partial(_check_assigned, name)
            self._values[name] = variable
            self._sources[name] = number

    def _used(self, name: str) -> Any:
        """What the steps and the config use for ``name``: the constructor's value for ``decay``
        (Keras's ``_initial_decay``), else what is stored now."""
        return self._initial[name] if name in self._initial else self._values[name]

    def current(self, name: str, step: Any) -> Any:
        """A hyperparameter's value for a step (schedules at ``step``, callables called), checked.

        For ``decay`` it is the constructor's value (see :meth:`_used`)."""
        value = self._used(name)
        if _is_mutable(value):
            # A Variable (or NumPy array) the user gave may have been assigned since: its value
            # now is checked as a number would be. The Variables made here check assignments.
            if isinstance(value, Variable):
                if _checked_on_assign(value, name):
                    return value.value
                value = value.value
            try:
                _check_hyperparameter(name, value)
            except (TypeError, ValueError) as e:
                raise type(e)(
                    f"RMSprop: the current value of the variable given as `{name}`: {e}"
                ) from e
            return value
        if not callable(value):
            return value
        if keras_config.is_keras_schedule(value):  # Keras: lr(tf.cast(iterations, var_dtype))
            value = value(np.float32(int(step)))
        elif keras_config.is_step_schedule(value):
            value = value(step)
        else:
            value = value()
        if isinstance(value, Variable):
            value = value.value
        try:  # evaluated eagerly, so concrete: the core's full check applies
            _check_hyperparameter(name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"RMSprop: the value the callable `{name}` returned: {e}") from e
        return value

    def _clip_values(self) -> dict[str, Any]:
        return {k: as_jit_scalar(v) for k, v in self._clip.items() if v is not None}

    def step_values(self, step: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The compiled step's arguments: every hyperparameter's value at ``step`` and every clip
        threshold that is set, as checked 0-d arrays (so changing a value never recompiles)."""
        values = {name: as_jit_scalar(self.current(name, step)) for name in self._values}
        return values, self._clip_values()

    def transformation_values(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Like :meth:`step_values`, for an optax transformation: step schedules are passed
        through (the transformation evaluates them), everything else is its value now."""
        values = {
            name: self._used(name)
            if keras_config.is_step_schedule(self._used(name))
            else as_jit_scalar(self.current(name, 0))
            for name in self._values
        }
        return values, self._clip_values()

    def config(self) -> dict[str, Any]:
        """The Keras 2 config entries: the clip thresholds that are set, then ``learning_rate``,
        ``decay``, ``rho``, ``momentum``, ``epsilon`` (see ``keras_config``)."""
        serialize = keras_config.serialize_hyperparameter
        config = {
            key: serialize(key, self._clip[key])
            for key in ("clipnorm", "clipvalue", "global_clipnorm")
            if self._clip[key] is not None
        }
        for key in _CONFIG_ORDER:
            if key in self._initial:  # Keras: get_config's "decay" is `_initial_decay`
                config[key] = serialize(key, self._initial[key])
            else:
                config[key] = serialize(key, self._values[key], self._sources.get(key))
        return config


def optimizer_property(name: str, doc: str | None = None) -> property:
    """The property ``name`` of an optimizer that holds a :class:`KerasHyperparameters` as
    ``_hyperparameters``: it reads what is stored there and sets through its ``set``."""
    return property(
        lambda self: self._hyperparameters.get(name),
        lambda self, value: self._hyperparameters.set(name, value),
        doc=doc,
    )
