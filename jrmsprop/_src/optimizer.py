"""``jrmsprop.RMSprop``: the TF 2.x Keras ``RMSprop`` optimizer API, stateful, on JAX.

A thin wrapper, in the manner of flax's ``nnx.Optimizer``: it holds the hyperparameters, the
trained :class:`jrmsprop.Variable`\\ s' slots and the step counter, and delegates every decision:
the update to :func:`jrmsprop.rmsprop` after the Keras clipping of :func:`jrmsprop.keras_clipping`,
Keras's rules for storing and evaluating hyperparameters to ``keras_hyperparameters``, the
variables and slots to ``keras_slots``, the checks of ``apply_gradients``' pairs and the
donation rules to ``step_inputs``, the config format to ``keras_config`` and ``minimize``'s
gradients to ``minimize``.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jrmsprop._src import keras_config, step_inputs
from jrmsprop._src import keras_hyperparameters as hyper_lib
from jrmsprop._src import minimize as minimize_lib
from jrmsprop._src.clipping import keras_clipping
from jrmsprop._src.keras_hyperparameters import KerasHyperparameters, optimizer_property
from jrmsprop._src.keras_slots import OptimizerVariables
from jrmsprop._src.transform import KERAS2, RMSpropState, build, slot_dtype_of
from jrmsprop._src.update_and_apply import update_and_apply
from jrmsprop._src.validation import check_bool, legacy_lr
from jrmsprop._src.variable import Variable, dtype_kind, exact_array

__all__ = ["RMSprop"]


# ---- the one transformation builder and the compiled step ------------------------------------


def _transforms(
    values: dict[str, Any], clip: dict[str, Any], centered: bool, momentum_slot: bool
) -> tuple[optax.GradientTransformation, optax.GradientTransformationExtraArgs]:
    """``(keras_clipping(...), rmsprop(...))`` for hyperparameter
    values (numbers, arrays, tracers or step schedules). Used by the compiled step and by
    :attr:`RMSprop.transformation`."""
    core = build(
        KERAS2,
        learning_rate=values["learning_rate"],
        rho=values["rho"],
        momentum=values["momentum"],
        epsilon=values["epsilon"],
        centered=centered,
        decay=values["decay"],
        momentum_slot=momentum_slot,  # Keras: a tensor or callable momentum keeps its slot
    )
    return keras_clipping(**clip), core


@functools.partial(jax.jit, static_argnames=("centered", "momentum_slot"), donate_argnums=(0, 1))
def _step(params, slots, count, grads, values, clip, *, centered, momentum_slot):
    """Clipping, the core's update and ``apply_updates`` for every variable, in one program."""
    clipper, core = _transforms(values, clip, centered, momentum_slot)
    grads, _ = clipper.update(grads, clipper.init(params), params)
    # The core updates and applies in one go: on CPU a float32 leaf takes the one-pass kernel
    # (same bits as update + apply_updates), since the buffers here are donated; a program
    # over arrays laid out on several devices keeps the XLA path (decided when it is lowered).
    params, state = update_and_apply(core, grads, RMSpropState(count, *slots), params)
    return params, (state.rms, state.momentum, state.mg), state.count


def _weight_array(value: Any, what: str) -> Any:
    """A value to load into a weight: as it is when it is a Variable or JAX array, else as a
    NumPy array, checked to be numbers (not ``None``, a string or a ragged list; the error
    starts with ``what``, which names the weight)."""
    if isinstance(value, (Variable, jax.Array)):
        return value
    return exact_array(value, what)


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
      learning_rate: a number ``>= 0``, a scalar array, a schedule (a callable that requires
        one positional argument, the step, e.g. an optax schedule, or a Keras
        ``LearningRateSchedule``; evaluated at ``iterations`` before the increment) or a callable
        that can be called without arguments (called so at every step, as Keras does).
      rho: discounting factor of the moving averages, in ``[0, 1]`` (same kinds of values).
      momentum: heavy-ball momentum in ``[0, 1]`` (same kinds). Keras rule: a momentum slot
        exists when momentum is a callable, an array/tensor, or a number > 0 (a ``tf.Variable``
        or :class:`jrmsprop.Variable` counts by its value); then ε sits inside the square root,
        otherwise outside.
      epsilon: ε ``>= 0`` (a number, array or callable). ``0``/``None`` mean ``1e-7`` here, as
        in Keras (``opt.epsilon = 0`` afterwards does set 0, also as in Keras).
      centered: ``True`` keeps the ``mg`` slot and normalises by the variance estimate.
      name: prefix of the optimizer's variable names.
      **kwargs: ``clipvalue``, ``clipnorm``, ``global_clipnorm`` (Keras 2 gradient clipping,
        applied in that order; finite, ``>= 0``; ``clipnorm`` and ``global_clipnorm`` exclude
        each other), ``decay`` (inverse-time decay: ``lr / (1 + decay·iterations)``) and ``lr``
        (deprecated alias of ``learning_rate``, which it overrides). Any other keyword is a
        ``TypeError``. ``decay`` is fixed at construction, as Keras's ``_initial_decay``.

    Every value is checked when it is given (constructor, setters, ``assign`` on the
    hyperparameter Variables), a schedule's or callable's value whenever it is evaluated, and
    the value of a Variable you passed (which you may assign later) at every step: a bad one
    raises an error naming the argument and changes nothing. Numbers given for
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
        hyper_lib.check_keywords(kwargs)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be a string, got {name!r}")
        learning_rate = legacy_lr(learning_rate, kwargs)
        hypers = dict(
            learning_rate=learning_rate,
            rho=rho,
            momentum=momentum,
            epsilon=epsilon,
            decay=kwargs.get("decay", 0.0),
        )
        # Everything is checked before anything is stored.
        hyperparameters = KerasHyperparameters(
            name or "RMSprop", hypers, {key: kwargs.get(key) for key in hyper_lib.CLIPS}
        )
        centered = check_bool("centered", centered)
        super().__init__(name or "RMSprop")
        self._hyperparameters = hyperparameters
        self._centered = centered
        self._var_order: list[Variable] = []  # trained variables, in slot-creation order
        self._momentum = hyper_lib.keeps_momentum_slot(momentum)

    # -- hyperparameters (stored by ``keras_hyperparameters``) -----------------------------------

    learning_rate = optimizer_property(
        "learning_rate", "The learning rate (a float32 Variable for numbers; else the value given)."
    )
    lr = learning_rate  # Keras' old alias
    rho = optimizer_property("rho", "Discounting factor of the moving averages.")
    momentum = optimizer_property(
        "momentum",
        "Momentum (whether a momentum slot exists was fixed at construction, as in Keras).",
    )
    decay = optimizer_property(
        "decay",
        "Inverse-time decay of the learning rate (a float32 Variable for numbers). As in Keras, "
        "the steps and ``get_config`` use the constructor's ``decay``: setting or assigning this "
        "changes neither.",
    )
    epsilon = optimizer_property(
        "epsilon",
        "ε (``0`` or ``None`` given to the constructor mean ``1e-7``; ``0`` set later is 0).",
    )
    clipnorm = optimizer_property(
        "clipnorm", "``float`` or ``None``. If set, clips each gradient to this maximum norm."
    )
    global_clipnorm = optimizer_property(
        "global_clipnorm",
        "``float`` or ``None``. If set, clips all gradients together to this global norm.",
    )
    clipvalue = optimizer_property(
        "clipvalue",
        "``float`` or ``None``. If set, clips every gradient element to ``[-value, value]``.",
    )

    @property
    def centered(self) -> bool:
        return self._centered

    @centered.setter
    def centered(self, value: Any) -> None:
        self._centered = check_bool("centered", value)  # mg slots appear at the next step

    @property
    def name(self) -> str:
        return self._name

    # -- variables: iterations, slots, weights ---------------------------------------------------

    def _needed_slots(self) -> tuple[str, ...]:
        return (
            ("rms",)
            + (("momentum",) if self._momentum else ())
            + (("mg",) if self._centered else ())
        )

    def _unbuilt(self, var_list: list[Variable]) -> list[Variable]:
        """The variables of ``var_list`` that lack a slot, after checking their dtypes and the
        shapes and dtypes of the slots made since the last check (e.g. by :meth:`add_slot`)."""
        needed = self._needed_slots()
        needed_set = frozenset(needed)
        missing = [v for v in var_list if not self._slots.get(v, {}).keys() >= needed_set]
        for var in missing:
            if dtype_kind(var.dtype) not in "fc":
                raise TypeError(
                    f"RMSprop: variable {var.name!r} has dtype {var.dtype}; only floating-point "
                    "(or complex) variables can be trained"
                )
        if self._unchecked_slots:  # slots made since the last step: checked once, in order
            checked = set()
            for var in var_list:
                for name in needed:
                    if (var, name) in self._unchecked_slots:
                        self._check_slot(var, name, self._slots[var][name])
                        checked.add((var, name))
            self._unchecked_slots -= checked
        return missing

    @staticmethod
    def _check_slot(var: Variable, name: str, slot: Variable) -> None:
        """A slot the step will use: the variable's shape, a floating-point dtype (``rms``
        real; ``momentum`` and ``mg`` complex too for a complex variable)."""
        if slot.shape != var.shape:
            raise ValueError(
                f"RMSprop: slot {name!r} of variable {var.name!r} has shape {slot.shape}, but "
                f"the variable has shape {var.shape}"
            )
        kinds = "fc" if name != "rms" and dtype_kind(var.dtype) == "c" else "f"
        if dtype_kind(slot.dtype) not in kinds:
            wanted = "a floating-point or complex" if kinds == "fc" else "a real floating-point"
            raise TypeError(
                f"RMSprop: slot {name!r} of variable {var.name!r} has dtype {slot.dtype}; it "
                f"must have {wanted} dtype"
            )

    def _create_slots(self, var_list: list[Variable]) -> None:
        """Keras's order: every ``rms``, then every ``momentum``, then every ``mg``."""
        _ = self.iterations
        for slot in self._needed_slots():
            for var in var_list:
                # the core's rule: float32 for float16, a real rms for a complex variable
                dtype = slot_dtype_of(var.dtype, real=slot == "rms", complex_as_real=False)
                self.add_slot(var, slot, dtype=dtype)
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
            values += [_weight_array(leaf, f"`state.{name}[{i}]`") for i, leaf in enumerate(leaves)]
        values[0] = _weight_array(values[0], "`state.count`")
        self._load(targets, values, "state")

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Loads values in :attr:`weights` order, e.g. a TF 2.x Keras RMSprop's ``get_weights()``.

        All values are checked first (each must be an array of numbers: a ragged list, ``None``
        or a string is refused naming its index; then length, shapes, dtypes: integers in
        ``[0, 2**31 - 1]`` for ``iterations``, real numbers for real slots); on any error
        nothing changes. As in Keras' RMSprop, a list one shorter than ``weights`` is taken to
        lack ``iterations`` (which is then reset to 0). Build the optimizer first
        (:meth:`build` or one step).
        """
        if not isinstance(weights, (str, bytes, dict)) and isinstance(weights, Iterable):
            weights = list(weights)
            offset = 1 if len(self._weights) == len(weights) + 1 else 0
            names = [w.name for w in self._weights[offset:]]
            if len(names) != len(weights):
                names = []
            weights = [
                _weight_array(
                    value,
                    f"set_weights: weight {i}" + (f" ({names[i]!r})" if names else ""),
                )
                for i, value in enumerate(weights)
            ]
        super().set_weights(weights)

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
        values, clip = self._hyperparameters.transformation_values()
        clipper, core = _transforms(values, clip, self._centered, self._momentum)
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
        try:
            if isinstance(grads_and_vars, (str, bytes)):  # iterable, but of characters
                raise TypeError
            grads_and_vars = iter(grads_and_vars)
        except TypeError:
            raise TypeError(
                "apply_gradients: `grads_and_vars` must be an iterable of (gradient, variable) "
                f"pairs, got {type(grads_and_vars).__name__}"
            ) from None
        return self._apply(grads_and_vars, stacklevel=3)

    def _apply(self, grads_and_vars: Iterable[tuple[Any, Variable]], stacklevel: int) -> Variable:
        kept, missing = step_inputs.split_pairs(grads_and_vars)
        var_list = [v for _, v in kept]
        # Everything that can fail, before any state changes:
        unbuilt = self._unbuilt(var_list)
        grads = step_inputs.as_gradients(kept)
        count = (
            self._iterations._value if self._iterations is not None else jnp.zeros((), jnp.int32)
        )
        values, clip = self._hyperparameters.step_values(count) if kept else (None, None)
        step_inputs.warn_missing(missing, stacklevel)
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
        (params, *slots), (grads, values, clip, count) = step_inputs.distinct_donations(
            [[v._value for v in var_list], *slots], (grads, values, clip, self.iterations._value)
        )
        new_params, new_slots, new_count = _step(
            params,
            tuple(slots),
            count,
            grads,
            values,
            clip,
            centered=self._centered,
            momentum_slot=self._momentum,
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
        return {"name": self._name, **self._hyperparameters.config(), "centered": self._centered}

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> RMSprop:
        """Creates an optimizer from :meth:`get_config`'s dict (or a TF 2.x Keras RMSprop's).

        ``lr`` is renamed ``learning_rate``; dict values with ``class_name``/``config`` are
        rebuilt: classes from ``custom_objects`` by name, else imported from ``module`` -- only
        a Keras ``LearningRateSchedule`` from keras, tf_keras or TensorFlow, since a config read
        from a file names what is imported and called (anything else is a ``ValueError``).
        """
        if custom_objects is not None and not isinstance(custom_objects, Mapping):
            raise TypeError(
                "from_config: `custom_objects` must be a dict mapping class names to classes, "
                f"got {type(custom_objects).__name__}"
            )
        return cls(**keras_config.config_to_kwargs(config, custom_objects))

    def __repr__(self) -> str:
        return f"<jrmsprop.RMSprop name={self._name!r} centered={self._centered}>"
