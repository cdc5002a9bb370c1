"""``jrmsprop.RMSprop``: the TF 2.x Keras ``RMSprop`` optimizer API, stateful, on JAX.

A thin wrapper, in the manner of flax's ``nnx.Optimizer``: it holds the hyperparameters, the
trained :class:`jrmsprop.Variable`\\ s' slots and the step counter, and delegates every decision
to the functional core -- the update to :func:`jrmsprop.rmsprop` after the Keras clipping of
:func:`jrmsprop.keras_clipping`, the argument checks to ``jrmsprop._src.validation``, the config
format to ``keras_config`` and ``minimize``'s gradients to ``minimize``.

How a step runs. ``apply_gradients`` first checks everything (variables, gradients' shapes and
dtypes, the current values of the hyperparameters: schedules evaluated at ``iterations``,
callables called), and only then creates missing slots and makes ONE call to a jitted function
that clips, builds ``jrmsprop.rmsprop`` from those (traced) values and applies the update to
every variable; a failing call changes nothing. The function is compiled once per distinct tree of
shapes and dtypes; changing a hyperparameter's value never recompiles. The variables' and slots'
old buffers are donated, so the update happens in place: arrays read from them earlier are
deleted. The ``iterations`` counter (a scalar) is not donated.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrmsprop._src import arithmetic, keras_config
from jrmsprop._src import minimize as minimize_lib
from jrmsprop._src.clipping import check_clip_arguments, keras_clipping
from jrmsprop._src.keras_slots import OptimizerVariables
from jrmsprop._src.transform import KERAS2, RMSpropState, build, default_slot_dtype
from jrmsprop._src.validation import (
    as_jit_scalar,
    check_bool,
    check_hyperparameter,
    concrete_scalar,
)
from jrmsprop._src.variable import (
    Variable,
    as_gradient,
    dtype_kind,
)

__all__ = ["RMSprop"]

_ALLOWED_KWARGS = ("clipnorm", "clipvalue", "decay", "global_clipnorm", "lr")
_HYPERS = ("learning_rate", "rho", "momentum", "epsilon", "decay")
_CLIPS = ("clipvalue", "clipnorm", "global_clipnorm")
_VARIABLE_HYPERS = ("learning_rate", "rho", "momentum")  # Keras: numbers become float32 Variables
_KERAS_EPSILON = 1e-7  # tf.keras.backend.epsilon()


# ---- the one transformation builder and the compiled step ------------------------------------


def _transforms(
    values: dict[str, Any], clip: dict[str, Any], centered: bool, momentum_slot: bool
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """``(keras_clipping(...), rmsprop(...))`` for hyperparameter values (numbers, arrays, tracers
    or step schedules). Used by the compiled step and by :attr:`RMSprop.transformation`."""
    core, apply = build(
        KERAS2,
        learning_rate=values["learning_rate"],
        rho=values["rho"],
        momentum=values["momentum"],
        epsilon=values["epsilon"],
        centered=centered,
        decay=values["decay"],
        momentum_slot=momentum_slot,  # Keras: a tensor or callable momentum keeps its slot
        apply_fn=True,
    )
    return keras_clipping(**clip), core, apply


@functools.partial(
    jax.jit, static_argnames=("centered", "momentum_slot", "fused"), donate_argnums=(0, 1)
)
def _step(params, slots, count, grads, values, clip, *, centered, momentum_slot, fused):
    """Clipping, the core's update and ``apply_updates`` for every variable, in one program."""
    clipper, _, apply = _transforms(values, clip, centered, momentum_slot)
    grads, _ = clipper.update(grads, clipper.init(params), params)
    # The core updates and applies in one go: on CPU a float32 leaf takes the one-pass kernel
    # (same bits as update + apply_updates), since the buffers here are donated. ``fused`` is
    # off for arrays laid out over several devices (the kernel would gather them).
    params, state = apply(grads, RMSpropState(count, *slots), params, fused=fused)
    return params, (state.rms, state.momentum, state.mg), state.count


# ---- small checks -----------------------------------------------------------------------------


def _is_tensor(value: Any) -> bool:
    """A JAX array, Variable or TF tensor (Keras: a tensor momentum always gets a slot)."""
    if isinstance(value, (jax.Array, Variable)):
        return True
    module = type(value).__module__ or ""
    return module.startswith("tensorflow") and hasattr(value, "dtype")


def _check_assigned(name: str, value: Any) -> None:
    """The check of a hyperparameter Variable's assignments (``opt.rho.assign(2)`` raises)."""
    check_hyperparameter(name, value)


# ---- the optimizer ----------------------------------------------------------------------------


class RMSprop(OptimizerVariables):
    r"""The TF 2.x Keras ``RMSprop`` optimizer, stateful, for :class:`jrmsprop.Variable`\ s.

    Same constructor, methods, slot layout, ``get_weights`` order and config as
    ``tf.keras.optimizers.RMSprop`` of TF 2.0--2.10 (``tf_keras.optimizers.legacy.RMSprop``), and
    the same numbers: each step is :func:`jrmsprop.rmsprop` (after Keras's clipping)

    .. math::

      r \leftarrow \rho r + (1-\rho) g^2, \quad
      m \leftarrow \mu m + \frac{lr\, g}{\sqrt{r + \epsilon}}, \quad p \leftarrow p - m

    (without a momentum slot ``p ← p − lr·g / (√r + ε)``; ``centered`` uses ``r − m_g²``).

    Args:
      learning_rate: a number ``>= 0``, a scalar array, a schedule (a callable of the step, e.g.
        an optax schedule or a Keras ``LearningRateSchedule``; evaluated at ``iterations`` before
        the increment) or a callable of no arguments (called at every step).
      rho: discounting factor of the moving averages, in ``[0, 1]`` (same kinds of values).
      momentum: heavy-ball momentum in ``[0, 1]`` (same kinds). Keras rule: a momentum slot
        exists when momentum is a callable, an array/tensor, or a number > 0; then ε sits inside
        the square root, otherwise outside.
      epsilon: ε ``>= 0`` (a number, array or callable). ``0``/``None`` mean ``1e-7``, as in Keras.
      centered: ``True`` keeps the ``mg`` slot and normalises by the variance estimate.
      name: prefix of the optimizer's variable names.
      **kwargs: ``clipvalue``, ``clipnorm``, ``global_clipnorm`` (Keras 2 gradient clipping,
        applied in that order; finite, ``>= 0``; ``clipnorm`` and ``global_clipnorm`` exclude
        each other), ``decay`` (inverse-time decay: ``lr / (1 + decay·iterations)``) and ``lr``
        (deprecated alias of ``learning_rate``, which it overrides). Any other keyword is a
        ``TypeError``.

    Every value is checked when it is given (constructor, setters, ``assign`` on the
    hyperparameter Variables), a schedule's or callable's value whenever it is evaluated: a bad
    one raises an error naming the argument and changes nothing. Numbers given for
    ``learning_rate``, ``rho`` and ``momentum`` are stored, as in Keras, in float32
    :class:`jrmsprop.Variable` objects; the precision rule for float64 variables is Keras's
    (the core's rule: ``jrmsprop.rmsprop``).

    The optimizer pickles and deep-copies (with its hyperparameters, slots and ``iterations``;
    schedules and callables must themselves be picklable). Slots are keyed by the Variables
    they belong to, so pickle the Variables together with it: ``pickle.dumps((opt, variables))``.

    Example:
      >>> import jrmsprop
      >>> opt = jrmsprop.RMSprop(learning_rate=0.1)
      >>> var1 = jrmsprop.Variable(10.0)
      >>> loss = lambda: (var1 ** 2) / 2.0  # d(loss) / d(var1) = var1
      >>> step_count = opt.minimize(loss, [var1]).numpy()
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
        for key in kwargs:
            if key not in _ALLOWED_KWARGS:
                raise TypeError(
                    f"Unexpected keyword argument passed to optimizer: {key}. Allowed kwargs are "
                    f"{set(_ALLOWED_KWARGS)}."
                )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be a string, got {name!r}")
        if kwargs.get("lr") is not None:
            learning_rate = self._check_hyper("lr", kwargs["lr"], kind="learning_rate")
        hypers = dict(
            learning_rate=learning_rate,
            rho=rho,
            momentum=momentum,
            epsilon=epsilon,
            decay=kwargs.get("decay", 0.0),
        )
        for key, value in hypers.items():  # everything is checked before anything is stored
            self._check_hyper(key, value)
        clips = {key: kwargs.get(key) for key in _CLIPS}
        check_clip_arguments(**clips)
        self._centered = check_bool("centered", centered)
        if "lr" in kwargs:
            warnings.warn(
                "The `lr` argument is deprecated, use `learning_rate` instead.", stacklevel=2
            )
        super().__init__(name or "RMSprop")
        self._var_order: list[Variable] = []  # trained variables, in slot-creation order
        self._hyper: dict[str, Any] = {}
        self._hyper_source: dict[str, Any] = {}  # Python numbers behind float32 Variables
        self._clip = clips
        # Keras: a momentum slot for a tensor or callable momentum, or a number > 0.
        self._momentum = bool(
            _is_tensor(momentum) or callable(momentum) or concrete_scalar("momentum", momentum)
        )
        for key, value in hypers.items():
            self._set_hyper(key, value)

    # -- hyperparameters -------------------------------------------------------------------------

    @staticmethod
    def _check_hyper(name: str, value: Any, kind: str | None = None) -> Any:
        """Keras's ``epsilon or 1e-7``, then the core's check; returns the value to store."""
        if name == "epsilon" and (
            value is None or (not callable(value) and concrete_scalar(name, value) == 0)
        ):
            value = _KERAS_EPSILON
        check_hyperparameter(name, value, kind)
        return value

    def _set_hyper(self, name: str, value: Any) -> None:
        value = self._check_hyper(name, value)
        previous = self._hyper.get(name)
        number = None if callable(value) or _is_tensor(value) else float(np.asarray(value))
        if name not in _VARIABLE_HYPERS or number is None:
            self._hyper[name] = value
            self._hyper_source.pop(name, None)
        elif isinstance(previous, Variable):
            previous.assign(np.float32(number))  # Keras: backend.set_value(hyper, value)
            if name in self._hyper_source:
                self._hyper_source[name] = number
        else:
            variable = Variable(np.float32(number), name=f"{self._name}/{name}", trainable=False)
            variable._check = functools.partial(_check_assigned, name)
            self._hyper[name] = variable
            self._hyper_source[name] = number

    learning_rate = property(
        lambda self: self._hyper["learning_rate"],
        lambda self, value: self._set_hyper("learning_rate", value),
        doc="The learning rate (a float32 Variable for numbers; else the value given).",
    )
    lr = learning_rate  # Keras' old alias
    rho = property(
        lambda self: self._hyper["rho"], lambda self, value: self._set_hyper("rho", value)
    )
    momentum = property(
        lambda self: self._hyper["momentum"],
        lambda self, value: self._set_hyper("momentum", value),
        doc="Momentum (whether a momentum slot exists was fixed at construction, as in Keras).",
    )
    decay = property(
        lambda self: self._hyper["decay"], lambda self, value: self._set_hyper("decay", value)
    )
    epsilon = property(
        lambda self: self._hyper["epsilon"],
        lambda self, value: self._set_hyper("epsilon", value),
    )

    @property
    def centered(self) -> bool:
        return self._centered

    @centered.setter
    def centered(self, value: Any) -> None:
        self._centered = check_bool("centered", value)  # mg slots appear at the next step

    def _set_clip(self, name: str, value: Any) -> None:
        clip = dict(self._clip, **{name: value})
        check_clip_arguments(**clip)
        self._clip = clip

    clipnorm = property(
        lambda self: self._clip["clipnorm"],
        lambda self, value: self._set_clip("clipnorm", value),
        doc="``float`` or ``None``. If set, clips each gradient to this maximum norm.",
    )
    global_clipnorm = property(
        lambda self: self._clip["global_clipnorm"],
        lambda self, value: self._set_clip("global_clipnorm", value),
        doc="``float`` or ``None``. If set, clips all gradients together to this global norm.",
    )
    clipvalue = property(
        lambda self: self._clip["clipvalue"],
        lambda self, value: self._set_clip("clipvalue", value),
        doc="``float`` or ``None``. If set, clips every gradient element to ``[-value, value]``.",
    )

    @property
    def name(self) -> str:
        return self._name

    def _current(self, name: str, step: Any) -> Any:
        """A hyperparameter's current value (schedules at ``step``, callables called), checked."""
        value = self._hyper[name]
        if isinstance(value, Variable):
            return value.value
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
            check_hyperparameter(name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"RMSprop: the value the callable `{name}` returned: {e}") from e
        return value

    def _step_values(self, step: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The jit arguments: every hyperparameter and clip threshold as a checked 0-d array."""
        values = {name: as_jit_scalar(self._current(name, step)) for name in _HYPERS}
        clip = {k: as_jit_scalar(v) for k, v in self._clip.items() if v is not None}
        return values, clip

    # -- variables: iterations, slots, weights ---------------------------------------------------

    def _needed_slots(self) -> tuple[str, ...]:
        return (
            ("rms",)
            + (("momentum",) if self._momentum else ())
            + (("mg",) if self._centered else ())
        )

    def _unbuilt(self, var_list: list[Variable]) -> list[Variable]:
        """The variables of ``var_list`` that lack a slot, after checking their dtypes."""
        needed = self._needed_slots()
        missing = [v for v in var_list if not all(s in self._slots.get(v, ()) for s in needed)]
        for var in missing:
            if dtype_kind(var.dtype) not in "fc":
                raise TypeError(
                    f"RMSprop: variable {var.name!r} has dtype {var.dtype}; only floating-point "
                    "(or complex) variables can be trained"
                )
        return missing

    def _create_slots(self, var_list: list[Variable]) -> None:
        """Keras's order: every ``rms``, then every ``momentum``, then every ``mg``."""
        _ = self.iterations
        for slot in self._needed_slots():
            for var in var_list:
                dtype = default_slot_dtype(var.dtype)  # the core's rule (float16: float32)
                self.add_slot(
                    var, slot, dtype=arithmetic.real_dtype(dtype) if slot == "rms" else dtype
                )
        known = set(self._var_order)
        self._var_order.extend(v for v in dict.fromkeys(var_list) if v not in known)

    def build(self, var_list: Any) -> None:
        """Creates ``iterations`` and every slot for ``var_list`` now (e.g. before set_weights)."""
        variables = minimize_lib.flatten_variables(var_list)
        self._create_slots(self._unbuilt(variables))

    @property
    def var_list(self) -> list[Variable]:
        """The trained variables, in the order their slots were created (:attr:`state`'s)."""
        return list(self._var_order)

    # -- the functional view ---------------------------------------------------------------------

    @property
    def state(self) -> RMSpropState:
        """The optimizer state as the functional core's :class:`jrmsprop.RMSpropState`.

        ``count`` is ``iterations``; ``rms`` / ``momentum`` / ``mg`` are tuples over
        :attr:`var_list` (``None`` without that slot). The arrays are the live buffers: the next
        ``apply_gradients`` donates them (copy with ``jax.tree.map(jnp.copy, opt.state)`` to
        keep them). Assigning a state of the same structure loads it (copied).
        """

        def slot(name: str) -> tuple[jax.Array, ...] | None:
            if name not in self._needed_slots():
                return None
            return tuple(self._slots[v][name]._value for v in self._var_order)

        return RMSpropState(self.iterations._value, slot("rms"), slot("momentum"), slot("mg"))

    @state.setter
    def state(self, state: RMSpropState) -> None:
        if not isinstance(state, RMSpropState):
            raise TypeError(f"`state` must be an RMSpropState, got {type(state).__name__}")
        targets, values = [self.iterations], [state.count]
        needed = self._needed_slots()
        for name in ("rms", "momentum", "mg"):
            tree = getattr(state, name)
            if (tree is not None) != (name in needed):
                raise ValueError(
                    f"`state.{name}` is {'missing' if name in needed else 'unexpected'} for this "
                    "optimizer's configuration"
                )
            if tree is None:
                continue
            leaves = list(tree) if isinstance(tree, (list, tuple)) else jax.tree.leaves(tree)
            if len(leaves) != len(self._var_order):
                raise ValueError(
                    f"`state.{name}` has {len(leaves)} leaves, expected {len(self._var_order)} "
                    "(one per variable of `var_list`)"
                )
            targets += [self._slots[v][name] for v in self._var_order]
            values += leaves
        self._load(targets, values, "state")

    @property
    def transformation(self) -> optax.GradientTransformation:
        """The equivalent optax transformation (Keras clipping, then :func:`jrmsprop.rmsprop`).

        Built from the current hyperparameter values, by the same builder as the step: numbers,
        arrays and Variables as their current value, step schedules passed through (they must
        then be JAX-traceable, like optax schedules), no-argument callables evaluated now.
        Without clipping it is ``jrmsprop.rmsprop(...)`` itself, whose state has the layout of
        :attr:`state` for ``params = tuple(v.value for v in opt.var_list)``; with clipping an
        ``optax.chain`` whose state ends with that :class:`RMSpropState`.
        """
        values = {
            name: value
            if keras_config.is_step_schedule(value)
            else as_jit_scalar(self._current(name, 0))
            for name, value in self._hyper.items()
        }
        clip = {k: as_jit_scalar(v) for k, v in self._clip.items() if v is not None}
        clipper, core, _ = _transforms(values, clip, self._centered, self._momentum)
        return optax.chain(clipper, core) if clip else core

    # -- the step --------------------------------------------------------------------------------

    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[Any, Variable]],
        name: str | None = None,
        experimental_aggregate_gradients: bool = True,
    ) -> Variable:
        """Applies ``(gradient, variable)`` pairs in place; returns :attr:`iterations`.

        Gradients may be arrays (NumPy/JAX/TF; non-JAX ones are converted to the variable's
        dtype), :class:`jrmsprop.IndexedSlices` (the sparse path) or ``tf.IndexedSlices``-like
        objects. Pairs whose gradient is ``None`` are skipped with a warning; if all are ``None``
        it is a ``ValueError``. Everything is checked before any slot is created or any value
        changes. All variables move in one compiled call (see the module doc).

        Args:
          grads_and_vars: iterable of ``(gradient, Variable)``.
          name: ignored (TF op name).
          experimental_aggregate_gradients: ignored: there are no replicas to sum over.

        Returns:
          The ``iterations`` Variable, incremented.
        """
        del name, experimental_aggregate_gradients
        return self._apply(grads_and_vars, stacklevel=3)

    def _apply(self, grads_and_vars: Iterable[tuple[Any, Variable]], stacklevel: int) -> Variable:
        pairs = []
        for pair in grads_and_vars:
            try:
                grad, var = pair
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"`grads_and_vars` must contain (gradient, variable) pairs, got {pair!r}"
                ) from e
            if not isinstance(var, Variable):
                raise TypeError(
                    f"apply_gradients: expected a jrmsprop.Variable, got {type(var).__name__}"
                )
            pairs.append((grad, var))
        kept = [(g, v) for g, v in pairs if g is not None]
        if pairs and not kept:
            raise ValueError(
                f"No gradients provided for any variable: {[v.name for _, v in pairs]}. "
                f"Provided `grads_and_vars` is {pairs}."
            )
        var_list = [v for _, v in kept]
        if len(set(var_list)) != len(var_list):
            raise ValueError(
                "apply_gradients: a variable appears more than once in `grads_and_vars`; sum "
                "its gradients first"
            )
        # Everything that can fail, before any state changes:
        unbuilt = self._unbuilt(var_list)
        grads = tuple(
            g
            if isinstance(g, jax.Array) and g.shape == v.shape and g.dtype == v.dtype
            else as_gradient(g, v)
            for g, v in kept
        )
        count = (
            self._iterations._value if self._iterations is not None else jnp.zeros((), jnp.int32)
        )
        values, clip = self._step_values(count) if kept else (None, None)
        missing = [v.name for g, v in pairs if g is None]
        if missing:
            warnings.warn(
                f"Gradients do not exist for variables {missing} when minimizing the loss. If "
                "you're using `model.compile()`, did you forget to provide a `loss` argument?",
                UserWarning,
                stacklevel=stacklevel,
            )
        self._create_slots(unbuilt)
        if kept:
            self._run_step(var_list, grads, values, clip)
        return self.iterations

    def _run_step(self, var_list, grads, values, clip) -> None:
        slots = [
            [self._slots[v][name]._value for v in var_list]
            if name in self._needed_slots()
            else None
            for name in ("rms", "momentum", "mg")
        ]
        params = [v._value for v in var_list]
        # Donated arrays must be distinct and must not double as other inputs (e.g. a gradient
        # that *is* a parameter: loss p²/2). Variables copy what they are given, so identity is
        # the test.
        seen: set[int] = set()
        for group in (params, *slots):
            for i, array in enumerate(group or ()):
                if id(array) in seen:
                    group[i] = array = jnp.array(array, copy=True)
                seen.add(id(array))

        def unalias(x: Any) -> Any:
            return jnp.array(x, copy=True) if isinstance(x, jax.Array) and id(x) in seen else x

        count = self.iterations._value
        grads, values, clip, count = jax.tree.map(unalias, (grads, values, clip, count))
        new_params, new_slots, new_count = _step(
            tuple(params),
            tuple(None if s is None else tuple(s) for s in slots),
            count,
            grads,
            values,
            clip,
            centered=self._centered,
            momentum_slot=self._momentum,
            fused=all(len(p.sharding.device_set) == 1 for p in params),
        )
        for var, value in zip(var_list, new_params, strict=True):
            var._replace(value)
        for name, new in zip(("rms", "momentum", "mg"), new_slots, strict=True):
            for var, value in zip(var_list, new, strict=True) if new is not None else ():
                self._slots[var][name]._replace(value)
        self.iterations._replace(new_count)

    def minimize(
        self,
        loss: Callable[[], Any],
        var_list: Any,
        grad_loss: Any = None,
        name: str | None = None,
        tape: Any = None,
    ) -> Variable:
        """Computes the gradients of ``loss()`` with JAX and applies them; returns ``iterations``.

        ``loss`` is a callable of no arguments that reads the Variables (as in Keras); it runs
        eagerly under ``jax.vjp`` (see ``jrmsprop._src.minimize``). A variable that the loss
        never reads gets a ``None`` gradient (skipped with a warning, as in Keras); one read
        *only* through :meth:`Variable.sparse_read` gets an :class:`IndexedSlices` gradient.

        Args:
          loss: callable of no arguments returning the loss (a non-scalar loss is summed, as
            ``tape.gradient`` does, unless ``grad_loss`` is given).
          var_list: Variables to train, or a callable returning them (called after ``loss``
            has run once, so the loss may create them).
          grad_loss: optional cotangent of the loss (its gradient), shaped like the loss.
          name: ignored.
          tape: unsupported (JAX has no gradient tape); must be None.

        Returns:
          The ``iterations`` Variable, incremented.
        """
        del name
        grads_and_vars = minimize_lib.compute_gradients(loss, var_list, grad_loss, tape)
        return self._apply(grads_and_vars, stacklevel=3)

    # -- config ----------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The Keras 2 config: name, (clipnorm, clipvalue, global_clipnorm when set),
        learning_rate, decay, rho, momentum, epsilon, centered.

        Numbers come back as given (float32 hyperparameters as stored when changed); a schedule
        with ``get_config`` becomes a Keras-style ``{'module', 'class_name', 'config'}`` dict,
        a callable of no arguments its current value (Keras' rule).
        """
        serialize = keras_config.serialize_hyperparameter
        config: dict[str, Any] = {"name": self._name}
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if self._clip[key] is not None:
                config[key] = serialize(key, self._clip[key])
        for key in ("learning_rate", "decay", "rho", "momentum", "epsilon"):
            config[key] = serialize(key, self._hyper[key], self._hyper_source.get(key))
        config["centered"] = self._centered
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> RMSprop:
        """Creates an optimizer from :meth:`get_config`'s dict (or a TF 2.x Keras RMSprop's).

        ``lr`` is renamed ``learning_rate``; dict values with ``class_name``/``config`` are
        rebuilt (classes from ``custom_objects`` by name, else imported from ``module``).
        """
        return cls(**keras_config.config_to_kwargs(config, custom_objects))

    def __repr__(self) -> str:
        return f"<jrmsprop.RMSprop name={self._name!r} centered={self._centered}>"
