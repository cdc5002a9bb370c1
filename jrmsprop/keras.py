"""TF 2.x Keras RMSprop arithmetic as a Keras 3 optimizer (JAX backend).

``import jrmsprop`` never imports Keras; this module needs Keras 3 (``pip install
'jrmsprop[keras]'``). When Keras is not imported yet and ``KERAS_BACKEND`` is unset, importing
it selects ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

import jax.numpy as jnp

import jrmsprop
from jrmsprop._src import validation
from jrmsprop._src.transform import KERAS2, build

if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
    os.environ["KERAS_BACKEND"] = "jax"  # Keras reads its backend once, at its import

_NEEDS = "jrmsprop.keras needs Keras 3 (with the JAX backend): pip install 'jrmsprop[keras]'"
try:
    import keras
except ImportError as e:  # pragma: no cover - exercised only without keras installed
    raise ImportError(_NEEDS) from e
if int(str(getattr(keras, "__version__", "0")).split(".")[0]) < 3:
    raise ImportError(f"{_NEEDS}; found keras {getattr(keras, '__version__', '?')}")

__all__ = ("RMSprop",)
_CONFIG = ("rho", "momentum", "epsilon", "centered", "decay")  # beside Keras 3's common options


def _number(name: str, value: Any, kind: str | None = None) -> float:
    """A concrete hyperparameter (it goes into the config), with TF 2.x Keras's messages."""
    scalar = validation.check_hyperparameter(name, value, kind, messages=validation.KERAS2_MESSAGES)
    if scalar is None:
        raise TypeError(
            f"`{name}` must be a number for jrmsprop.keras.RMSprop (it is part of the "
            f"serialised config and fixes the optimizer's slots), got {value!r}"
        )
    return scalar


@keras.saving.register_keras_serializable(package="jrmsprop")
class RMSprop(keras.optimizers.Optimizer):
    r"""Keras 3 optimizer with the exact arithmetic of TF 2.x ``tf.keras.optimizers.RMSprop``.

    With ``t`` the updates already applied and ``lr = learning_rate(t) / (1 + decay·t)``:

    .. math::

      r &\leftarrow \rho\, r + (1 - \rho)\, g^2 \\
      m_g &\leftarrow \rho\, m_g + (1 - \rho)\, g \quad (\text{centered}; v = r - m_g^2,
        \text{ else } v = r) \\
      \mu > 0:\quad m &\leftarrow \mu\, m + \frac{lr\, g}{\sqrt{v + \epsilon}},
        \qquad p \leftarrow p - m \\
      \mu = 0:\quad p &\leftarrow p - \frac{lr\, g}{\sqrt{v} + \epsilon}

    ε sits outside the root without momentum (Keras 3's ``RMSprop`` always puts it inside). The
    parameters and slots (``rms``, ``momentum`` if ``momentum > 0``, ``mg`` if ``centered``)
    equal those of ``tf_keras.optimizers.legacy.RMSprop`` bit for bit (on CPU).

    Args:
      learning_rate: a float, a ``keras.optimizers.schedules.LearningRateSchedule`` or a
        callable taking no argument.
      rho: the decay of the moving averages, in ``[0, 1]``.
      momentum: a number in ``[0, 1]`` (it decides whether the momentum slot exists).
      epsilon: ``>= 0``; ``None`` or ``0`` mean 1e-7, as TF 2.x's ``epsilon or 1e-7``.
      centered: normalise by the estimated variance (adds the ``mg`` slot).
      decay: TF 2.x's inverse-time decay of the learning rate (``>= 0``).
      name: the prefix of the optimizer's variables.
      **kwargs: ``lr`` (TF 2.x's deprecated alias of ``learning_rate``) and Keras 3's options
        (``clipnorm``, ``weight_decay``, ``use_ema``, ...), which Keras applies around the step.

    Raises:
      ValueError, TypeError: naming the argument, for a bad hyperparameter.
      RuntimeError: when Keras does not run on its JAX backend.

    Example:
      >>> from jrmsprop.keras import RMSprop  # before keras: selects the JAX backend if unset
      >>> import keras, numpy as np
      >>> w = keras.Variable(np.array([10.0], np.float32), name="w")
      >>> opt = RMSprop(learning_rate=0.1)  # = tf.keras.optimizers.RMSprop(0.1) of TF 2.x
      >>> _ = opt.apply_gradients([(w.value, w)])  # the gradient of w²/2 is w
      >>> print(f"{float(w.value[0]):.6f}")  # TF 2.x gives 9.683772
      9.683772
      >>> [v.path for v in opt.variables]
      ['rmsprop/iteration', 'rmsprop/learning_rate', 'rmsprop/w_rms']
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        decay: float = 0.0,
        name: str = "rmsprop",
        **kwargs: Any,
    ):
        backend = keras.backend.backend()
        if backend != "jax":
            raise RuntimeError(
                f"jrmsprop.keras.RMSprop runs on Keras 3's JAX backend, but Keras is using the "
                f"{backend!r} backend; set the environment variable KERAS_BACKEND=jax before "
                "importing keras"
            )
        learning_rate = validation.legacy_lr(learning_rate, kwargs)
        scalar_lr = validation.check_hyperparameter("learning_rate", learning_rate)
        rho, momentum = _number("rho", rho), _number("momentum", momentum)
        epsilon = validation.KERAS_EPSILON if epsilon is None else _number("epsilon", epsilon)
        decay = _number("decay", decay)
        centered = validation.check_bool("centered", centered)
        for option in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
            if kwargs.get(option) is not None:
                kind = None if option == "weight_decay" else "clip"
                kwargs[option] = _number(option, kwargs[option], kind)
        # Keras 3 insists on a Python float, and refuses attributes set before its __init__
        lr = learning_rate if scalar_lr is None else scalar_lr
        super().__init__(learning_rate=lr, name=name, **kwargs)
        self.rho, self.momentum, self.decay, self.centered = rho, momentum, decay, centered
        self.epsilon = epsilon or validation.KERAS_EPSILON  # TF 2.x: epsilon or backend.epsilon()

    def build(self, var_list: list[Any]) -> None:
        """Creates the slots: ``rms`` for each variable, then ``momentum`` and ``mg`` if used."""
        if self.built:
            return
        super().build(var_list)
        add = self.add_optimizer_variables
        self._rms = add(var_list, "rms")
        self._momentums = add(var_list, "momentum") if self.momentum > 0 else None
        self._mgs = add(var_list, "mg") if self.centered else None

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """One step for all variables at once, by :func:`jrmsprop.update_and_apply`."""
        variables = list(trainable_variables)
        indices = [self._get_variable_index(v) for v in variables]
        tables = (self._rms, self._momentums, self._mgs)
        slots = [None if s is None else [s[i] for i in indices] for s in tables]
        rms, mom, mg = (None if s is None else [v.value for v in s] for s in slots)
        if isinstance(learning_rate, keras.Variable):
            learning_rate = learning_rate.value
        # jrmsprop.rmsprop's rule, without its warning on `decay` (here TF 2.x's own argument);
        # momentum is a Python float: the slot decision is static
        hyper = {k: getattr(self, k) for k in _CONFIG}
        tx = build(KERAS2, learning_rate=jnp.asarray(learning_rate), **hyper)
        # t = updates applied (under gradient accumulation: real updates, not micro-steps)
        count = jnp.asarray(keras.ops.convert_to_tensor(self.iterations)).astype(jnp.int32)
        state = jrmsprop.RMSpropState(count, cast(list, rms), momentum=mom, mg=mg)
        # one call: in Keras's jitted, donating train step a float32 variable on CPU takes the
        # one-pass kernel (the same bits as update + apply_updates)
        params = [v.value for v in variables]
        grads = [jnp.asarray(g) for g in grads]
        new_params, new = jrmsprop.update_and_apply(tx, grads, state, params)
        new_values = (new_params, new.rms, new.momentum, new.mg)
        for targets, values in zip((variables, *slots), new_values, strict=True):
            for target, value in zip(targets or (), cast(list, values or ()), strict=True):
                self.assign(target, value)

    def update_step(self, gradient, variable, learning_rate):
        """One variable's step (Keras's per-variable hook); same arithmetic as the batched one."""
        self._backend_update_step([gradient], [variable], learning_rate)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras 3's common options included)."""
        return {**super().get_config(), **{k: getattr(self, k) for k in _CONFIG}}
