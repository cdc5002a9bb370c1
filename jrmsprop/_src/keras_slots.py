"""The Keras 2 optimizer's variable bookkeeping: ``iterations``, slots, ``weights``.

``OptimizerVariables`` is the part of TF 2.x Keras's ``OptimizerV2`` that owns variables and knows
nothing of any algorithm: the step counter, ``add_weight`` / ``add_slot`` / ``get_slot``, the
``weights`` list in creation order and ``get_weights`` / ``set_weights``. ``jrmsprop.RMSprop``
builds on it. Loading is atomic: every value is checked before any variable changes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src.validation import INT32_MAX, check_bool, slot_values
from jrmsprop._src.variable import (
    AGGREGATIONS,
    SYNCHRONIZATIONS,
    Variable,
    as_array,
    canonical_dtype,
    dtype_kind,
    enum_name,
)

__all__ = ["OptimizerVariables"]

# The most bytes one array may take: XLA aborts the process (it does not raise) when the product
# of a shape's sizes, in bytes, overflows a signed 64-bit integer.
_MAX_BYTES = 2**63 - 1


def _check_iterations(value: Any) -> None:
    """The check of ``iterations``' assignments: an integer in ``[0, 2**31 - 1]`` (an object
    array holds Python ints beyond 64 bits)."""
    array = np.asarray(value)
    if array.dtype.kind != "O" and dtype_kind(array.dtype) not in "iu":
        raise TypeError(f"`iterations` must be an integer, got dtype {array.dtype}")
    if array.size and not (array.min() >= 0 and array.max() <= INT32_MAX):
        raise ValueError(f"`iterations` must be in [0, {INT32_MAX}], got {array.tolist()}")


def _check_weight_dtype(target: Variable, array: Any) -> None:
    """Whether ``array`` may be loaded into ``target`` (set_weights, state): same kind of number."""
    kind, target_kind = dtype_kind(array.dtype), dtype_kind(target.dtype)
    if target_kind in "iu" and kind in "iu":
        if array.size:
            values = np.asarray(array)
            if not (values.min() >= 0 and values.max() <= INT32_MAX):
                raise ValueError(
                    f"{target.name!r} must be in [0, {INT32_MAX}], got {values.tolist()}"
                )
        return
    if kind in ("iufc" if target_kind == "c" else "iuf") and target_kind not in "iu":
        return
    raise TypeError(
        f"Cannot load a value of dtype {array.dtype} into {target.name!r} (dtype {target.dtype})"
    )


def _dimension(d: Any, shape: Any) -> int:
    """One size of a ``shape``: an integer (``operator.index``: not a float, a string or a bool)."""
    if isinstance(d, (bool, np.bool_)):
        raise TypeError(f"`shape` must be a sequence of integers, got {shape!r} (a boolean size)")
    try:
        return operator.index(d)
    except TypeError as e:
        raise TypeError(
            f"`shape` must be a sequence of integers, got {shape!r} ({type(d).__name__} size {d!r})"
        ) from e


def _check_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of integers >= 0 (TypeError / ValueError naming `shape`)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise TypeError(f"`shape` must be a sequence of integers, got {shape!r}")
    try:
        sizes = list(shape)
    except TypeError as e:  # e.g. a 0-d array
        raise TypeError(f"`shape` must be a sequence of integers, got {shape!r}") from e
    checked = tuple(_dimension(d, shape) for d in sizes)
    if any(d < 0 for d in checked):
        raise ValueError(f"`shape` must not have negative sizes, got {checked}")
    return checked


def _check_size(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuses a shape no array can have: its sizes (zeros aside) times the item size beyond
    ``2**63 - 1`` bytes, which would abort the interpreter inside XLA instead of raising."""
    product = 1
    for d in shape:
        product *= d or 1
    if product * dtype.itemsize > _MAX_BYTES:
        sizes = "its non-zero sizes" if 0 in shape else "its sizes"
        raise ValueError(
            f"`shape` {shape} is too large for an array of dtype {dtype.name}: {sizes} multiply "
            f"to {product}, which times {dtype.itemsize} bytes is more than 2**63 - 1 bytes"
        )


def _initial_value(initializer: Any, shape: Sequence[int], dtype: Any) -> jax.Array:
    """Keras-style initializer: 'zeros' / 'ones', a callable ``(shape, dtype)``, or a value.

    The shape and dtype are checked before anything is computed."""
    shape = _check_shape(shape)
    try:
        dtype = canonical_dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`dtype` must be a dtype, got {dtype!r}") from e
    _check_size(shape, np.dtype(dtype))
    if isinstance(initializer, str):
        key = initializer.lower()
        if key in ("zeros", "ones"):
            return (jnp.zeros if key == "zeros" else jnp.ones)(shape, dtype)
        raise ValueError(
            f"Unknown `initializer` {initializer!r}: use 'zeros', 'ones', a callable "
            "initializer(shape, dtype) or a value"
        )
    if callable(initializer) and not isinstance(initializer, Variable):
        initializer = initializer(shape, dtype=dtype)
    array = as_array(initializer, dtype)
    if array.shape != shape:
        if array.ndim != 0:
            raise ValueError(f"`initializer` gave shape {array.shape}, expected {shape}")
        array = jnp.full(shape, array, dtype)
    return array


class OptimizerVariables:
    """Keras's optimizer variables: ``iterations``, slots per trained Variable, ``weights``.

    Args:
      name: prefix of the variables' names (``"RMSprop/iter"``, ``"RMSprop/w/rms"``).
    """

    def __init__(self, name: str):
        self._name = name
        self._weights: list[Variable] = []  # iterations, then slots, in creation order
        self._slots: dict[Variable, dict[str, Variable]] = {}
        self._slot_names: list[str] = []
        self._iterations: Variable | None = None
        # Slots made since a step last checked them (by add_slot, the user's or the optimizer's):
        # the step checks each once, instead of every slot of every variable on every call.
        self._unchecked_slots: set[tuple[Variable, str]] = set()

    @property
    def iterations(self) -> Variable:
        """int32 scalar Variable: the number of steps run. Assign it with ``.assign(n)``
        (``n >= 0``).

        Setting ``opt.iterations = variable`` installs a Variable before the optimizer's weights
        exist (Keras); setting it to a number assigns that number (a jrmsprop convenience).
        """
        if self._iterations is None:
            self._install_iterations(
                self.add_weight(
                    "iter",
                    shape=[],
                    dtype=np.int32,
                    trainable=False,
                    aggregation="only_first_replica",
                )
            )
        return self._iterations

    @iterations.setter
    def iterations(self, variable: Any) -> None:
        if not isinstance(variable, Variable):
            self.iterations.assign(variable)
            return
        if self._iterations is not None:
            raise RuntimeError(
                "Cannot set `iterations` to a new Variable after the Optimizer weights have "
                f"been created. Here it is attempting to set `iterations` to {variable}."
            )
        if variable.shape != () or variable.dtype != np.int32:
            raise TypeError(
                f"`iterations` must be an int32 scalar Variable, got shape {variable.shape} "
                f"dtype {variable.dtype}"
            )
        _check_iterations(variable.value)
        self._install_iterations(variable)

    def _install_iterations(self, variable: Variable) -> None:
        variable._check = _check_iterations
        self._iterations = variable
        self._weights.append(variable)

    def add_weight(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any = None,
        initializer: Any = "zeros",
        trainable: bool | None = None,
        synchronization: Any = "auto",
        aggregation: Any = "none",
    ) -> Variable:
        """Creates a non-slot optimizer variable (as Keras 2, it is *not* added to ``weights``).

        Args:
          name: the variable's name (prefixed with the optimizer's name).
          shape: its shape.
          dtype: its dtype (default float32).
          initializer: ``'zeros'``, ``'ones'``, a callable ``initializer(shape, dtype=dtype)``
            (e.g. a Keras initializer) or a value (broadcast from a scalar).
          trainable: default True, False for ``synchronization='on_read'`` (True with it is an
            error, as in Keras).
          synchronization: ``'auto'``, ``'none'``, ``'on_write'``, ``'on_read'`` or a
            ``tf.VariableSynchronization``.
          aggregation: ``'none'``, ``'sum'``, ``'mean'``, ``'only_first_replica'`` or a
            ``tf.VariableAggregation``.

        Returns:
          The new Variable. ``synchronization`` and ``aggregation`` govern how TF mirrors a
          variable across replicas; a JAX program holds each variable once, so they are
          validated and recorded on the Variable but change nothing.
        """
        if not isinstance(name, str):
            raise TypeError(f"add_weight: `name` must be a string, got {name!r}")
        sync = enum_name("synchronization", synchronization, SYNCHRONIZATIONS)
        agg = enum_name("aggregation", aggregation, AGGREGATIONS)
        if trainable is not None:
            trainable = check_bool("trainable", trainable)
        if sync == "on_read" and trainable:
            raise ValueError(
                "Synchronization value can be set to VariableSynchronization.ON_READ only "
                "for non-trainable variables. You have specified trainable=True and "
                "synchronization=VariableSynchronization.ON_READ."
            )
        value = _initial_value(initializer, shape, np.float32 if dtype is None else dtype)
        return Variable(
            value,
            name=f"{self._name}/{name}",
            dtype=value.dtype,
            trainable=trainable,  # None: Variable's rule (TF's: True unless on_read)
            synchronization=sync,
            aggregation=agg,
        )

    def add_slot(
        self,
        var: Variable,
        slot_name: str,
        initializer: Any = "zeros",
        shape: Sequence[int] | None = None,
        *,
        dtype: Any = None,
    ) -> Variable:
        """Creates (or returns the existing) slot ``slot_name`` of ``var``; appended to ``weights``.

        Args:
          var: the trained Variable.
          slot_name: the slot's name (``'rms'``, ``'momentum'`` and ``'mg'`` are RMSprop's).
          initializer: as for :meth:`add_weight`.
          shape: the slot's shape (default: the variable's).
          dtype: the slot's dtype (default: the variable's; jrmsprop extension).

        Returns:
          The slot Variable.
        """
        if not isinstance(var, Variable):
            raise TypeError(
                f"add_slot: `var` must be a jrmsprop.Variable, got {type(var).__name__}"
            )
        if not isinstance(slot_name, str):
            raise TypeError(f"add_slot: `slot_name` must be a string, got {slot_name!r}")
        weight = self._slots.get(var, {}).get(slot_name)
        if weight is None:
            value = _initial_value(
                initializer,
                var.shape if shape is None else shape,
                var.dtype if dtype is None else dtype,
            )
            weight = Variable(
                value,
                name=f"{self._name}/{var.name}/{slot_name}",
                dtype=value.dtype,
                trainable=False,
            )
            if slot_name not in self._slot_names:
                self._slot_names.append(slot_name)
            self._slots.setdefault(var, {})[slot_name] = weight
            self._unchecked_slots.add((var, slot_name))
            self._weights.append(weight)
        return weight

    def get_slot(self, var: Variable, slot_name: str) -> Variable:
        """The slot ``slot_name`` of ``var`` (KeyError if it does not exist)."""
        try:
            return self._slots[var][slot_name]
        except (KeyError, TypeError):
            raise KeyError(
                f"No slot {slot_name!r} for variable {getattr(var, 'name', var)!r}; slots: "
                f"{sorted(self._slots.get(var, {})) if isinstance(var, Variable) else []}"
            ) from None

    def get_slot_names(self) -> list[str]:
        """The names of the slots created so far (``['rms', 'momentum', 'mg']`` at most)."""
        return list(self._slot_names)

    @property
    def weights(self) -> list[Variable]:
        """The optimizer's variables in creation order: ``iterations``, then the slots.

        For RMSprop built on ``[v0, v1, ...]``: every ``rms``, then every ``momentum`` (with a
        momentum slot), then every ``mg`` (centered) -- the TF 2.x Keras order.
        """
        return list(self._weights)

    def variables(self) -> list[Variable]:
        """The same list as :attr:`weights`."""
        return list(self._weights)

    def get_weights(self) -> list[np.ndarray]:
        """The values of :attr:`weights` as NumPy arrays (copies)."""
        return [w.numpy() for w in self._weights]

    def _load(self, targets: list[Variable], values: list[Any], what: str) -> None:
        """Checks every value against its target first, then loads them all (or none)."""
        converted = []
        rms_slots = {id(slots["rms"]) for slots in self._slots.values() if "rms" in slots}
        for target, value in zip(targets, values, strict=True):
            if isinstance(value, Variable):
                value = value.value
            array = value if isinstance(value, jax.Array) else np.asarray(value)
            if tuple(array.shape) != target.shape:
                raise ValueError(
                    f"{what}: shape {tuple(array.shape)} is not compatible with {target.name!r}'s "
                    f"shape {target.shape}"
                )
            _check_weight_dtype(target, array)
            if dtype_kind(target.dtype) in "fc":
                array = slot_values(
                    f"{what}: {target.name!r}",
                    np.asarray(array),
                    target.dtype,
                    squares=id(target) in rms_slots,
                )
            converted.append(as_array(array, target.dtype))
        for target, value in zip(targets, converted, strict=True):
            target._replace(value)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Loads values in :attr:`weights` order, e.g. a TF 2.x Keras RMSprop's ``get_weights()``.

        All values are checked first (length, shapes, dtypes: integers in ``[0, 2**31 - 1]`` for
        ``iterations``, real numbers for real slots); on any error nothing changes. As in Keras'
        RMSprop, a list one shorter than ``weights`` is taken to lack ``iterations`` (which is
        then reset to 0). Build the optimizer first (:meth:`build` or one step).
        """
        if isinstance(weights, (str, bytes, dict)) or not isinstance(weights, Iterable):
            raise TypeError(f"set_weights: `weights` must be a list of arrays, got {weights!r}")
        params, weights = self._weights, list(weights)
        if len(params) == len(weights) + 1:
            weights = [np.array(0)] + weights
        if len(params) != len(weights):
            hint = (
                " The optimizer has no slots yet: call `build(var_list)` (or apply one step) first."
                if not self._slots
                else ""
            )
            raise ValueError(
                f"You called `set_weights(weights)` on optimizer {self._name} with a weight list "
                f"of length {len(weights)}, but the optimizer was expecting {len(params)} "
                f"weights.{hint} Provided weights: {str(weights)[:50]}..."
            )
        self._load(params, weights, "set_weights")
