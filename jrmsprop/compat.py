"""Presets that reproduce other frameworks' RMSprop, and state transfer from them.

Each preset takes the framework's own argument names and defaults and returns the transformation
of :func:`jrmsprop.rmsprop` with that framework's :class:`~jrmsprop._src.arithmetic.Rule`, the
data below: where ε and lr go, the weight decay, the float order and where ``rms`` starts.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from jrmsprop._src import validation
from jrmsprop._src.arithmetic import Rule
from jrmsprop._src.checkpoint import (
    keras2_h5_weights,
    load_keras2_h5,
    load_keras3_archive,
    saved_optimizer_config,
    state_from_keras2,
)
from jrmsprop._src.porting import (
    Saved,
    place,
    place_state,
    read_keras,
    read_torch,
    state_from_torch,
)
from jrmsprop._src.transform import ScalarOrSchedule, build
from jrmsprop._src.validation import TORCH_MESSAGES

__all__ = (
    "Saved",
    "place",
    "place_state",
    "read_keras",
    "read_torch",
    "keras2_h5_weights",
    "load_keras2_h5",
    "load_keras3_archive",
    "saved_optimizer_config",
    "keras3",
    "optax_rmsprop",
    "state_from_keras2",
    "state_from_torch",
    "tf1",
    "torch",
)

_KERAS3 = Rule(
    framework="compat.keras3",
    eps_in_sqrt=True,
    fused_order=False,
    weight_decay="decoupled",
    one_minus_rho_in_double=True,
    float32_hyperparameters=frozenset({"learning_rate"}),  # a float32 variable; the rest floats
)
_TORCH = Rule(
    framework="compat.torch",
    arg_names=(("learning_rate", "lr"), ("rho", "alpha"), ("epsilon", "eps")),
    eps_in_sqrt=False,
    fused_order=False,
    lr_in_momentum=False,
    weight_decay="coupled",
    one_minus_rho_in_double=True,
    complex_as_real=True,
    scaled_gradient_squared=True,
)
_TF1 = Rule(
    framework="compat.tf1",
    arg_names=(("rho", "decay"),),
    eps_in_sqrt=True,
    fused_order=True,
    momentum_slot=True,
    float32_hyperparameters=frozenset({"learning_rate", "rho", "momentum", "epsilon"}),
    initial_rms=1.0,
)
_OPTAX = Rule(
    framework="compat.optax_rmsprop",
    arg_names=(("rho", "decay"), ("epsilon", "eps")),
    fused_order=False,
)
# Options a preset accepts only when off (None or False), with what to use instead; Keras 3's
# change the numbers (each backend rounds a norm its own way).
_OFF_ONLY = {
    "compat.keras3": {
        "clipnorm": "clip the gradients before, e.g. optax.chain(clip, tx)",
        "clipvalue": "optax.chain(optax.clip(clipvalue), tx) is Keras 3's clipvalue",
        "global_clipnorm": "clip the gradients before, e.g. optax.chain(clip, tx)",
        "use_ema": "leave it out (optax.ema keeps an average of the parameters)",
        "loss_scale_factor": "leave it out (scale the loss yourself)",
        "gradient_accumulation_steps": "optax.MultiSteps(tx, every_k_schedule=steps) accumulates",
        "is_legacy_optimizer": "a legacy optimizer's config is for jrmsprop.rmsprop",
    },
    "compat.optax_rmsprop": {
        "nesterov": "optax.rmsprop(nesterov=True) has it",
        "bias_correction": "optax.rmsprop(bias_correction=True) has it",
    },
}
_HYPERPARAMETERS = ("learning_rate", "rho", "momentum", "epsilon", "centered", "weight_decay")


def _build(rule: Rule, args: dict[str, Any], **extra: Any) -> optax.GradientTransformationExtraArgs:
    """The preset's transformation from its arguments (its ``locals()``, the framework's names)."""
    for key, instead in _OFF_ONLY.get(rule.framework, {}).items():
        if args[key] is not None and args[key] is not False:
            raise ValueError(
                f"{rule.framework}: `{key}`={args[key]!r} is not reproduced; {instead}"
            )
    names = {core: rule.user_name(core) for core in _HYPERPARAMETERS}
    return build(rule, **{core: args[n] for core, n in names.items() if n in args}, **extra)


def keras3(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule | None = None,
    epsilon: ScalarOrSchedule = 1e-7,
    centered: bool = False,
    weight_decay: ScalarOrSchedule | None = None,
    *,
    name: str | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    jit_compile: bool | None = None,
    is_legacy_optimizer: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras 3 ``keras.optimizers.RMSprop`` (TF >= 2.11's ``tf.keras`` RMSprop too).

    ε always inside the root, ``sqrt(v + ε)``; decoupled weight decay, ``p ← p − p·wd·lr`` before
    the step; ``1 − ρ`` computed in double from a Python ``rho`` (from the float32 value under
    ``optax.inject_hyperparams``). Complex parameters: ``|g|²``, real ``rms``.

    Args:
      learning_rate, rho, momentum, epsilon, centered: as in Keras 3.
      weight_decay: decoupled weight decay; pass ``params`` to ``update`` when it is set.
      name, ema_momentum, ema_overwrite_frequency, jit_compile: accepted, change no number, so
        that ``keras3(**optimizer.get_config())`` works.
      clipnorm, clipvalue, global_clipnorm, use_ema, loss_scale_factor: not reproduced, as
        ``gradient_accumulation_steps`` and ``is_legacy_optimizer``; anything but ``None`` or
        ``False`` raises a ``ValueError`` naming it and what to use instead.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.keras3(learning_rate=0.5)
      >>> p = jnp.array([1.0, 2.0, 3.0, 4.0])
      >>> u, _ = tx.update(jnp.array([1.0, 6.0, 7.0, 2.0]), tx.init(p))
      >>> p + u
      Array([-0.5811..., 0.4189..., 1.4189..., 2.4189...], dtype=float32)
    """
    # name, ema_momentum, ema_overwrite_frequency and jit_compile change no number
    return _build(_KERAS3, locals())


def torch(
    lr: ScalarOrSchedule = 0.01,
    alpha: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    momentum: ScalarOrSchedule | None = None,
    centered: bool = False,
    maximize: bool = False,
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    params: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """PyTorch ``torch.optim.RMSprop``.

    ε outside the root, ``sqrt(v) + ε``; lr outside the momentum buffer, ``buf ← μ·buf + g/avg``,
    ``p ← p − lr·buf``; coupled weight decay, ``g ← g + wd·p``; ``1 − α`` computed in double
    from a Python ``alpha``. A complex parameter is two real ones (``view_as_real``: one average
    per component, stored as a complex ``square_avg`` as in torch's ``state_dict``).

    Args:
      lr, alpha, eps, momentum, centered, maximize: as in torch; a value torch refuses raises
        torch's ``ValueError`` message. ``momentum`` must also be ``<= 1``.
      weight_decay: coupled (L2) weight decay; pass ``params`` to ``update`` when it is set.
      capturable, foreach, differentiable: how torch runs the step, not its numbers: only
        type-checked, so that ``torch(**optimizer.state_dict()["param_groups"][0])`` works.
      params: ignored (a param group's parameter indices).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.torch(lr=0.01)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(jnp.array(1.0)))
      >>> 1.0 + u  # 1 - 0.01 * 2 / (sqrt(0.01 * 4) + 1e-8)
      Array(0.9, dtype=float32)
    """
    args = locals()  # params: ignored
    for flag in ("maximize", "capturable", "differentiable", "foreach"):
        if flag != "foreach" or foreach is not None:
            validation.check_bool(flag, args[flag])
    # torch's checks in its order, with its messages (a None weight_decay is refused, as in torch)
    core = {user: name for name, user in _TORCH.arg_names}
    for name in ("lr", "eps", "momentum", "weight_decay", "alpha"):
        if args[name] is not None or name == "weight_decay":
            kind = core.get(name, name)
            validation.check_hyperparameter(name, args[name], kind, messages=TORCH_MESSAGES)
    return _build(_TORCH._replace(maximize=bool(maximize)), args)


def tf1(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule = 0.0,
    epsilon: ScalarOrSchedule = 1e-10,
    centered: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """TF1 ``tf.compat.v1.train.RMSPropOptimizer``.

    TF's fused kernels, ``rms ← rms + (|g|² − rms)·(1−ρ)``; ε inside the root; ``rms`` starts at
    1.0; a momentum slot even for ``momentum=0``, so sparse updates are lazy (only the named rows
    of every slot change).

    Args:
      learning_rate, momentum, epsilon, centered: as in TF1.
      decay: TF1's name for ρ, the decay of the moving averages (not Keras's inverse-time decay).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.tf1(learning_rate=0.1)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(jnp.array(1.0)))
      >>> 1.0 + u  # rms = 0.9 + 0.1 * 4 = 1.3
      Array(0.8245884, dtype=float32)
    """
    return _build(_TF1, locals())


def optax_rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-8,
    initial_scale: float | jax.Array = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """``optax.rmsprop``'s numbers, to a few float32 ulp (optax multiplies by ``rsqrt``).

    Op-by-op float order, lr inside the momentum buffer, as :func:`jrmsprop.rmsprop`.

    Args:
      learning_rate, eps, eps_in_sqrt, centered, momentum: as in optax.
      decay: optax's name for ρ, the decay of the moving averages.
      initial_scale: where ``rms`` starts (a number or a 0-d array, not a schedule).
      nesterov, bias_correction: not supported; ``True`` raises a ``ValueError``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.optax_rmsprop(learning_rate=0.1)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(jnp.array(1.0)))
      >>> 1.0 + u  # 1 - 0.1 * 2 / sqrt(0.1 * 4 + 1e-8)
      Array(0.6837..., dtype=float32)
    """
    args = locals()
    for flag in ("eps_in_sqrt", "nesterov", "bias_correction"):
        validation.check_bool(flag, args[flag])
    if validation.is_schedule(initial_scale):
        raise TypeError("`initial_scale` must be a number or a 0-d array, not a schedule")
    concrete = validation.check_hyperparameter("initial_scale", initial_scale, "initial_rms")
    rule = _OPTAX._replace(eps_in_sqrt=bool(eps_in_sqrt))
    return _build(rule, args, initial_rms=initial_scale if concrete is None else concrete)
