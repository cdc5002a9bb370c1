"""Presets that reproduce other frameworks' RMSprop, and state transfer from them.

Each preset takes that framework's own argument names and defaults and returns an optax
``GradientTransformationExtraArgs`` built on :func:`jrmsprop.rmsprop` (the same arithmetic; the
presets only choose its options):

============  =========================  ==========  ============  =============  ===========
preset        framework                  ε           lr and mom.   weight decay   rms starts
============  =========================  ==========  ============  =============  ===========
``keras2``    TF 2.x Keras (tf_keras)    in iff mom  inside buffer  --            0
``keras3``    Keras 3 / TF >= 2.11       inside      inside buffer  decoupled      0
``torch``     ``torch.optim.RMSprop``    outside     outside        coupled (L2)   0
``tf1``       ``tf.compat.v1.train``     inside      inside buffer  --            1
``optax``     ``optax.rmsprop``          as given    inside buffer  --            as given
============  =========================  ==========  ============  =============  ===========
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrmsprop._src import validation
from jrmsprop._src.arithmetic import Rule
from jrmsprop._src.saved_state import (
    keras2_h5_weights,
    load_keras2_h5,
    load_keras3_archive,
    saved_optimizer_config,
)
from jrmsprop._src.transform import RMSpropState, ScalarOrSchedule, build, rmsprop

__all__ = (
    "keras2",
    "keras2_h5_weights",
    "load_keras2_h5",
    "load_keras3_archive",
    "saved_optimizer_config",
    "keras3",
    "optax_rmsprop",
    "state_from_keras2",
    "state_from_torch",
    "tf1",
    "tf_keras_2_11",
    "tf_keras_legacy",
    "torch",
)


def keras2(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule = 0.0,
    epsilon: ScalarOrSchedule = 1e-7,
    centered: bool = False,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """TF 2.0–2.10 ``tf.keras.optimizers.RMSprop``: the same as :func:`jrmsprop.rmsprop`.

    TF >= 2.11 ships this optimizer as ``tf.keras.optimizers.legacy.RMSprop`` (and
    ``tf_keras.optimizers.legacy.RMSprop``); :data:`tf_keras_legacy` is an alias of this preset.
    ε inside the root with a momentum slot, outside without; lr inside the momentum buffer.
    Keyword arguments (``decay``: inverse-time lr decay, ``slot_dtype``) are those of
    :func:`jrmsprop.rmsprop`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jrmsprop import compat
      >>> tx = compat.keras2(learning_rate=0.1)
      >>> p = jnp.array(10.0)
      >>> u, _ = tx.update(p, tx.init(p))
      >>> p + u
      Array(9.683772, dtype=float32)
    """
    return rmsprop(learning_rate, rho, momentum, epsilon, centered, **kwargs)


def keras3(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule = 0.0,
    epsilon: ScalarOrSchedule = 1e-7,
    centered: bool = False,
    weight_decay: ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras 3 ``keras.optimizers.RMSprop``, also TF >= 2.11's default ``tf.keras`` RMSprop.

    ε always inside the root; with ``weight_decay``, ``p ← p − p·wd·lr`` before the step
    (decoupled). Pass ``params`` to ``update`` when ``weight_decay`` is set. ``1 − ρ`` is
    computed in double precision from a Python ``rho`` as Keras does (under
    ``optax.inject_hyperparams`` ρ arrives as a float32 array and ``1 − ρ`` is computed from it,
    which can differ from Keras in the last bit). Complex parameters: ``|g|²``, real ``rms``.
    :data:`tf_keras_2_11` is an alias.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.keras3(learning_rate=0.5)
      >>> p = jnp.array([1.0, 2.0, 3.0, 4.0])
      >>> u, _ = tx.update(jnp.array([1.0, 6.0, 7.0, 2.0]), tx.init(p))
      >>> p + u
      Array([-0.5811..., 0.4189..., 1.4189..., 2.4189...], dtype=float32)
    """
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
    momentum: ScalarOrSchedule = 0,
    centered: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """PyTorch ``torch.optim.RMSprop``.

    ε outside the root, lr outside the momentum buffer (``buf ← μ·buf + g/avg``,
    ``p ← p − lr·buf``), coupled L2 weight decay (``g ← g + wd·p``; pass ``params`` to
    ``update``), ``maximize`` ascends. Note PyTorch accepts any ``momentum >= 0``; jrmsprop
    requires ``momentum <= 1`` as well. Complex parameters are two real ones, as PyTorch's
    ``view_as_real``: one running average per real and imaginary part (stored as a complex
    ``square_avg``, the layout of torch's ``state_dict``). ``1 − α`` is computed in double
    precision from a Python ``alpha``, as torch does.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> tx = compat.torch(lr=0.01)
      >>> p = jnp.array(1.0)
      >>> u, _ = tx.update(jnp.array(2.0), tx.init(p))
      >>> p + u  # 1 - 0.01 * 2 / (sqrt(0.01 * 4) + 1e-8)
      Array(0.9, dtype=float32)
    """
    validation.check_bool("maximize", maximize)
    validation.check_hyperparameter("weight_decay", weight_decay)  # None is refused, as in torch
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
    initial_scale: float = 0.0,
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
    initial_scale = validation.check_hyperparameter("initial_scale", initial_scale, "initial_rms")
    if initial_scale is None:
        raise TypeError("`initial_scale` must be a number (it sets the initial `rms`)")
    rule = _OPTAX._replace(eps_in_sqrt=bool(eps_in_sqrt), initial_rms=initial_scale)
    return build(
        rule,
        learning_rate=learning_rate,
        rho=decay,
        momentum=0.0 if momentum is None else momentum,
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

tf_keras_legacy = keras2
"""TF >= 2.11 ``tf.keras.optimizers.legacy.RMSprop`` (``tf_keras`` too): :func:`keras2`."""

tf_keras_2_11 = keras3
"""TF >= 2.11's default ``tf.keras.optimizers.RMSprop`` (Keras 3 arithmetic): :func:`keras3`."""


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _build_slot(params: Any, arrays: Sequence[Any], what: str) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    if len(arrays) != len(leaves):
        raise ValueError(f"{what}: expected {len(leaves)} arrays, got {len(arrays)}")
    out = []
    for i, (p, a) in enumerate(zip(leaves, arrays, strict=True)):
        a = _to_numpy(a)
        p = jnp.asarray(p)
        if a.shape != p.shape:
            raise ValueError(f"{what}[{i}]: shape {a.shape} does not match the parameter {p.shape}")
        out.append(jnp.asarray(a, dtype=p.dtype if not np.iscomplexobj(a) else a.dtype))
    return treedef.unflatten(out)


def _count(step: Any, what: str) -> jax.Array:
    value = float(np.asarray(_to_numpy(step)).reshape(()))
    if value < 0 or value != int(value):
        raise ValueError(f"{what}: the step must be a non-negative integer, got {value}")
    return jnp.asarray(min(int(value), np.iinfo(np.int32).max), jnp.int32)


def state_from_keras2(
    weights: Sequence[Any], params: Any, *, momentum: bool, centered: bool
) -> RMSpropState:
    """Builds the functional state from a TF 2.x Keras optimizer's ``get_weights()``.

    Args:
      weights: ``[iterations, rms(v0), …, momentum(v0), …, mg(v0), …]`` as NumPy arrays (the
        momentum block only with a momentum slot, the mg block only when centered).
      params: the parameters, a pytree whose leaves are in the Keras variable order.
      momentum: whether the Keras optimizer had a momentum slot.
      centered: whether it was centered.

    Returns:
      An :class:`jrmsprop.RMSpropState` that continues exactly where Keras stopped.
    """
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        raise TypeError(
            "state_from_keras2: `weights` must be a list of arrays (the optimizer's "
            f"get_weights()), got {type(weights).__name__}"
        )
    n = len(jax.tree.leaves(params))
    blocks = 1 + int(momentum) + int(centered)
    if len(weights) != 1 + blocks * n:
        raise ValueError(
            f"state_from_keras2: `weights` must hold 1 + {blocks}·{n} = {1 + blocks * n} arrays "
            f"(iterations, then rms{', momentum' if momentum else ''}{', mg' if centered else ''}"
            f" for each of {n} variables), got {len(weights)}"
        )
    chunks = [weights[1 + k * n : 1 + (k + 1) * n] for k in range(blocks)]
    rms = _build_slot(params, chunks[0], "state_from_keras2: rms")
    mom = _build_slot(params, chunks[1], "state_from_keras2: momentum") if momentum else None
    mg = _build_slot(params, chunks[-1], "state_from_keras2: mg") if centered else None
    return RMSpropState(_count(weights[0], "state_from_keras2"), rms, mom, mg)


def _torch_state_dict_parts(state_dict: Any) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    """``(param_groups, state)`` of a torch optimizer ``state_dict()``, checked for shape."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "state_from_torch: `state_dict` must be a torch optimizer's state_dict() (a mapping), "
            f"got {type(state_dict).__name__}"
        )
    if not {"state", "param_groups"} <= set(state_dict):
        got = sorted(map(str, state_dict))
        raise ValueError(
            "state_from_torch: `state_dict` must be a torch optimizer's state_dict(), a mapping "
            f"with 'state' and 'param_groups'; got {got}"
        )
    groups, per_param = state_dict["param_groups"], state_dict["state"]
    if not isinstance(per_param, Mapping):
        raise ValueError(
            "state_from_torch: `state_dict['state']` must be a mapping, got "
            f"{type(per_param).__name__}"
        )
    if not isinstance(groups, Sequence) or not all(
        isinstance(g, Mapping) and "params" in g for g in groups
    ):
        raise ValueError(
            "state_from_torch: `state_dict['param_groups']` must be a list of dicts, each with "
            "a 'params' list"
        )
    return list(groups), per_param


def state_from_torch(state_dict: Mapping[str, Any], params: Any) -> RMSpropState:
    """Builds the functional state from ``torch.optim.RMSprop.state_dict()``.

    Args:
      state_dict: the optimizer's ``state_dict()`` (tensors or NumPy arrays). One param group,
        or several whose hyperparameters agree.
      params: the JAX parameters, a pytree whose leaves are in the order of the torch
        optimizer's parameter list.

    Returns:
      An :class:`jrmsprop.RMSpropState` for :func:`torch` with the same hyperparameters;
      parameters the torch optimizer never stepped get fresh (zero) slots.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> sd = {"state": {0: {"step": np.float32(3), "square_avg": np.ones(2, np.float32)}},
      ...       "param_groups": [{"params": [0], "momentum": 0, "centered": False}]}
      >>> compat.state_from_torch(sd, [jnp.zeros(2)]).count
      Array(3, dtype=int32)
    """
    groups, per_param = _torch_state_dict_parts(state_dict)
    order = [i for group in groups for i in group["params"]]
    flags = {(float(g.get("momentum", 0)) > 0, bool(g.get("centered", False))) for g in groups}
    if len(flags) != 1:
        raise ValueError(
            "state_from_torch: param groups differ in momentum/centered: "
            + json.dumps(
                [{k: v for k, v in g.items() if k != "params"} for g in groups], default=str
            )
        )
    ((has_momentum, centered),) = flags
    leaves = jax.tree.leaves(params)
    if len(order) != len(leaves):
        raise ValueError(
            f"state_from_torch: the state_dict has {len(order)} parameters, `params` has "
            f"{len(leaves)}"
        )
    needed = ("step", "square_avg")
    needed += ("momentum_buffer",) if has_momentum else ()
    needed += ("grad_avg",) if centered else ()
    for i in order:
        if i not in per_param:  # a parameter never stepped has no entry
            continue
        missing = [k for k in needed if k not in per_param[i]]
        if missing:
            raise ValueError(
                f"state_from_torch: `state_dict['state'][{i!r}]` lacks {missing} (an RMSprop "
                f"state with momentum={has_momentum}, centered={centered} has {list(needed)})"
            )
    steps = {float(_to_numpy(per_param[i]["step"])) for i in order if i in per_param}
    if len(steps) > 1:
        raise ValueError(f"state_from_torch: parameters were stepped unequally ({sorted(steps)})")
    step = steps.pop() if steps else 0.0

    def slot(name: str) -> list[Any]:
        return [
            per_param[i][name] if i in per_param else np.zeros(np.shape(p), np.asarray(p).dtype)
            for i, p in zip(order, leaves, strict=True)
        ]

    return RMSpropState(
        count=_count(step, "state_from_torch"),
        rms=_build_slot(params, slot("square_avg"), "state_from_torch: square_avg"),
        momentum=(
            _build_slot(params, slot("momentum_buffer"), "state_from_torch: momentum_buffer")
            if has_momentum
            else None
        ),
        mg=_build_slot(params, slot("grad_avg"), "state_from_torch: grad_avg")
        if centered
        else None,
    )
