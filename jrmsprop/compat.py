"""Presets that reproduce other frameworks' RMSprop, and state transfer from them.

Each preset takes that framework's own argument names and defaults and returns an optax
``GradientTransformationExtraArgs`` with the arithmetic of :func:`jrmsprop.rmsprop` (which is TF
2.x Keras, ``tf_keras.optimizers.legacy.RMSprop``); the presets only choose its options:

=================  =======================  ==========  =============  ============  ==========
preset             framework                ε           lr and mom.    weight decay  rms starts
=================  =======================  ==========  =============  ============  ==========
``rmsprop``        TF 2.x Keras (tf_keras)  in iff mom  inside buffer  --            0
``keras3``         Keras 3 / TF >= 2.11     inside      inside buffer  decoupled     0
``torch``          ``torch.optim.RMSprop``  outside     outside        coupled (L2)  0
``tf1``            ``tf.compat.v1.train``   inside      inside buffer  --            1
``optax_rmsprop``  ``optax.rmsprop``        as given    inside buffer  --            as given
=================  =======================  ==========  =============  ============  ==========
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
    state_from_torch,
)
from jrmsprop._src.porting import Saved, place, place_state, read_keras, read_torch
from jrmsprop._src.transform import ScalarOrSchedule, build

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
    """Keras 3 ``keras.optimizers.RMSprop``, also TF >= 2.11's default ``tf.keras`` RMSprop.

    ε always inside the root; with ``weight_decay``, ``p ← p − p·wd·lr`` before the step
    (decoupled). Pass ``params`` to ``update`` when ``weight_decay`` is set. ``1 − ρ`` is
    computed in double precision from a Python ``rho`` as Keras does (under
    ``optax.inject_hyperparams`` ρ arrives as a float32 array and ``1 − ρ`` is computed from
    that float32 value). Complex parameters: ``|g|²``, real ``rms``.

    ``keras3(**optimizer.get_config())`` works: ``name``, ``jit_compile`` and the EMA settings
    change no number; clipping, ``use_ema``, ``loss_scale_factor``,
    ``gradient_accumulation_steps`` and ``is_legacy_optimizer`` are not reproduced, so anything
    but ``None`` / ``False`` (off) raises a ``ValueError`` naming it and what to use instead.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.keras3(learning_rate=0.5)
      >>> p = jnp.array([1.0, 2.0, 3.0, 4.0])
      >>> u, _ = tx.update(jnp.array([1.0, 6.0, 7.0, 2.0]), tx.init(p))
      >>> p + u
      Array([-0.5811..., 0.4189..., 1.4189..., 2.4189...], dtype=float32)
    """
    del name, ema_momentum, ema_overwrite_frequency, jit_compile  # change no number
    options = dict(
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
        is_legacy_optimizer=is_legacy_optimizer,
    )
    for key, value in options.items():
        if value is not None and value is not False:
            raise ValueError(
                f"compat.keras3: `{key}`={value!r} is not reproduced, only None/False (off): "
                f"{_KERAS3_INSTEAD[key]}"
            )
    return build(
        _KERAS3,
        learning_rate=learning_rate,
        rho=rho,
        momentum=momentum,
        epsilon=epsilon,
        centered=centered,
        weight_decay=weight_decay,
    )


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

    ε outside the root, lr outside the momentum buffer (``buf ← μ·buf + g/avg``,
    ``p ← p − lr·buf``), coupled L2 weight decay (``g ← g + wd·p``; pass ``params`` to
    ``update``), ``maximize`` ascends. Note PyTorch accepts any ``momentum >= 0``; jrmsprop
    requires ``momentum <= 1`` as well. Complex parameters are two real ones, as PyTorch's
    ``view_as_real``: one running average per real and imaginary part (stored as a complex
    ``square_avg``, the layout of torch's ``state_dict``). ``1 − α`` is computed in double
    precision from a Python ``alpha``, as torch does.

    ``torch(**optimizer.state_dict()["param_groups"][0])`` works: ``capturable``, ``foreach``,
    ``differentiable`` (how torch runs the step, not its numbers) are only type-checked and
    ``params`` is ignored. A value torch refuses raises its ``ValueError`` and message.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.torch(lr=0.01)
      >>> p = jnp.array(1.0)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(p))
      >>> p + u  # 1 - 0.01 * 2 / (sqrt(0.01 * 4) + 1e-8)
      Array(0.9, dtype=float32)
    """
    del params
    flags = dict(maximize=maximize, capturable=capturable, differentiable=differentiable)
    for name, flag in {**flags, "foreach": False if foreach is None else foreach}.items():
        validation.check_bool(name, flag)
    # torch's checks, in its order, for its messages (weight_decay None is refused, as in torch)
    checked = dict(learning_rate=lr, epsilon=eps, momentum=momentum, weight_decay=weight_decay)
    for kind, value in {**checked, "rho": alpha}.items():
        if value is not None or kind == "weight_decay":
            name, checks = _TORCH.user_name(kind), validation.TORCH_MESSAGES
            validation.check_hyperparameter(name, value, kind, messages=checks)
    return build(
        _TORCH._replace(maximize=bool(maximize)),
        learning_rate=lr,
        rho=alpha,
        momentum=momentum,
        epsilon=eps,
        centered=centered,
        weight_decay=weight_decay,
    )


def tf1(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule = 0.0,
    epsilon: ScalarOrSchedule = 1e-10,
    centered: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """TF 1 ``tf.compat.v1.train.RMSPropOptimizer``.

    Always the fused-kernel arithmetic: ε inside the root, lr inside the momentum buffer, the
    ``rms`` slot starts at 1.0, and a momentum slot exists even for ``momentum=0`` (so sparse
    updates are lazy: only the named rows of every slot change). Note the TF1 names: ``decay``
    here is the moving-average factor ρ (``rho`` elsewhere), not Keras's inverse-time decay.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.tf1(learning_rate=0.1)
      >>> p = jnp.array(1.0)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(p))
      >>> p + u  # rms = 0.9 + 0.1 * 4 = 1.3
      Array(0.8245884, dtype=float32)
    """
    return build(
        _TF1,
        learning_rate=learning_rate,
        rho=decay,
        momentum=momentum,
        epsilon=epsilon,
        centered=centered,
    )


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
    """The jrmsprop settings that give ``optax.rmsprop``'s numbers (same argument names).

    The mapping: ρ = ``decay`` (optax's name for it, not Keras's inverse-time decay), ε = ``eps``
    inside the root unless ``eps_in_sqrt=False``, ``rms`` starts at ``initial_scale``, op-by-op
    float order, lr inside the momentum buffer. optax multiplies by
    ``rsqrt`` / a reciprocal where jrmsprop divides, so results agree to a few float32 ulp, not
    bit for bit. ``nesterov`` and ``bias_correction`` have no Keras/PyTorch counterpart and are
    not supported.
    """
    for name, flag in (
        ("eps_in_sqrt", eps_in_sqrt),
        ("nesterov", nesterov),
        ("bias_correction", bias_correction),
    ):
        validation.check_bool(name, flag)
    if nesterov:
        raise ValueError("optax_rmsprop: `nesterov=True` is not supported by jrmsprop")
    if bias_correction:
        raise ValueError("optax_rmsprop: `bias_correction=True` is not supported by jrmsprop")
    if validation.is_schedule(initial_scale):
        raise TypeError("`initial_scale` must be a number or a 0-d array, not a schedule")
    concrete = validation.check_hyperparameter("initial_scale", initial_scale, "initial_rms")
    return build(
        _OPTAX._replace(eps_in_sqrt=bool(eps_in_sqrt)),
        initial_rms=initial_scale if concrete is None else concrete,
        learning_rate=learning_rate,
        rho=decay,
        momentum=momentum,
        epsilon=eps,
        centered=centered,
    )


_KERAS3 = Rule(
    framework="compat.keras3",
    eps_in_sqrt=True,
    fused_order=False,
    weight_decay="decoupled",
    one_minus_rho_in_double=True,
    # Keras 3 keeps learning_rate in a float32 variable (``floatx``); ρ, μ, ε and weight_decay
    # stay Python numbers, cast to the variable's dtype.
    float32_hyperparameters=frozenset({"learning_rate"}),
)
# Keras 3's optimizer options in a saved config (tf_keras >= 2.11's too) that change the numbers:
# refused unless off, with what to do instead. Keras 3 rounds a norm its own way on each backend.
_KERAS3_INSTEAD = {
    **dict.fromkeys(
        ("clipnorm", "global_clipnorm"), "clip the gradients before, e.g. optax.chain(clip, tx)"
    ),
    "clipvalue": "optax.chain(optax.clip(clipvalue), tx) is Keras 3's clipvalue",
    "use_ema": "leave it out (optax.ema keeps an average of the parameters)",
    "loss_scale_factor": "leave it out (scale the loss yourself)",
    "gradient_accumulation_steps": "optax.MultiSteps(tx, every_k_schedule=steps) accumulates",
    "is_legacy_optimizer": "a legacy optimizer's config is for jrmsprop.rmsprop",
}
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
