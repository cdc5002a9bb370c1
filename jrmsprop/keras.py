"""TF 2.x Keras RMSprop arithmetic as a Keras 3 optimizer (JAX backend).

Keras 3's own ``keras.optimizers.RMSprop`` always puts ε inside the square root. The TF 2.x
``tf.keras.optimizers.RMSprop`` (today ``tf_keras.optimizers.legacy.RMSprop``) put it *outside*
the root when ``momentum == 0`` and inside it with momentum, kept ``lr`` inside the momentum
buffer, and evaluated the momentum path in the order of TF's fused ``ApplyRMSProp`` kernel.
:class:`RMSprop` here is a ``keras.optimizers.Optimizer`` that computes every step with
:func:`jrmsprop.rmsprop` (so the numbers are those of TF 2.x, bit for bit) while plugging into
``model.compile``/``fit``, ``optimizer.apply``/``apply_gradients``, ``stateless_apply`` and
``.keras`` saving.

Keras is optional: ``import jrmsprop`` never imports it; this module needs Keras 3 on its JAX
backend (``pip install 'jrmsprop[keras]'``). When Keras has not been imported yet and
``KERAS_BACKEND`` is unset, importing this module sets ``KERAS_BACKEND=jax``; a Keras already
running on another backend makes :class:`RMSprop` raise a ``RuntimeError``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
    # Keras reads its backend once, at import: when nothing chose one yet, choose the only one
    # this module works with.
    os.environ["KERAS_BACKEND"] = "jax"

try:
    import keras
except ImportError as e:  # pragma: no cover - exercised only without keras installed
    raise ImportError(
        "jrmsprop.keras needs Keras 3 (with the JAX backend): pip install 'jrmsprop[keras]'"
    ) from e

if (
    not hasattr(keras, "optimizers")
    or not hasattr(keras.optimizers, "Optimizer")
    or int(str(getattr(keras, "__version__", "0")).split(".")[0]) < 3
):
    raise ImportError(
        f"jrmsprop.keras needs Keras 3, found keras {getattr(keras, '__version__', '?')}: "
        "pip install 'jrmsprop[keras]'"
    )

import jax.numpy as jnp

import jrmsprop
from jrmsprop._src import validation
from jrmsprop._src.transform import KERAS2, build
from jrmsprop._src.validation import KERAS_EPSILON, check_bool, check_hyperparameter

__all__ = ("RMSprop",)

_PACKAGE = "jrmsprop"


def _check_backend() -> None:
    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(
            f"jrmsprop.keras.RMSprop runs on Keras 3's JAX backend, but Keras is using the "
            f"{backend!r} backend; set the environment variable KERAS_BACKEND=jax before "
            "importing keras"
        )


def _static_float(name: str, value: Any, kind: str | None = None) -> float:
    """A hyperparameter that must be a concrete number (it goes into the saved config); TF 2.x
    Keras's message for a ``momentum``, ``decay`` or clip threshold out of range."""
    scalar = check_hyperparameter(name, value, kind, messages=validation.KERAS2_MESSAGES)
    if scalar is None:
        raise TypeError(
            f"`{name}` must be a number for jrmsprop.keras.RMSprop (it is part of the "
            f"serialised config and fixes the optimizer's slots), got {value!r}"
        )
    return scalar


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RMSprop(keras.optimizers.Optimizer):
    r"""Keras 3 optimizer with the exact arithmetic of TF 2.x ``tf.keras.optimizers.RMSprop``.

    With ``t`` the number of updates already applied (``optimizer.iterations``) and
    ``lr = learning_rate(t) / (1 + decay·t)``:

    .. math::

      r &\leftarrow \rho\, r + (1 - \rho)\, g^2 \\
      m_g &\leftarrow \rho\, m_g + (1 - \rho)\, g \quad (\text{centered}; v = r - m_g^2,
        \text{ else } v = r) \\
      \mu > 0:\quad m &\leftarrow \mu\, m + \frac{lr\, g}{\sqrt{v + \epsilon}},
        \qquad p \leftarrow p - m \\
      \mu = 0:\quad p &\leftarrow p - \frac{lr\, g}{\sqrt{v} + \epsilon}

    ε sits *outside* the root without momentum and *inside* it with momentum, as in TF 2.x
    (Keras 3's built-in ``RMSprop`` always puts it inside). Each step is computed by
    :func:`jrmsprop.rmsprop` on all variables at once, so the parameters and slots equal those of
    ``tf_keras.optimizers.legacy.RMSprop`` bit for bit (on CPU) given the same gradients.

    The slots are named as in TF 2.x: ``rms`` for every variable, then ``momentum`` (only when
    ``momentum > 0``), then ``mg`` (only when ``centered``); ``optimizer.variables`` is
    ``[iteration, learning_rate, rms…, momentum…, mg…]``. Needs Keras 3 with the JAX backend
    (``KERAS_BACKEND=jax``).

    Args:
      learning_rate: a float, a ``keras.optimizers.schedules.LearningRateSchedule``, or a
        callable taking no argument; default 0.001.
      rho: discounting factor of the moving averages, in ``[0, 1]``; default 0.9.
      momentum: heavy-ball momentum in ``[0, 1]``; a number (not a schedule), since it decides
        whether the momentum slot exists; default 0.0.
      epsilon: ε against division by zero (``>= 0``); default 1e-7. As in TF 2.x
        (``epsilon or backend.epsilon()``), ``None`` or ``0`` means 1e-7, which ``get_config``
        then reports.
      centered: normalise by the estimated variance (adds the ``mg`` slot); default False.
      decay: TF 2.x's inverse-time learning-rate decay, ``lr / (1 + decay·t)`` (``>= 0``);
        default 0.0. (Keras 3 dropped this argument; it is kept here because TF 2.x recipes use
        it.)
      name: name of the optimizer (prefix of its variables); default ``"rmsprop"``.
      **kwargs: ``lr``, TF 2.x's deprecated alias of ``learning_rate`` (with its warning), and
        the options every Keras 3 optimizer takes, applied by Keras itself around the
        step: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``weight_decay`` (Keras 3's
        decoupled ``p ← p − p·wd·lr`` before the step; TF 2.x had none), ``use_ema``,
        ``ema_momentum``, ``ema_overwrite_frequency``, ``loss_scale_factor``,
        ``gradient_accumulation_steps``.

    Raises:
      ValueError / TypeError: naming the argument, for a hyperparameter out of range or of the
        wrong type (``momentum=2``, ``epsilon=-1``, ``centered="no"``).
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

    With ``model.compile(optimizer=RMSprop(1e-3, momentum=0.9), loss="mse")``, ``model.fit``
    trains with the TF 2.x arithmetic.
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
        _check_backend()
        learning_rate = validation.legacy_lr(learning_rate, kwargs)  # TF 2.x (Keras 3: refused)
        scalar_lr = check_hyperparameter("learning_rate", learning_rate)
        if scalar_lr is not None:
            learning_rate = scalar_lr  # Keras 3 insists on a Python float
        hyper = {
            "rho": _static_float("rho", rho),
            "momentum": _static_float("momentum", momentum),
            # TF 2.x: ``self.epsilon = epsilon or backend.epsilon()`` (None and 0 mean 1e-7)
            "epsilon": (KERAS_EPSILON if epsilon is None else _static_float("epsilon", epsilon))
            or KERAS_EPSILON,
            "decay": _static_float("decay", decay),
        }
        centered = check_bool("centered", centered)
        if kwargs.get("weight_decay") is not None:
            kwargs["weight_decay"] = _static_float("weight_decay", kwargs["weight_decay"])
        for option in ("clipnorm", "clipvalue", "global_clipnorm"):
            if kwargs.get(option) is not None:
                kwargs[option] = _static_float(option, kwargs[option], kind="clip")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        # (Keras refuses attributes set before its __init__.)
        self.rho = hyper["rho"]
        self.momentum = hyper["momentum"]
        self.epsilon = hyper["epsilon"]
        self.decay = hyper["decay"]
        self.centered = centered

    def build(self, var_list: list[Any]) -> None:
        """Creates the slots: ``rms`` for each variable, then ``momentum`` and ``mg`` if used."""
        if self.built:
            return
        super().build(var_list)
        self._rms = self.add_optimizer_variables(var_list, "rms")
        self._momentums = (
            self.add_optimizer_variables(var_list, "momentum") if self.momentum > 0 else None
        )
        self._mgs = self.add_optimizer_variables(var_list, "mg") if self.centered else None

    def _transform(self, learning_rate: Any):
        # jrmsprop.rmsprop's rule, without its warning on `decay`: here it is TF 2.x's decay
        return build(
            KERAS2,
            learning_rate=learning_rate,
            rho=self.rho,
            momentum=self.momentum,  # a Python float: the slot decision is static
            epsilon=self.epsilon,
            centered=self.centered,
            decay=self.decay,
        )

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """One step for all variables at once, computed by :func:`jrmsprop.rmsprop`."""
        trainable_variables = list(trainable_variables)
        indices = [self._get_variable_index(v) for v in trainable_variables]

        def values(slots):
            return None if slots is None else [slots[i].value for i in indices]

        if isinstance(learning_rate, keras.Variable):
            learning_rate = learning_rate.value
        lr = jnp.asarray(learning_rate)
        # t = updates already applied (under gradient accumulation: real updates, not micro-steps)
        count = jnp.asarray(keras.ops.convert_to_tensor(self.iterations)).astype(jnp.int32)
        state = jrmsprop.RMSpropState(
            count=count,
            rms=[self._rms[i].value for i in indices],
            momentum=values(self._momentums),
            mg=values(self._mgs),
        )
        grads = [jnp.asarray(g) for g in grads]
        params = [v.value for v in trainable_variables]
        # update + apply_updates in one call: inside Keras's jitted, donating train step a
        # float32 variable on CPU takes the one-pass kernel (same bits as the separate calls).
        new_params, new_state = jrmsprop.update_and_apply(self._transform(lr), grads, state, params)
        for variable, value in zip(trainable_variables, cast(list, new_params), strict=True):
            self.assign(variable, value)
        for slots, new_values in (
            (self._rms, new_state.rms),
            (self._momentums, new_state.momentum),
            (self._mgs, new_state.mg),
        ):
            if slots is not None:
                for i, value in zip(indices, cast(list, new_values), strict=True):
                    self.assign(slots[i], value)

    def update_step(self, gradient, variable, learning_rate):
        """One variable's step (Keras's per-variable hook); same arithmetic as the batched one."""
        self._backend_update_step([gradient], [variable], learning_rate)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras 3's common options included)."""
        config = super().get_config()
        config.update(
            {
                "rho": self.rho,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "centered": self.centered,
                "decay": self.decay,
            }
        )
        return config
