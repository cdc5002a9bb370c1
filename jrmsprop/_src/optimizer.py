"""``jrmsprop.RMSprop``: the TF 2.x Keras ``RMSprop`` optimizer API, stateful, on JAX.

It holds state and does no numerics: a step checks its inputs, then makes one donated jitted call
whose arguments include the hyperparameter values (changing one never recompiles).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrmsprop._src import validation
from jrmsprop._src import variable as var_lib
from jrmsprop._src.clipping import check_clip_arguments, keras_clipping
from jrmsprop._src.transform import KERAS2, RMSpropState, build, slot_dtype_of
from jrmsprop._src.update_and_apply import update_and_apply
from jrmsprop._src.variable import Variable, dtype_kind, exact_array

__all__ = ["RMSprop"]

_CLIPS = ("clipnorm", "clipvalue", "global_clipnorm")
_HYPERS = ("learning_rate", "decay", "rho", "momentum", "epsilon")  # Keras 2's config order
_AS_VARIABLES = ("learning_rate", "rho", "momentum", "decay")  # Keras: float32 Variables
_SLOTS = ("rms", "momentum", "mg")
_PACKAGES = ("keras", "tf_keras", "tensorflow")


def _transforms(values: dict[str, Any], clip: dict[str, Any], centered: bool, momentum_slot: bool):
    core = build(KERAS2, **values, centered=centered, momentum_slot=momentum_slot)
    return keras_clipping(**clip), core


@functools.partial(jax.jit, static_argnames=("centered", "momentum_slot"), donate_argnums=(0, 1))
def _step(params, slots, count, grads, values, clip, *, centered, momentum_slot):
    clipper, core = _transforms(values, clip, centered, momentum_slot)
    grads, _ = clipper.update(grads, clipper.init(params), params)
    params, state = update_and_apply(core, grads, RMSpropState(count, *slots), params)
    return params, (state.rms, state.momentum, state.mg), state.count


# ---- Keras 2's hyperparameters and their (de)serialisation ------------------------------------


def _check(name: str, value: Any) -> None:
    """The core's check, with Keras's messages; TF holds lr, rho, momentum, decay as float32."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.size == 1:
        value = value.item()  # a Python int beyond 64 bits, assigned to our Variable
    float32 = name in KERAS2.float32_hyperparameters
    messages = validation.KERAS2_MESSAGES
    validation.check_hyperparameter(name, value, float32=float32, messages=messages)


def _is_variable(value: Any) -> bool:
    """A jrmsprop.Variable or a ``tf.Variable`` (which is not a ``tf.Tensor``)."""
    tf = sys.modules.get("tensorflow")
    tf_variable, tf_tensor = getattr(tf, "Variable", ()), getattr(tf, "Tensor", ())
    is_tf_variable = isinstance(value, tf_variable) and not isinstance(value, tf_tensor)
    return isinstance(value, Variable) or is_tf_variable


def _is_tensor(value: Any) -> bool:
    from_tf = (type(value).__module__ or "").startswith("tensorflow") and hasattr(value, "dtype")
    return isinstance(value, (jax.Array, Variable)) or from_tf


def _is_schedule_class(cls: Any) -> bool:
    """A subclass of a Keras ``LearningRateSchedule`` (found without importing a framework)."""
    return isinstance(cls, type) and any(
        base.__name__ == "LearningRateSchedule"
        and (base.__module__ or "").split(".")[0] in _PACKAGES
        for base in cls.__mro__
    )


def is_step_schedule(value: Any) -> bool:
    """A Keras ``LearningRateSchedule`` or a callable of the step (Keras calls others bare)."""
    if not callable(value) or isinstance(value, Variable):
        return False
    if _is_schedule_class(type(value)):
        return True
    try:
        parameters = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and p.default is inspect.Parameter.empty for p in parameters)


def _is_keras_schedule(value: Any) -> bool:
    """A step schedule object with ``get_config`` (serialisable, evaluated at float32 steps)."""
    plain = inspect.isfunction(value) or inspect.ismethod(value)
    return is_step_schedule(value) and callable(getattr(value, "get_config", None)) and not plain


def _serialize(name: str, value: Any, number: Any = None) -> Any:
    """A config entry: a number (``number`` while our Variable holds it) or a schedule's dict."""
    if isinstance(value, Variable):
        return (
            number if number is not None and np.float32(number) == value.numpy() else float(value)
        )
    if is_step_schedule(value):
        if not _is_keras_schedule(value):
            raise ValueError(f"Cannot serialise `{name}`={value!r}: a schedule needs get_config()")
        cls, config = type(value), value.get_config()
        entry = {"module": cls.__module__, "class_name": cls.__qualname__, "config": config}
        return {**entry, "registered_name": None}
    value = value() if callable(value) else value
    number = validation.concrete_scalar(name, value)
    return value if type(value) is int else number


def _deserialize(config: Any, custom_objects: Mapping[str, Any] | None) -> Any:
    """A schedule from ``custom_objects`` or, only if a Keras ``LearningRateSchedule``, Keras."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Cannot deserialize {config!r}: expected 'class_name' and 'config' keys")
    name, module, inner = config["class_name"], config.get("module"), config.get("config")
    cls: Any = (custom_objects or {}).get(name)
    hint = f"pass the class in `custom_objects={{{name!r}: cls}}`"
    if cls is None:
        if not isinstance(module, str) or module.split(".")[0] not in _PACKAGES:
            raise ValueError(f"Cannot deserialize {name!r} from module {module!r}: {hint}")
        # TF 2.x Keras writes its public "keras." names: tf_keras first
        candidates = ["tf_keras" + module[5:]] * module.startswith("keras.") + [module]
        for candidate in candidates:
            with contextlib.suppress(ImportError, AttributeError):
                cls = functools.reduce(getattr, name.split("."), importlib.import_module(candidate))
                break
        if cls is None or not _is_schedule_class(cls):
            raise ValueError(f"Cannot deserialize {name!r}: no schedule in {candidates}; {hint}")
    if not isinstance(inner, dict):
        raise ValueError(f"Cannot deserialize {name!r}: its 'config' must be a dict, got {inner!r}")
    return cls.from_config(inner) if hasattr(cls, "from_config") else cls(**inner)


def _hyperparameter(name: str, doc: str) -> property:
    def get(self: RMSprop) -> Any:
        return self._clip[name] if name in _CLIPS else self._hyper[name]

    return property(get, lambda self, value: self._set(name, value), doc=doc)


# ---- variables --------------------------------------------------------------------------------


def _check_count(value: Any, label: str = "`iterations`") -> None:
    array, top = np.asarray(value), validation.INT32_MAX
    if array.size and not (array.min() >= 0 and array.max() <= top):
        raise ValueError(f"{label} must be in [0, {top}], got {array.tolist()}")


class RMSprop:
    r"""The TF 2.x Keras ``RMSprop`` optimizer, stateful, for :class:`jrmsprop.Variable`\ s.

    The API, slots, weights, config and numbers of ``tf_keras.optimizers.legacy.RMSprop``: each
    step is :func:`jrmsprop.rmsprop` after :func:`jrmsprop.keras_clipping`,

    .. math::

      r \leftarrow \rho r + (1-\rho) g^2, \quad
      m \leftarrow \mu m + \frac{lr\, g}{\sqrt{r + \epsilon}}, \quad p \leftarrow p - m

    (without a momentum slot ``p ← p − lr·g / (√r + ε)``; ``centered`` uses ``r − m_g²``).

    Args:
      learning_rate: a number ``>= 0``, a scalar array, a schedule of ``iterations`` (Keras or
        optax) or a callable of no arguments.
      rho: discounting factor in ``[0, 1]`` (same kinds of values).
      momentum: in ``[0, 1]``; a momentum slot exists for a callable, an array or a value > 0.
      epsilon: ε ``>= 0``; ``0`` or ``None`` mean ``1e-7`` (Keras's ``backend.epsilon()``).
      centered: keep the ``mg`` slot and normalise by the variance estimate.
      name: prefix of the optimizer's variable names.
      **kwargs: ``clipvalue``, ``clipnorm``, ``global_clipnorm`` (applied in that order),
        ``decay`` (``lr / (1 + decay·iterations)``) and ``lr`` (deprecated ``learning_rate``).

    Example:
      >>> import jrmsprop
      >>> opt = jrmsprop.RMSprop(learning_rate=0.1)
      >>> var1 = jrmsprop.Variable(10.0)
      >>> step_count = opt.minimize(lambda: (var1 ** 2) / 2.0, [var1]).numpy()
      >>> var1.numpy()
      array(9.683772, dtype=float32)
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: Any = 0.9,
        momentum: Any = 0.0,
        epsilon: Any = 1e-7,
        centered: bool = False,
        name: str = "RMSprop",
        **kwargs: Any,
    ):
        allowed = {*_CLIPS, "decay", "lr"}
        for key in kwargs:
            if key not in allowed:
                raise TypeError(
                    f"Unexpected keyword argument passed to optimizer: {key}. Allowed kwargs are "
                    f"{allowed}."
                )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be a string, got {name!r}")
        if epsilon is None or (
            not callable(epsilon) and validation.concrete_scalar("epsilon", epsilon) == 0
        ):
            epsilon = validation.KERAS_EPSILON  # Keras: `epsilon or backend.epsilon()`, here only
        learning_rate = validation.legacy_lr(learning_rate, kwargs)
        hyper = dict(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon)
        hyper["decay"] = kwargs.get("decay", 0.0)
        for key, value in hyper.items():
            _check(key, value)
        self._clip = {key: kwargs.get(key) for key in _CLIPS}
        check_clip_arguments(**self._clip)
        self._centered = validation.check_bool("centered", centered)
        self._name = name or "RMSprop"
        self._hyper: dict[str, Any] = {}
        self._numbers: dict[str, float] = {}  # the Python numbers behind our float32 Variables
        for key, value in hyper.items():
            self._set(key, value)
        self._initial_decay = hyper["decay"]
        if _is_variable(momentum):  # TF reads a Variable once, here
            self._momentum = (validation.concrete_scalar("momentum", np.asarray(momentum)) or 0) > 0
        else:
            self._momentum = bool(_is_tensor(momentum) or callable(momentum) or momentum > 0)
        self._weights: list[Variable] = []  # iterations, then the slots, in creation order
        self._slots: dict[Variable, dict[str, Variable]] = {}
        self._slot_names: list[str] = []
        self._unchecked: set[tuple[Variable, str]] = set()  # slots made since the last step
        self._iterations: Variable | None = None
        self._var_order: list[Variable] = []

    # -- hyperparameters --------------------------------------------------------------------------

    learning_rate = _hyperparameter("learning_rate", "The learning rate.")
    lr = learning_rate
    rho = _hyperparameter("rho", "Discounting factor of the moving averages.")
    momentum = _hyperparameter("momentum", "Momentum (the slot was decided at construction).")
    decay = _hyperparameter("decay", "Inverse-time decay (the steps use the constructor's).")
    epsilon = _hyperparameter("epsilon", "ε (``0`` set after construction is 0).")
    clipnorm = _hyperparameter("clipnorm", "Per-gradient norm bound, or ``None``.")
    global_clipnorm = _hyperparameter("global_clipnorm", "Global norm bound, or ``None``.")
    clipvalue = _hyperparameter("clipvalue", "Elementwise bound, or ``None``.")
    centered = property(
        lambda self: self._centered,
        lambda self, value: setattr(self, "_centered", validation.check_bool("centered", value)),
    )
    name = property(lambda self: self._name)

    def _set(self, name: str, value: Any) -> None:
        if name in _CLIPS:
            clip = {**self._clip, name: value}
            check_clip_arguments(**clip)
            self._clip = clip
            return
        _check(name, value)
        number = None if callable(value) or _is_tensor(value) else float(np.asarray(value))
        if name not in _AS_VARIABLES or number is None:
            self._hyper[name] = value
            self._numbers.pop(name, None)
        elif isinstance(self._hyper.get(name), Variable):
            self._hyper[name].assign(np.float32(number))  # Keras: backend.set_value
            if name in self._numbers:  # ours, not a Variable you passed
                self._numbers[name] = number
        else:
            variable = Variable(np.float32(number), name=f"{self._name}/{name}", trainable=False)
            variable._check = functools.partial(_check, name)
            self._hyper[name], self._numbers[name] = variable, number

    def _used(self, name: str) -> Any:
        return self._initial_decay if name == "decay" else self._hyper[name]

    def _current(self, name: str, step: Any) -> Any:
        """A hyperparameter's value at ``step``, checked again unless it is our Variable's."""
        value = self._used(name)
        if name in self._numbers and name != "decay":
            return value.value  # our Variable: checked on assign
        if isinstance(value, np.ndarray) or _is_variable(value):
            what = f"the current value of the variable given as `{name}`"
        elif callable(value):
            what = f"the value the callable `{name}` returned"
            if is_step_schedule(value):  # Keras: lr(tf.cast(iterations, var_dtype))
                value = value(np.float32(int(step)) if _is_keras_schedule(value) else step)
            else:
                value = value()
        else:
            return value
        value = value.value if isinstance(value, Variable) else value
        try:
            _check(name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"RMSprop: {what}: {e}") from e
        return value

    def _clip_values(self) -> dict[str, Any]:
        return {k: validation.as_jit_scalar(v) for k, v in self._clip.items() if v is not None}

    # -- variables: iterations, slots, weights -----------------------------------------------------

    @property
    def iterations(self) -> Variable:
        """The int32 step counter (assigning a Variable works only before it exists)."""
        if (iterations := self._iterations) is None:
            kw: dict[str, Any] = dict(trainable=False, aggregation="only_first_replica")
            self._install_iterations(iterations := self.add_weight("iter", [], np.int32, **kw))
        return iterations

    @iterations.setter
    def iterations(self, variable: Any) -> None:
        if not isinstance(variable, Variable):
            self.iterations.assign(variable)
            return
        if self._iterations is not None:
            raise RuntimeError("Cannot set `iterations` to a new Variable: it exists already")
        if variable.shape != () or variable.dtype != np.int32:
            raise TypeError(f"`iterations` must be an int32 scalar Variable, got {variable!r}")
        _check_count(variable.value)
        self._install_iterations(variable)

    def _install_iterations(self, variable: Variable) -> None:
        variable._check = _check_count
        self._iterations = variable
        self._weights.append(variable)

    def add_weight(
        self, name: str, shape: Sequence[int], dtype=None, initializer="zeros", trainable=None,
        synchronization="auto", aggregation="none",
    ) -> Variable:  # fmt: skip
        """A new Variable ``f"{opt.name}/{name}"``, not in ``weights`` (Keras 2)."""
        if not isinstance(name, str):
            raise TypeError(f"add_weight: `name` must be a string, got {name!r}")
        value = var_lib.initial_value(initializer, shape, np.float32 if dtype is None else dtype)
        kw = dict(trainable=trainable, synchronization=synchronization, aggregation=aggregation)
        variable = Variable(value, name=f"{self._name}/{name}", **kw)
        if trainable and variable.synchronization == "on_read":
            raise ValueError("Synchronization ON_READ only for non-trainable variables (Keras)")
        return variable

    def add_slot(
        self, var: Variable, slot_name: str, initializer: Any = "zeros", shape=None, *, dtype=None
    ) -> Variable:
        """The slot ``slot_name`` of ``var``, created (and appended to ``weights``) if new."""
        if not isinstance(var, Variable):
            raise TypeError(f"add_slot: `var` must be a Variable, got {type(var).__name__}")
        if not isinstance(slot_name, str):
            raise TypeError(f"add_slot: `slot_name` must be a string, got {slot_name!r}")
        weight = self._slots.get(var, {}).get(slot_name)
        if weight is None:
            shape = var.shape if shape is None else shape
            dtype = var.dtype if dtype is None else dtype
            value = var_lib.initial_value(initializer, shape, dtype)
            weight = Variable(value, name=f"{self._name}/{var.name}/{slot_name}", trainable=False)
            self._slot_names += [slot_name] * (slot_name not in self._slot_names)
            self._slots.setdefault(var, {})[slot_name] = weight
            self._unchecked.add((var, slot_name))
            self._weights.append(weight)
        return weight

    def get_slot(self, var: Variable, slot_name: str) -> Variable:
        slots = self._slots.get(var, {}) if isinstance(var, Variable) else {}
        if slot_name not in slots:
            name = getattr(var, "name", var)
            raise KeyError(f"No slot {slot_name!r} for variable {name!r}; slots: {sorted(slots)}")
        return slots[slot_name]

    def get_slot_names(self) -> list[str]:
        return list(self._slot_names)

    def get_weights(self) -> list[np.ndarray]:
        return [w.numpy() for w in self._weights]

    @property
    def weights(self) -> list[Variable]:
        """``iterations``, then every ``rms``, ``momentum``, ``mg`` slot (TF 2.x Keras's order)."""
        return list(self._weights)

    variables = lambda self: list(self._weights)  # noqa: E731
    var_list = property(lambda self: list(self._var_order), doc="The trained variables.")

    def _needed(self) -> tuple[str, ...]:
        return ("rms",) + ("momentum",) * self._momentum + ("mg",) * self._centered

    def _unbuilt(self, var_list: list[Variable]) -> list[Variable]:
        """The variables that lack a slot, after checking them and the slots made by add_slot."""
        needed = self._needed()
        missing = [v for v in var_list if not self._slots.get(v, {}).keys() >= set(needed)]
        for var in missing:
            if dtype_kind(var.dtype) not in "fc":
                raise TypeError(f"RMSprop: variable {var.name!r} has dtype {var.dtype}: not float")
        for var, name in [(v, n) for v in var_list for n in needed if (v, n) in self._unchecked]:
            slot, where = self._slots[var][name], f"RMSprop: slot {name!r} of variable {var.name!r}"
            if slot.shape != var.shape:
                raise ValueError(f"{where} has shape {slot.shape}, the variable {var.shape}")
            kinds = "f" if name == "rms" or var.dtype.kind != "c" else "fc"
            if dtype_kind(slot.dtype) not in kinds:
                real = "real " * (kinds == "f")
                raise TypeError(f"{where} has dtype {slot.dtype}, not {real}floating point")
            self._unchecked.discard((var, name))
        return missing

    def _create_slots(self, var_list: list[Variable]) -> None:
        _ = self.iterations
        for slot in self._needed():
            for var in var_list:  # the core's dtypes: float32 for float16, a real rms
                dtype = slot_dtype_of(var.dtype, real=slot == "rms", complex_as_real=False)
                self.add_slot(var, slot, dtype=dtype)
        self._var_order.extend(v for v in dict.fromkeys(var_list) if v not in self._var_order)

    def build(self, var_list: Any) -> None:
        """Creates ``iterations`` and the slots of ``var_list`` now (e.g. before set_weights)."""
        self._create_slots(self._unbuilt(var_lib.flatten_variables(var_list)))

    def _load(self, targets: list[Variable], values: list[Any], labels: list[str], what: str):
        """Checks every value against its target, then loads them all (or none)."""
        rms = {id(s["rms"]) for s in self._slots.values() if "rms" in s}
        converted = []
        for target, value, label in zip(targets, values, labels, strict=True):
            array = exact_array(value, label)
            if tuple(array.shape) != target.shape:
                raise ValueError(f"{what}: shape {array.shape} for {target.name!r} {target.shape}")
            kind, target_kind = dtype_kind(array.dtype), dtype_kind(target.dtype)
            if kind not in {"i": "iu", "u": "iu", "c": "iufc"}.get(target_kind, "iuf"):
                raise TypeError(f"{what}: dtype {array.dtype} for {target.name!r} {target.dtype}")
            if target_kind in "iu":
                _check_count(array, repr(target.name))
            else:
                label, squares = f"{what}: {target.name!r}", id(target) in rms
                array = validation.slot_values(label, np.asarray(array), target.dtype, squares)
            converted.append(jnp.array(array, target.dtype, copy=True))
        for target, value in zip(targets, converted, strict=True):
            target._value = value

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Loads values in :attr:`weights` order (without ``iterations``: it is reset to 0)."""
        if isinstance(weights, (str, bytes, dict)) or not isinstance(weights, Iterable):
            raise TypeError(f"set_weights: `weights` must be a list of arrays, got {weights!r}")
        weights = list(weights)
        offset = 1 if len(self._weights) == len(weights) + 1 else 0
        if len(self._weights) != len(weights) + offset:
            hint = "" if self._slots else " It has no slots yet: call `build(var_list)` first."
            raise ValueError(
                f"You called `set_weights(weights)` on optimizer {self._name} with a weight list "
                f"of length {len(weights)}, but the optimizer was expecting {len(self._weights)} "
                f"weights.{hint} Provided weights: {str(weights)[:50]}..."
            )
        given = enumerate(self._weights[offset:])
        labels = ["`iterations`"] * offset + [
            f"set_weights: weight {i} ({t.name!r})" for i, t in given
        ]
        self._load(self._weights, [0] * offset + weights, labels, "set_weights")

    @property
    def state(self) -> RMSpropState:
        """The :class:`jrmsprop.RMSpropState` over :attr:`var_list` (live buffers); assignable."""
        slots = {
            n: tuple(self._slots[v][n]._value for v in self._var_order) for n in self._needed()
        }
        count = self.iterations._value
        return RMSpropState(count, slots["rms"], slots.get("momentum"), slots.get("mg"))

    @state.setter
    def state(self, state: RMSpropState) -> None:
        if not isinstance(state, RMSpropState):
            raise TypeError(f"`state` must be an RMSpropState, got {type(state).__name__}")
        targets, values, labels = [self.iterations], [state.count], ["`state.count`"]
        for name in _SLOTS:
            tree = getattr(state, name)
            if (tree is not None) != (name in self._needed()):
                wrong = "unexpected" if tree is not None else "missing"
                raise ValueError(f"`state.{name}` is {wrong} for this optimizer's configuration")
            if tree is None:
                continue
            leaves = list(tree) if isinstance(tree, (list, tuple)) else jax.tree.leaves(tree)
            if len(leaves) != len(self._var_order):
                raise ValueError(f"`state.{name}` has {len(leaves)} leaves, not one per variable")
            targets += [self._slots[v][name] for v in self._var_order]
            values += leaves
            labels += [f"`state.{name}[{i}]`" for i in range(len(leaves))]
        self._load(targets, values, labels, "state")

    @property
    def transformation(self) -> optax.GradientTransformation:
        """The equivalent optax transformation, from the current hyperparameter values."""
        values = {n: self._used(n) for n in _HYPERS}
        for n, value in values.items():
            if not is_step_schedule(value):
                values[n] = validation.as_jit_scalar(self._current(n, 0))
        clip = self._clip_values()
        clipper, core = _transforms(values, clip, self._centered, self._momentum)
        return optax.chain(clipper, core) if clip else core

    # -- the step ----------------------------------------------------------------------------------

    def apply_gradients(
        self, grads_and_vars: Iterable[Any], name=None, experimental_aggregate_gradients=True
    ) -> Variable:
        """Applies ``(gradient, Variable)`` pairs in place; returns :attr:`iterations`."""
        if isinstance(grads_and_vars, (str, bytes)) or not isinstance(grads_and_vars, Iterable):
            kind = type(grads_and_vars).__name__
            raise TypeError(f"apply_gradients: `grads_and_vars` must be pairs, got {kind}")
        var_list, grads, missing = var_lib.step_inputs(grads_and_vars)
        unbuilt = self._unbuilt(var_list)
        count = jnp.zeros((), jnp.int32) if self._iterations is None else self._iterations._value
        values = {
            n: validation.as_jit_scalar(self._current(n, count)) for n in _HYPERS * bool(var_list)
        }
        if missing:
            warnings.warn(
                f"Gradients do not exist for variables {missing} when minimizing the loss. If "
                "you're using `model.compile()`, did you forget to provide a `loss` argument?",
                UserWarning,
                stacklevel=3,
            )
        self._create_slots(unbuilt)
        if not var_list:
            return self.iterations
        needed = self._needed()
        slots = [[self._slots[v][n] for v in var_list] if n in needed else None for n in _SLOTS]
        (params, *buffers), (grads, values, clip, count) = var_lib.distinct_donations(
            [[v._value for v in var_list]]
            + [None if s is None else [v._value for v in s] for s in slots],
            (grads, values, self._clip_values(), self.iterations._value),
        )
        static = dict(centered=self._centered, momentum_slot=self._momentum)
        params, buffers, count = _step(params, tuple(buffers), count, grads, values, clip, **static)
        for targets, new in zip([var_list, *slots], [params, *buffers], strict=True):
            for target, value in zip(targets or (), new or (), strict=True):
                target._value = value
        self.iterations._value = count
        return self.iterations

    def minimize(
        self, loss: Callable[[], Any], var_list: Any, grad_loss=None, name=None, tape=None
    ):
        """Applies the gradients of ``loss()`` (a callable of no arguments); returns
        :attr:`iterations`."""
        return self.apply_gradients(var_lib.compute_gradients(loss, var_list, grad_loss, tape))

    # -- config ------------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Keras 2's config (schedules as Keras dicts, callables by their current value)."""
        config: dict[str, Any] = {"name": self._name}
        config.update({k: _serialize(k, v) for k, v in self._clip.items() if v is not None})
        for key in _HYPERS:
            number = None if key == "decay" else self._numbers.get(key)
            config[key] = _serialize(key, self._used(key), number)
        return {**config, "centered": self._centered}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> RMSprop:
        """An optimizer from :meth:`get_config`'s dict or a TF 2.x Keras RMSprop's."""
        if custom_objects is not None and not isinstance(custom_objects, Mapping):
            kind = type(custom_objects).__name__
            raise TypeError(f"from_config: `custom_objects` must be a dict of classes, got {kind}")
        if not isinstance(config, dict):
            raise TypeError(f"`config` must be a dict, got {type(config).__name__}")
        kwargs = {k: v for k, v in config.items() if k != "is_legacy_optimizer"}
        if "lr" in kwargs:
            kwargs["learning_rate"] = kwargs.pop("lr")
        for key in _HYPERS:
            if isinstance(kwargs.get(key), dict):
                kwargs[key] = _deserialize(kwargs[key], custom_objects)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"<jrmsprop.RMSprop name={self._name!r} centered={self._centered}>"
