"""The functional core: :func:`rmsprop`, and :func:`build`, the transformation of every preset."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard, cast

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax

from jrmsprop._src import arithmetic, cpu_kernel, sparse, validation

ScalarOrSchedule = optax.ScalarOrSchedule
_FLOAT32 = jnp.dtype(jnp.float32)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


class RMSpropState(NamedTuple):
    """The state of :func:`rmsprop` and of every preset.

    Attributes:
      count: int32 scalar, the number of updates applied (``t``; saturates at 2³¹−1).
      rms: running mean of squared gradients (Keras 3 ``velocity``, PyTorch ``square_avg``).
      momentum: the momentum buffer, or ``None``.
      mg: running mean of gradients (PyTorch ``grad_avg``) when ``centered``, else ``None``.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] (optax's field name)
    rms: optax.Updates
    momentum: optax.Updates | None
    mg: optax.Updates | None


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """A schedule compared by identity: a static argument even when unhashable (a dataclass)."""

    key: int  # id(fn), unique while the config that holds fn lives
    fn: Callable[[jax.Array], Any] = dataclasses.field(compare=False)


class _Config(NamedTuple):
    """What selects code: the static argument of the compiled update."""

    rule: arithmetic.Rule
    schedules: tuple[_Schedule | None, ...]  # in the order of arithmetic.Hyperparams
    centered: bool
    momentum_slot: bool | None  # None: an array momentum, whose value picks the formula
    use_weight_decay: bool | None  # None: a traced value, applied when params are given
    slot_dtype: Any  # None: each parameter's (float32 for float16 parameters)
    epsilon_nonzero: bool  # ε is a number that stays non-zero in float32 (Rule.variant)

    def variant(self, has_momentum: bool) -> arithmetic.Variant:
        return self.rule.variant(has_momentum, self.epsilon_nonzero)


def slot_dtype_of(param_dtype: Any, real: bool, complex_as_real: bool, slot_dtype: Any = None):
    """The dtype of one slot: ``slot_dtype``, else the parameter's but float32 for float16 (as
    Keras); real for ``rms`` (``real``) unless the rule treats a complex number as two reals."""
    param_dtype = jnp.dtype(param_dtype)
    if slot_dtype is None:
        slot_dtype = jnp.float32 if param_dtype == jnp.float16 else param_dtype
    dtype = jnp.dtype(slot_dtype)
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and (not real or complex_as_real):
        return arithmetic.compute_dtype(dtype, jnp.complex64)
    return jnp.dtype(arithmetic.real_dtype(dtype)) if real else dtype


def _path_str(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _check_float(who: str, what: str, path: tuple[Any, ...], dtype: Any) -> None:
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            f"{who}: {what} at {_path_str(path)} has dtype {jnp.dtype(dtype).name}, not a float"
        )


def _check_arrays(who: str, what: str, tree: Any, error: Exception | None = None) -> None:
    """Names the first leaf that is not an array or a number (JAX's error names neither)."""
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        is_array = hasattr(x, "dtype") or hasattr(x, "__jax_array__")
        if isinstance(x, (str, bytes)) or not (is_array or isinstance(x, (int, float, complex))):
            raise TypeError(
                f"{who}: `{what}` at {_path_str(path)} must be an array or a number, got "
                f"{type(x).__name__} {validation.abbreviated(repr(x), 80)}"
            ) from error


def _init(params: optax.Params, config: _Config, initial_rms: Any) -> RMSpropState:
    who = config.rule.framework
    _check_arrays(who, "params", params)

    def slots(value, real):
        def slot(path, p):
            p = p if hasattr(p, "dtype") else jnp.asarray(p)  # a number (ShapeDtypeStructs stay)
            _check_float(who, "parameter", path, p.dtype)
            dtype = slot_dtype_of(p.dtype, real, config.rule.complex_as_real, config.slot_dtype)
            return jnp.full_like(p, value, dtype=dtype)

        return jax.tree_util.tree_map_with_path(slot, params)

    return RMSpropState(
        count=jnp.zeros([], jnp.int32),
        rms=slots(initial_rms, True),
        momentum=slots(0, False) if config.momentum_slot is not False else None,
        mg=slots(0, False) if config.centered else None,
    )


def _flatten_as(who: str, treedef: Any, tree: Any, what: str, paths: list[Any]) -> list[Any]:
    """``tree``'s leaves where the state has its leaves, each one array, None or IndexedSlices."""
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{who}: `{what}` do not have the tree structure of the optimizer state (`state.rms`: "
            f"{validation.tree_description(treedef)}): {validation.abbreviated(e)}"
        ) from e
    for path, leaf in zip(paths, leaves, strict=True):
        structure = jax.tree.structure(leaf, is_leaf=lambda x: isinstance(x, sparse.IndexedSlices))
        if leaf is not None and not jax.tree_util.treedef_is_leaf(structure):
            raise ValueError(
                f"{who}: `{what}` at {_path_str(path)} is a subtree "
                f"({validation.abbreviated(structure, 80)}) where the state has one array"
            )
    return leaves


def _check_state(state: Any, config: _Config) -> None:
    """On the host, before jit narrows a count of another integer dtype (2**40 wraps to 0)."""
    who = config.rule.framework
    if not isinstance(state, RMSpropState):
        raise TypeError(f"{who}: `state` must be an RMSpropState, got {type(state).__name__}")
    count = state.count if hasattr(state.count, "dtype") else np.asarray(state.count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(f"{who}: `state.count` must be an int32 scalar, got {count.dtype}")
    if jnp.ndim(count) != 0:
        raise ValueError(f"{who}: `state.count` must be a scalar, got {jnp.shape(count)}")
    concrete = not isinstance(count, jax.core.Tracer) and count.dtype != np.int32
    if concrete and not -(2**31) <= int(count) <= validation.INT32_MAX:
        raise ValueError(f"{who}: `state.count` is {int(count)}, beyond the int32 counter")
    for slot, wanted in (("mg", config.centered), ("momentum", config.momentum_slot is not False)):
        if wanted != (getattr(state, slot) is not None) and jax.tree.leaves(state.rms):
            raise ValueError(
                f"{who}: `state` {'lacks' if wanted else 'has'} the `{slot}` slot, unlike this "
                "transformation's (centered, momentum slot); build it with the same init"
            )


def _check_leaf(rule: arithmetic.Rule, path: Any, g: Any, p: Any, rms: Any, mom: Any, mg: Any):
    """The checks of one leaf that name its path; ``g`` is None for a leaf that is not trained."""
    who, at = rule.framework, _path_str(path)
    named: dict[str, Any] = {
        "`state.rms`": rms,
        "`state.momentum`": mom,
        "`state.mg`": mg,
        "gradient": g,
    }
    if g is not None:  # a parameter of another shape would broadcast in weight decay
        named["parameter"] = p
    for name, x in named.items():
        if x is not None:
            _check_float(who, name, path, x.dtype)
            if tuple(x.shape) != rms.shape:
                raise ValueError(
                    f"{who}: {name} at {at} has shape {tuple(x.shape)}, but the state expects "
                    f"{rms.shape}"
                )
    # init gives a real parameter a real rms; real is shown by p, else by its slots, else by g.
    known = next(x for x in (p, mom, mg, g, rms) if x is not None)
    for name, c in {"`state.rms`": rms, "gradient": g}.items():
        if not jnp.iscomplexobj(known) and jnp.iscomplexobj(c):
            raise TypeError(
                f"{who}: {name} at {at} has complex dtype {c.dtype.name}, but the parameter is "
                f"real ({known.dtype.name}; pass `params` if it is complex)"
            )
    if isinstance(g, sparse.IndexedSlices) and jnp.iscomplexobj(g) and rule.complex_as_real:
        raise NotImplementedError(f"{who}: sparse complex gradients are not supported (at {at})")


# Traced once per leaf signature (shapes, dtypes, configuration): a tree of many same-shaped
# leaves costs one trace, not one per leaf. XLA inlines the calls (the same program).
@functools.partial(jax.jit, static_argnames=("config", "apply", "dtype", "out_dtype"))
def _leaf_step(g, p, rms, mom, mg, momentum_on, sc, config: _Config, apply, dtype, out_dtype):
    """One checked leaf's ``(update, rms, momentum, mg)``, the new parameter first for
    ``apply="params"``."""
    p_in = p  # what the update is added to
    if config.use_weight_decay is False:
        p = None  # read for its dtype only

    def step(mom_slot, has_momentum):
        variant = config.variant(has_momentum)
        if isinstance(g, sparse.IndexedSlices):
            return sparse.sparse_step(g, p, rms, mom_slot, mg, sc, variant, dtype, out_dtype)
        if jnp.iscomplexobj(g) and config.rule.complex_as_real:  # PyTorch: two real parameters
            arrays: list[Any] = [g, p, rms, mom_slot, mg]
            pairs: Any = [x if x is None else jnp.stack([x.real, x.imag], -1) for x in arrays]
            rdtype = arithmetic.real_dtype(dtype)
            out = arithmetic.rmsprop_step(*pairs, sc=sc, variant=variant, dtype=rdtype, negate=True)
            dtypes = (out_dtype, *(getattr(x, "dtype", None) for x in arrays[2:]))
            return tuple(
                x if x is None else jax.lax.complex(x[..., 0], x[..., 1]).astype(d)
                for x, d in zip(out, dtypes, strict=True)
            )
        update, rms2, mom2, mg2 = arithmetic.rmsprop_step(
            g, p, rms, mom_slot, mg, sc, variant, dtype, negate=True
        )
        return update.astype(out_dtype), rms2, mom2, mg2

    def without_momentum():  # an array momentum of 0: what a Python 0 computes, buffer untouched
        update, rms2, _, mg2 = step(None, False)
        return update, rms2, mom, mg2

    if mom is None:
        out = step(None, False)
    elif momentum_on is None:
        out = step(mom, True)
    else:
        out = jax.lax.cond(momentum_on, lambda: step(mom, True), without_momentum)
    return out if apply == "updates" else (sparse.apply_updates(p_in, out[0]), *out[1:])


def _check_no_weight_decay(rule: arithmetic.Rule, value: Any) -> None:
    """A traced weight decay, called without ``params``: checked on the host to be 0."""
    if np.asarray(value) != 0:
        raise ValueError(f"{rule.framework}: weight decay needs `params`, `weight_decay`={value}")


def _tree_update(updates, state: RMSpropState, params, dynamic, config: _Config, apply="updates"):
    """``(updates, state)``; ``apply="params"`` gives the new parameters instead, and ``"fused"``
    the same bits, with the leaves the CPU kernel takes computed by it."""
    rule, who = config.rule, config.rule.framework
    paths_and_rms, treedef = jax.tree_util.tree_flatten_with_path(state.rms)
    paths, rmss = [path for path, _ in paths_and_rms], [rms for _, rms in paths_and_rms]

    grads = _flatten_as(who, treedef, updates, "updates" if apply == "updates" else "grads", paths)
    others = {"params": params, "state.momentum": state.momentum, "state.mg": state.mg}
    params_, moms, mgs = (  # an absent tree: None leaves
        [None] * len(paths) if tree is None else _flatten_as(who, treedef, tree, what, paths)
        for what, tree in others.items()
    )

    count = state.count.astype(jnp.int32)
    given = zip(config.schedules, dynamic[:6], strict=True)  # a schedule, else the value
    values = [jnp.asarray(s.fn(count)) if s else v for s, v in given]
    hp = arithmetic.Hyperparams(*values, step=count)
    if config.use_weight_decay is not False and params is None and paths:
        if config.use_weight_decay:
            raise ValueError(
                f"{who}: weight decay needs `params`: call update(grads, state, params)"
            )
        jax.debug.callback(functools.partial(_check_no_weight_decay, rule), hp.weight_decay)
    momentum_on = None
    if config.momentum_slot is None and state.momentum is not None:
        momentum_on = jnp.asarray(hp.momentum) != 0

    @functools.cache  # once per real compute dtype
    def scalars_for(rdtype: Any) -> arithmetic.Scalars:
        return arithmetic.resolve(hp, dynamic[6], rdtype, rule)

    variant = config.variant(state.momentum is not None)
    kernel = apply == "fused" and config.use_weight_decay is False and momentum_on is None
    out = []
    for path, g, p, rms, mom, mg in zip(paths, grads, params_, rmss, moms, mgs, strict=True):
        g = g if g is None or isinstance(g, sparse.IndexedSlices) else jnp.asarray(g)
        p = None if p is None else jnp.asarray(p)
        _check_leaf(rule, path, g, p, rms, mom, mg)
        if g is None:  # not trained: the parameter (or a None update) and the slots as they are
            out.append((None if apply == "updates" else p, rms, mom, mg))
            continue
        if apply != "updates" and p is None:
            raise ValueError(
                f"update_and_apply: `params` at {_path_str(path)} is None but the gradient there "
                "is not (pass the parameter, or a None gradient for a leaf that is not trained)"
            )
        if kernel and p is not None and cpu_kernel.takes(g, p, rms, mom, mg, variant):
            out.append(cpu_kernel.Leaf(g, p, rms, mom, mg))
            continue
        slot_dtype = (rms if mom is None else mom).dtype
        dtype = arithmetic.compute_dtype(g.dtype, slot_dtype, getattr(p, "dtype", None))
        out_dtype = jnp.dtype(getattr(p, "dtype", g.dtype))  # optax: the parameter's dtype
        sc = scalars_for(arithmetic.real_dtype(dtype))
        step = "updates" if apply == "updates" else "params"
        out.append(_leaf_step(g, p, rms, mom, mg, momentum_on, sc, config, step, dtype, out_dtype))

    at = [i for i, leaf in enumerate(out) if isinstance(leaf, cpu_kernel.Leaf)]
    if at:
        new = cpu_kernel.apply_leaves([out[i] for i in at], scalars_for(_FLOAT32), variant)
        for i, leaf in zip(at, new, strict=True):
            out[i] = tuple(leaf)
    new, rms, mom, mg = (treedef.unflatten(c) for c in list(zip(*out, strict=True)) or [()] * 4)
    return new, RMSpropState(
        count=jnp.where(count < validation.INT32_MAX, count + 1, count),
        rms=rms,
        momentum=None if state.momentum is None else mom,
        mg=None if state.mg is None else mg,
    )


# An eager ``update`` is one cached call, compiled once per tree signature and configuration. In
# a user's ``jit`` the tree step is traced inline: a nested call only adds work for XLA.
_update = jax.jit(_tree_update, static_argnames=("config", "apply"))


def _is_python_number(value: Any) -> TypeGuard[float]:
    """A Python or NumPy scalar number (not a bool, an array or a schedule)."""
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def build(
    rule: arithmetic.Rule,
    *,
    learning_rate: ScalarOrSchedule,
    rho: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None,
    epsilon: ScalarOrSchedule,
    centered: bool,
    decay: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule | None = None,
    slot_dtype: Any | None = None,
    momentum_slot: bool | None = None,
    initial_rms: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """The transformation of ``rule`` (:func:`rmsprop` and every preset); ``momentum_slot=True``
    keeps a momentum buffer even for momentum 0 (Keras's rule for a tensor or callable)."""
    hyperparams: dict[str, Any] = dict(
        learning_rate=learning_rate,
        rho=rho,
        momentum=0.0 if momentum is None else momentum,
        epsilon=epsilon,
        decay=decay,
        weight_decay=0.0 if weight_decay is None else weight_decay,
    )
    concrete, schedules, dynamic = {}, [], []  # a schedule, else the value that enters jit
    for name, value in hyperparams.items():
        user, float32 = rule.user_name(name), name in rule.float32_hyperparameters
        concrete[name] = validation.check_hyperparameter(user, value, name, float32=float32)
        is_schedule = validation.is_schedule(value)
        if is_schedule:  # called once, at step 0, to check its value
            validation.check_schedule(user, value, name, float32)
        schedules.append(_Schedule(id(value), value) if is_schedule else None)
        dynamic.append(None if is_schedule else validation.jit_value(value, concrete[name]))
    centered = validation.check_bool("centered", centered)
    try:
        floating = slot_dtype is None or jnp.issubdtype(slot_dtype, jnp.floating)
    except TypeError:  # not a dtype at all
        floating = False
    if not floating:
        raise TypeError(f"`slot_dtype` must be a floating dtype, got {slot_dtype!r}")

    # The state's structure never depends on a traced value: a number decides by its value, a
    # schedule has the slot, an array has it and its value picks the formula (momentum_slot None).
    mu, rho, epsilon = hyperparams["momentum"], hyperparams["rho"], hyperparams["epsilon"]
    momentum_slot = rule.momentum_slot if momentum_slot is None else momentum_slot
    if momentum_slot is None and (validation.is_schedule(mu) or _is_python_number(mu)):
        momentum_slot = validation.is_schedule(mu) or concrete["momentum"] != 0.0
    # p enters for a schedule or a non-zero number; a traced weight decay (None) when it is given.
    use_weight_decay = weight_decay is not None and concrete["weight_decay"] != 0.0
    if weight_decay is not None and concrete["weight_decay"] is None:
        use_weight_decay = True if validation.is_schedule(weight_decay) else None
    one_minus_rho = None  # Keras 3 and PyTorch: 1 − ρ in double, rounded once when cast
    if rule.one_minus_rho_in_double and _is_python_number(rho):
        one_minus_rho = 1.0 - float(rho)
    config = _Config(
        rule=rule,
        schedules=tuple(schedules),
        centered=centered,
        momentum_slot=momentum_slot,
        use_weight_decay=use_weight_decay,
        slot_dtype=None if slot_dtype is None else jnp.dtype(slot_dtype),
        # A normal float32 ε stays non-zero with denormals flushed; else the root keeps a guard.
        epsilon_nonzero=_is_python_number(epsilon) and abs(epsilon) >= _FLOAT32_TINY,
    )
    dynamic = (*dynamic, one_minus_rho)

    def init_fn(params: optax.Params) -> optax.OptState:
        state = _init(params, config, rule.initial_rms if initial_rms is None else initial_rms)
        return cast(optax.OptState, state)  # chex's ArrayTree has no None (an absent slot)

    def run(updates, state, params, apply):
        _check_state(state, config)
        update = _tree_update if isinstance(state.count, jax.core.Tracer) else _update
        try:
            return update(updates, state, params, dynamic, config=config, apply=apply)
        except TypeError as e:  # a leaf that JAX cannot take: name it, if it is the caller's
            _check_arrays(rule.framework, "updates" if apply == "updates" else "grads", updates, e)
            _check_arrays(rule.framework, "params", params, e)
            raise

    return optax.GradientTransformationExtraArgs(init_fn, Update(run))


class Update:
    """A transformation's ``update``; ``apply`` gives ``(new_params, new_state)`` instead."""

    def __init__(self, run: Callable[..., Any]):
        self._run = run

    def __call__(
        self,
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        return self._run(updates, state, params, "updates")

    def apply(self, grads: Any, state: Any, params: Any, fused: bool = False) -> tuple[Any, Any]:
        return self._run(grads, state, params, "fused" if fused else "params")


# TF 2.x Keras stores learning_rate, rho, momentum and decay as float32; epsilon stays as it is.
KERAS2 = arithmetic.Rule(
    framework="rmsprop",
    float32_hyperparameters=frozenset({"learning_rate", "rho", "momentum", "decay"}),
)


def rmsprop(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: ScalarOrSchedule = 0.9,
    momentum: ScalarOrSchedule | None = None,
    epsilon: ScalarOrSchedule = 1e-7,
    centered: bool = False,
    *,
    decay: ScalarOrSchedule = 0.0,
    slot_dtype: Any | None = None,
    lr: ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop with the arithmetic of TensorFlow 2.x Keras, bit for bit.

    TF 2.0–2.10's ``RMSprop`` (2.11's ``legacy.RMSprop``; other frameworks: :mod:`jrmsprop.compat`).
    With ``t`` the updates applied so far and ``lr = learning_rate(t) / (1 + decay·t)``:

    .. math::

      r &\leftarrow \rho\, r + (1 - \rho)\, |g|^2, \qquad
        m_g \leftarrow \rho\, m_g + (1 - \rho)\, g \\
      v &= r - |m_g|^2 \text{ if centered, else } r \\
      \text{momentum slot:}\quad m &\leftarrow \mu\, m + \frac{lr\, g}{\sqrt{v + \epsilon}},
        \qquad u = -m \\
      \text{no momentum slot:}\quad u &= -\frac{lr\, g}{\sqrt{v} + \epsilon}

    The momentum slot exists for a non-zero number, a schedule or an array (whose value picks the
    formula at each step); ``None`` or ``0`` has none. The update is computed in the promoted
    dtype of gradient, slots and parameter (at least float32) and returned in the parameter's;
    ``learning_rate``, ``rho``, ``momentum`` and ``decay`` are float32 values, as in TF. float16
    parameters get float32 slots; a complex one gets ``|g|²`` and a real ``rms``. Gradients may
    be :class:`jrmsprop.IndexedSlices`.

    Args:
      learning_rate: the step size (finite, >= 0), a 0-d array, or a schedule of the step count.
      rho: the discounting factor of the moving averages, in ``[0, 1]``.
      momentum: the heavy-ball momentum ``μ`` in ``[0, 1]``, or ``None``.
      epsilon: ``ε`` (finite, >= 0); a number ``0`` or ``None`` means ``1e-7``, as in Keras.
      centered: normalise by the estimated variance (keeps the ``mg`` slot).
      decay: Keras's inverse-time decay of the rate (a value in ``[0.5, 1]`` warns).
      slot_dtype: the dtype of the slots (default: the parameter's).
      lr: Keras's deprecated name of ``learning_rate``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`RMSpropState`.

    Example:
      >>> import jax.numpy as jnp, optax, jrmsprop
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> params = {"p": jnp.array(10.0)}
      >>> grads = {"p": params["p"]}  # loss = p² / 2
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["p"]
      Array(9.683772, dtype=float32)
    """
    if lr is not None:
        learning_rate = validation.legacy_lr(learning_rate, {"lr": lr})
    if epsilon is None or (_is_python_number(epsilon) and epsilon == 0):
        epsilon = validation.KERAS_EPSILON  # Keras 2: ``epsilon or backend.epsilon()``
    if _is_python_number(decay) and 0.5 <= decay <= 1:
        # optax and PyTorch users write ρ as `decay`; Keras recipes decay the rate by 1e-6..1e-2.
        warnings.warn(
            f"rmsprop: `decay`={decay} is Keras's inverse-time learning-rate decay "
            "lr / (1 + decay·t), not the moving-average factor; pass that as `rho`",
            UserWarning,
            stacklevel=2,
        )
    return build(
        KERAS2,
        learning_rate=learning_rate,
        rho=rho,
        momentum=momentum,
        epsilon=epsilon,
        centered=centered,
        decay=decay,
        slot_dtype=slot_dtype,
    )
