"""The functional core: ``jrmsprop.rmsprop``, an optax gradient transformation."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard, cast, overload

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jax_core

from jrmsprop._src import arithmetic, cpu_kernel, sparse, validation

Schedule = Callable[[jax.Array], jax.typing.ArrayLike]
ScalarOrSchedule = optax.ScalarOrSchedule


class RMSpropState(NamedTuple):
    """State of :func:`rmsprop`: an immutable pytree.

    Attributes:
      count: int32 scalar, the number of updates applied so far (``t``; saturates at 2³¹−1).
      rms: running mean of squared gradients, a pytree shaped like the params (the Keras
        ``rms`` slot, PyTorch ``square_avg``, Keras 3 ``velocity``).
      momentum: the momentum buffer (Keras ``momentum``, PyTorch ``momentum_buffer``), or
        ``None`` when the configuration has no momentum slot.
      mg: running mean of gradients (Keras ``mg``, PyTorch ``grad_avg``, Keras 3
        ``average_gradient``) when ``centered``, else ``None``.

    The structure depends only on the factory's static arguments (``centered``, and whether
    ``momentum`` is ``None``/a number, an array or a schedule), never on a traced value.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] (optax's field name)
    rms: optax.Updates
    momentum: optax.Updates | None
    mg: optax.Updates | None


_NAMES = ("learning_rate", "rho", "momentum", "epsilon", "decay", "weight_decay")


class _Schedule:
    """A schedule held by identity: hashable even when the callable is not (a dataclass)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Schedule):
        self.fn = fn

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Schedule) and other.fn is self.fn


class _Config(NamedTuple):
    """What selects code: the static argument of the compiled update."""

    rule: arithmetic.Rule
    schedules: tuple[_Schedule | None, ...]  # per hyperparameter of _NAMES
    centered: bool
    momentum_slot: bool | None  # None: an array; slot kept, each step's value picks the formula
    use_weight_decay: bool | None  # None: a traced value; applied when params are given
    slot_dtype: Any  # None: each parameter's (float32 for float16 parameters)
    epsilon_nonzero: bool = False  # ε is a number that is not 0 in float32 (Rule.variant)


def default_slot_dtype(param_dtype: Any, slot_dtype: Any = None) -> jnp.dtype:
    """The dtype of a parameter's slots: ``slot_dtype``, else the parameter's own dtype.

    float16 parameters get float32 slots: ``rms`` holds squared gradients, which under- and
    overflow float16's range (g = 1e-4 gives 0, g = 300 gives inf) and freeze or NaN the
    parameters. bfloat16 has float32's range and keeps bfloat16 slots, as Keras does.
    """
    if slot_dtype is not None:
        return jnp.dtype(slot_dtype)
    param_dtype = jnp.dtype(param_dtype)
    return jnp.dtype(jnp.float32) if param_dtype == jnp.float16 else param_dtype


def slot_dtype_of(
    param_dtype: Any, real: bool, complex_as_real: bool, slot_dtype: Any = None
) -> jnp.dtype:
    """The dtype ``init`` gives one slot of a parameter: :func:`default_slot_dtype`, made real
    for ``rms`` (``real``), except that a complex parameter keeps complex slots where the rule
    treats it as two real ones (PyTorch) and for ``momentum`` / ``mg``."""
    dtype = default_slot_dtype(param_dtype, slot_dtype)
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and (not real or complex_as_real):
        return arithmetic.compute_dtype(dtype, jnp.complex64)
    return jnp.dtype(arithmetic.real_dtype(dtype)) if real else dtype


def _path_str(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _check_float(who: str, kind: str, path: tuple[Any, ...], dtype: Any) -> None:
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
        raise TypeError(
            f"{who}: {kind} at {_path_str(path)} has dtype {jnp.dtype(dtype).name}; "
            "RMSprop needs floating-point (or complex) parameters and gradients"
        )


def _init(params: optax.Params, config: _Config, initial_rms: Any) -> RMSpropState:
    rule = config.rule

    def slot(path, p, value, real):
        if not hasattr(p, "shape") or not hasattr(p, "dtype"):  # a Python number
            if isinstance(p, (str, bytes)) or not (
                isinstance(p, (int, float, complex, np.generic)) or hasattr(p, "__jax_array__")
            ):
                raise TypeError(
                    f"{rule.framework}: `params` at {_path_str(path)} must be an array or a "
                    f"number, got {type(p).__name__} "
                    f"{validation.abbreviated(repr(p), 80)}"
                )
            p = jnp.asarray(p)
        _check_float(rule.framework, "parameter", path, p.dtype)
        dtype = slot_dtype_of(p.dtype, real, rule.complex_as_real, config.slot_dtype)
        return jnp.full_like(p, value, dtype=dtype)

    def slots(value, real):
        return jax.tree_util.tree_map_with_path(lambda path, p: slot(path, p, value, real), params)

    return RMSpropState(
        count=jnp.zeros([], jnp.int32),
        rms=slots(initial_rms, True),
        momentum=slots(0, False) if config.momentum_slot is not False else None,
        mg=slots(0, False) if config.centered else None,
    )


def _flatten_as(who: str, treedef: Any, tree: Any, what: str, paths: list[Any]) -> list[Any]:
    """``tree``'s leaves where the state has its leaves (``paths``); each must be one array (or
    ``None``, or an ``IndexedSlices``), not a subtree, which ``flatten_up_to`` would return."""
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{who}: `{what}` do not have the tree structure of the optimizer state "
            f"(`state.rms`, which `init` built from the parameters, is "
            f"{validation.tree_description(treedef)}): {validation.abbreviated(e)}"
        ) from e
    for path, leaf in zip(paths, leaves, strict=True):
        if leaf is None or isinstance(leaf, sparse.IndexedSlices):
            continue
        structure = jax.tree.structure(leaf)
        if not jax.tree_util.treedef_is_leaf(structure) or structure.num_leaves != 1:
            raise ValueError(
                f"{who}: `{what}` at {_path_str(path)} is a subtree "
                f"({validation.abbreviated(str(structure), 80)}) where the optimizer state has "
                "one array"
            )
    return leaves


def _check_state(state: Any, config: _Config) -> None:
    """Structure and dtypes of a state (run while tracing: free for cached eager calls)."""
    who = config.rule.framework
    if not isinstance(state, RMSpropState):
        raise TypeError(f"{who}: `state` must be an RMSpropState, got {type(state).__name__}")
    count = state.count
    if not hasattr(count, "dtype") or not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(
            f"{who}: `state.count` must be an integer scalar (int32), got "
            f"{getattr(count, 'dtype', type(count).__name__)}"
        )
    if jnp.ndim(count) != 0:
        raise ValueError(f"{who}: `state.count` must be a scalar, got shape {jnp.shape(count)}")
    if not jax.tree.leaves(state.rms):
        return  # no parameters: nothing to check or update
    if config.centered != (state.mg is not None):
        raise ValueError(
            f"{who}: `state` {'lacks' if config.centered else 'has'} the `mg` slot but "
            f"this transformation has centered={config.centered}"
        )
    has_slot = config.momentum_slot is not False
    if has_slot != (state.momentum is not None):
        raise ValueError(
            f"{who}: `state` "
            + (
                "lacks the momentum slot that this transformation's momentum needs"
                if has_slot
                else "has a momentum slot but momentum is None or 0"
            )
            + "; build the state with the same transformation's init"
        )


def _variant(config: _Config, has_momentum: bool) -> arithmetic.Variant:
    return config.rule.variant(has_momentum, config.epsilon_nonzero)


def _leaf_dtype(leaf: Any) -> Any:
    """The dtype of a gradient or parameter leaf (an IndexedSlices' values'), or None."""
    if isinstance(leaf, sparse.IndexedSlices):
        leaf = leaf.values
    return getattr(leaf, "dtype", None)


def _real_parameter_evidence(i: int, grad_leaves, param_leaves, mom_leaves, mg_leaves):
    """What shows that leaf ``i``'s parameter is real: the parameter itself when given, else its
    momentum or mg slot (complex for a complex parameter in every preset), else its gradient.
    Returns the description of that evidence when it is real floating point, else None (other
    dtypes are refused, naming them, by the checks of the leaf)."""
    param = None if param_leaves is None else param_leaves[i]
    if param is not None:
        dtype = _leaf_dtype(param)
        real = dtype is not None and jnp.issubdtype(dtype, jnp.floating)
        return f"the parameter there is real ({jnp.dtype(dtype).name})" if real else None
    slots = [
        (name, leaves[i])
        for name, leaves in (("momentum", mom_leaves), ("mg", mg_leaves))
        if leaves is not None and leaves[i] is not None
    ]
    if slots:
        for name, leaf in slots:
            dtype = _leaf_dtype(leaf)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                return f"`state.{name}` there is real ({jnp.dtype(dtype).name})"
        return None
    dtype = None if grad_leaves is None else _leaf_dtype(grad_leaves[i])
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        return (
            f"the gradient there is real ({jnp.dtype(dtype).name}; pass `params` if the "
            "parameter is complex)"
        )
    return None


def _check_slots(
    who: str, paths, rms_leaves, mom_leaves, mg_leaves, grad_leaves=None, param_leaves=None
) -> None:
    for i, (path, rms) in enumerate(zip(paths, rms_leaves, strict=True)):
        if not jnp.issubdtype(rms.dtype, jnp.inexact):
            raise TypeError(
                f"{who}: `state.rms` at {_path_str(path)} has dtype {rms.dtype.name}; "
                "slots must be floating point"
            )
        for name, leaves in (("momentum", mom_leaves), ("mg", mg_leaves)):
            if leaves is None:
                continue
            leaf = leaves[i]
            if jnp.shape(leaf) != jnp.shape(rms):
                raise ValueError(
                    f"{who}: `state.{name}` at {_path_str(path)} has shape "
                    f"{tuple(jnp.shape(leaf))}, but `state.rms` there has {tuple(rms.shape)}"
                )
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise TypeError(
                    f"{who}: `state.{name}` at {_path_str(path)} has dtype "
                    f"{jnp.dtype(leaf.dtype).name}; slots must be floating point"
                )
        if jnp.issubdtype(rms.dtype, jnp.complexfloating):
            # init gives a real parameter a real rms in every preset (a complex one only to a
            # complex parameter, in compat.torch); a complex rms would turn the state and the
            # updates complex.
            evidence = _real_parameter_evidence(i, grad_leaves, param_leaves, mom_leaves, mg_leaves)
            if evidence is not None:
                raise TypeError(
                    f"{who}: `state.rms` at {_path_str(path)} has complex dtype "
                    f"{rms.dtype.name}, but {evidence}: a real parameter's `rms` must be real "
                    "(build the state with the transformation's init)"
                )


@overload
def _as_real(x: jax.Array) -> jax.Array: ...
@overload
def _as_real(x: None) -> None: ...
def _as_real(x: jax.Array | None) -> jax.Array | None:
    """A complex array as real pairs ``[..., (re, im)]`` (PyTorch's ``view_as_real``)."""
    if x is None or not jnp.iscomplexobj(x):
        return x
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


@overload
def _as_complex(x: jax.Array, like: jax.Array | None) -> jax.Array: ...
@overload
def _as_complex(x: None, like: jax.Array | None) -> None: ...
def _as_complex(x: jax.Array | None, like: jax.Array | None) -> jax.Array | None:
    if x is None or like is None or not jnp.iscomplexobj(like):
        return x
    return jax.lax.complex(x[..., 0], x[..., 1]).astype(like.dtype)


def _leaf_update(
    path, g, param, rms, mom, mg, momentum_on, scalars_for, config: _Config, apply: str
) -> tuple[Any, jax.Array, jax.Array | None, jax.Array | None] | cpu_kernel.Leaf:
    """One leaf: the checks that name its path, then :func:`_leaf_step`.

    Returns ``(update, rms, momentum, mg)``; the update is in the parameter's dtype (when
    ``param`` is given) or in the promoted dtype of the gradient and the slot. With ``apply``
    other than ``"updates"`` the first result is the new parameter instead (``param + update``,
    as ``optax.apply_updates`` computes it). With ``"fused"``, a leaf that the one-pass CPU
    kernel may take (:func:`cpu_kernel.takes`) is returned unchanged as a ``cpu_kernel.Leaf``,
    for :func:`cpu_kernel.apply_leaves`: bit for bit what ``"params"`` computes.
    """
    rule = config.rule
    param = None if param is None else jnp.asarray(param)
    is_sparse = isinstance(g, sparse.IndexedSlices)
    if not is_sparse:
        g = jnp.asarray(g)
    shape = g.dense_shape if isinstance(g, sparse.IndexedSlices) else jnp.shape(g)
    if tuple(shape) != tuple(rms.shape):
        raise ValueError(
            f"{rule.framework}: gradient at {_path_str(path)} has shape {tuple(shape)} but the "
            f"state expects {tuple(rms.shape)}"
        )
    _check_float(rule.framework, "gradient", path, g.dtype)
    if param is not None:
        _check_float(rule.framework, "parameter", path, param.dtype)
        if param.shape != rms.shape:  # read for weight decay, or the update applied to it
            raise ValueError(
                f"{rule.framework}: parameter at {_path_str(path)} has shape {param.shape} but "
                f"the state expects {tuple(rms.shape)}"
            )
    g_complex = jnp.issubdtype(g.dtype, jnp.complexfloating)
    real_target = next(
        (x for x in (param, mom, mg) if x is not None and not jnp.iscomplexobj(x)), None
    )
    if g_complex and real_target is not None:
        raise TypeError(
            f"{rule.framework}: gradient at {_path_str(path)} is complex "
            f"({jnp.dtype(g.dtype).name}) but the parameter (or its slots) is real; take the real "
            "part or make the parameter complex"
        )
    if is_sparse and g_complex and rule.complex_as_real:
        raise NotImplementedError(
            f"{rule.framework}: sparse complex gradients are not supported (at "
            f"{_path_str(path)}); pass a dense gradient"
        )
    slot_dtype = (mom if mom is not None else rms).dtype
    dtype = arithmetic.compute_dtype(g.dtype, slot_dtype, None if param is None else param.dtype)
    # optax's contract: the parameter's dtype, else the gradient's (never the slots').
    out_dtype = g.dtype if param is None else param.dtype
    if apply == "fused":
        if (
            config.use_weight_decay is False
            and momentum_on is None
            and param is not None
            and cpu_kernel.takes(g, param, rms, mom, mg, _variant(config, mom is not None))
        ):
            return cpu_kernel.Leaf(g, param, rms, mom, mg)
        apply = "params"  # the same numbers through XLA (and the same cached trace)
    sc = scalars_for(dtype)
    return _leaf_step(
        g,
        param,
        rms,
        mom,
        mg,
        momentum_on,
        sc,
        config=config,
        apply=apply,
        dtype=dtype,
        out_dtype=jnp.dtype(out_dtype),
    )


# Traced and lowered once per leaf signature (shapes, dtypes, configuration): a tree of many
# same-shaped leaves costs one trace, not one per leaf. XLA inlines the calls (same program).
@functools.partial(jax.jit, static_argnames=("config", "apply", "dtype", "out_dtype"))
def _leaf_step(
    g, param, rms, mom, mg, momentum_on, sc, config: _Config, apply: str, dtype, out_dtype
):
    """The arithmetic of one checked leaf, computed in ``dtype``, the update in ``out_dtype``
    (see :func:`_leaf_update`)."""
    rule = config.rule
    is_sparse = isinstance(g, sparse.IndexedSlices)
    param_in = param  # to apply the update to
    if config.use_weight_decay is False:
        param = None  # read for its dtype only: p never enters the arithmetic

    def step(mom_slot, has_momentum):
        variant = _variant(config, has_momentum)
        if is_sparse:
            return sparse.sparse_step(g, param, rms, mom_slot, mg, sc, variant, dtype, out_dtype)
        if jnp.iscomplexobj(g) and rule.complex_as_real:  # PyTorch: two real parameters each
            rdtype = arithmetic.real_dtype(dtype)
            update, rms2, mom2, mg2 = arithmetic.rmsprop_step(
                _as_real(g),
                _as_real(param),
                _as_real(rms),
                _as_real(mom_slot),
                _as_real(mg),
                sc,
                variant,
                rdtype,
                negate=True,
            )
            update = _as_complex(update.astype(rdtype), g.astype(dtype))
            return (
                update.astype(out_dtype),
                _as_complex(rms2, rms),
                _as_complex(mom2, mom_slot),
                _as_complex(mg2, mg),
            )
        update, rms2, mom2, mg2 = arithmetic.rmsprop_step(
            g, param, rms, mom_slot, mg, sc, variant, dtype, negate=True
        )
        return update.astype(out_dtype), rms2, mom2, mg2

    # An array momentum (e.g. optax.inject_hyperparams): the slot exists, and the step's value
    # picks the formula, so that 0 computes what a Python 0 does (no buffer, ε outside for Keras).
    def without_momentum():
        update, rms2, _, mg2 = step(None, False)
        return update, rms2, mom, mg2

    def dispatch():
        if mom is None:
            return step(None, False)
        if momentum_on is None:
            return step(mom, True)
        return jax.lax.cond(momentum_on, lambda: step(mom, True), without_momentum)

    if apply == "updates":
        return dispatch()

    def applied(update, *slots):
        return (sparse.apply_updates(param_in, update), *slots)

    return applied(*dispatch())


def _check_no_weight_decay(rule: arithmetic.Rule, value: Any) -> None:
    """Host-side check of a traced weight decay called without ``params``: it must be 0."""
    value = np.asarray(value)
    if value != 0:
        raise ValueError(
            f"{rule.framework}: `weight_decay` is {value} but `params` were not passed: weight "
            "decay needs them, call update(grads, state, params)"
        )


def _schedule_value(
    rule: arithmetic.Rule, name: str, schedule: _Schedule, count: jax.Array
) -> jax.Array:
    """The schedule's value at ``count``, checked while tracing (see
    :func:`validation.check_schedule_value`): its shape and dtype always, its range when it is
    concrete or does not depend on the step (:func:`_step_independent_value`)."""
    user_name = rule.user_name(name)
    float32 = name in rule.float32_hyperparameters
    value = schedule.fn(count)
    checked = validation.check_schedule_value(user_name, value, name, float32)
    if isinstance(value, jax.core.Tracer):
        constant = _step_independent_value(schedule.fn)
        if constant is not None:
            validation.check_schedule_range(user_name, constant, name, float32)
    return checked


def _step_independent_value(fn: Schedule) -> Any:
    """``fn``'s value when it does not depend on the step count, else None.

    Under ``jit`` (an eager ``update`` is jitted too) even ``lambda t: jnp.float32(-1.0)``
    returns a tracer, whose value cannot be read. So ``fn`` is traced once more, on its own
    (``jax.make_jaxpr``: nothing enters the update's program), and when its result does not
    depend on the count and it has no effects (``jax.debug.print``), that small program is run
    on the spot. Costs one more trace of the schedule, once per compilation of the update.
    """
    try:
        closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((), jnp.int32))
    except Exception:  # only a check: the update's own trace of ``fn`` has succeeded
        return None
    jaxpr = closed.jaxpr
    if closed.effects or len(jaxpr.outvars) != 1:
        return None
    out = jaxpr.outvars[0]
    if isinstance(out, jax_core.Literal):
        return out.val
    dependent = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jax_core.Literal) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    if out in dependent:
        return None
    with jax.ensure_compile_time_eval():  # concrete inputs: computed now, not staged
        (value,) = jax_core.jaxpr_as_fun(closed)(np.zeros((), np.int32))
    # A schedule that closes over a traced value (built inside a caller's jit) stays traced.
    return None if isinstance(value, jax.core.Tracer) else value


def _tree_update(
    updates,
    state: RMSpropState,
    params,
    dynamic,
    config: _Config,
    apply: str = "updates",
):
    """The whole-tree update (see :data:`_update`).

    Checks (structure, shapes, dtypes) run while tracing, so an eager call that hits the cache
    pays for none of them. ``apply`` (see :func:`_leaf_update`) returns the new parameters
    instead of the updates.
    """
    _check_state(state, config)
    who = config.rule.framework
    paths_and_rms, treedef = jax.tree_util.tree_flatten_with_path(state.rms)
    paths = [path for path, _ in paths_and_rms]
    rms_leaves = [leaf for _, leaf in paths_and_rms]
    grad_leaves = _flatten_as(
        who, treedef, updates, "updates" if apply == "updates" else "grads", paths
    )
    if config.use_weight_decay is True and params is None and rms_leaves:
        raise ValueError(
            f"{config.rule.framework}: weight decay needs `params`: call "
            "update(grads, state, params)"
        )
    param_leaves = (
        [None] * len(rms_leaves)
        if params is None
        else _flatten_as(who, treedef, params, "params", paths)
    )
    has_momentum = state.momentum is not None
    mom_leaves = (
        _flatten_as(who, treedef, state.momentum, "state.momentum", paths) if has_momentum else None
    )
    mg_leaves = (
        _flatten_as(who, treedef, state.mg, "state.mg", paths) if state.mg is not None else None
    )
    _check_slots(who, paths, rms_leaves, mom_leaves, mg_leaves, grad_leaves, param_leaves)

    count = state.count.astype(jnp.int32)
    rule = config.rule
    values = [
        _schedule_value(rule, name, schedule, count) if schedule is not None else value
        for name, schedule, value in zip(_NAMES, config.schedules, dynamic[:6], strict=True)
    ]
    hp = arithmetic.Hyperparams(*values, step=count)
    if config.use_weight_decay is None and params is None and rms_leaves:
        jax.debug.callback(
            functools.partial(_check_no_weight_decay, config.rule), hp.weight_decay
        )  # a traced weight decay
    momentum_on = None
    if config.momentum_slot is None and has_momentum:
        momentum_on = jnp.asarray(hp.momentum) != 0

    scalars: dict[Any, arithmetic.Scalars] = {}  # resolved once per real compute dtype

    def scalars_for(dtype: Any) -> arithmetic.Scalars:
        key = arithmetic.real_dtype(dtype)
        if key not in scalars:
            scalars[key] = arithmetic.resolve(hp, dynamic[6], key, rule)
        return scalars[key]

    out = []
    for i, (path, g, rms) in enumerate(zip(paths, grad_leaves, rms_leaves, strict=True)):
        mom = mom_leaves[i] if mom_leaves is not None else None
        mg = mg_leaves[i] if mg_leaves is not None else None
        if g is None:  # a None gradient leaf passes through; its slots stay as they are
            out.append((None if apply == "updates" else param_leaves[i], rms, mom, mg))
            continue
        if apply != "updates" and param_leaves[i] is None:
            raise ValueError(
                f"update_and_apply: `params` at {_path_str(path)} is None but the gradient there "
                "is not: the step has no parameter to be added to (pass the parameter, or a "
                "None gradient for a leaf that is not trained)"
            )
        out.append(
            _leaf_update(
                path, g, param_leaves[i], rms, mom, mg, momentum_on, scalars_for, config, apply
            )
        )

    kernel_at = [i for i, leaf in enumerate(out) if isinstance(leaf, cpu_kernel.Leaf)]
    if kernel_at:
        new = cpu_kernel.apply_leaves(
            [out[i] for i in kernel_at], scalars_for(jnp.float32), _variant(config, has_momentum)
        )
        for i, leaf in zip(kernel_at, new, strict=True):
            out[i] = tuple(leaf)

    new_count = jnp.where(count < validation.INT32_MAX, count + 1, count).astype(jnp.int32)
    unflatten = treedef.unflatten
    columns = list(zip(*out, strict=True)) if out else [[], [], [], []]
    new_state = RMSpropState(
        count=new_count,
        rms=unflatten(columns[1]),
        momentum=unflatten(columns[2]) if has_momentum else None,
        mg=unflatten(columns[3]) if mg_leaves is not None else None,
    )
    return unflatten(columns[0]), new_state


# Compiled once per tree signature and configuration: an eager ``update`` is one cached call.
# Inside a user's ``jit`` (the state is traced) the tree update is traced inline instead: a
# nested call with one argument per leaf and slot only adds work for XLA's call inliner.
_update = jax.jit(_tree_update, static_argnames=("config", "apply"))


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _uses_weight_decay(weight_decay: Any, concrete: float | None) -> bool | None:
    """Whether ``p`` enters the update: not for None or a concrete 0, always for a schedule or a
    non-zero number, and for a traced value (``optax.inject_hyperparams`` under ``jit``) exactly
    when ``params`` are passed, as an eager call with a concrete 0 would not need them."""
    if weight_decay is None:
        return False
    if concrete is not None:
        return concrete != 0.0
    return True if validation.is_schedule(weight_decay) else None


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _check_count(rule: arithmetic.Rule, count: Any) -> None:
    """Refuses a concrete integer ``state.count`` of another dtype than int32 (e.g. NumPy's
    int64) whose value int32 cannot hold: ``jit`` would wrap it (2**40 becomes 0) and the step
    would count from there. A traced count cannot be checked (its value is on the device); an
    int32 one (what ``init`` makes) costs nothing; other malformed counts are left to the
    checks of the update (``_check_state``)."""
    dtype = getattr(count, "dtype", None)
    if (
        dtype is None
        or _is_traced(count)
        or jnp.dtype(dtype) == jnp.int32
        or not jnp.issubdtype(dtype, jnp.integer)
        or jnp.ndim(count) != 0
    ):
        return
    value = int(np.asarray(count))
    if not np.iinfo(np.int32).min <= value <= validation.INT32_MAX:
        raise ValueError(
            f"{rule.framework}: `state.count` is {value}, which the int32 step counter cannot "
            "hold (jit would wrap it around); the count must lie in [-2**31, 2**31 - 1]"
        )


def _name_a_leaf_that_is_not_an_array(who: str, error: Exception, what: str, tree: Any) -> None:
    """Raises a ``TypeError`` naming the first leaf of the argument ``what`` (``tree``) that is
    not an array, a number, an ``IndexedSlices`` or ``None`` (a string, say), from ``error``
    (JAX's "Error interpreting argument", which names neither). Run only after the update
    failed, so a valid call pays nothing for it."""
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is None or isinstance(x, sparse.IndexedSlices)
    )[0]
    for path, leaf in leaves:
        if leaf is None or isinstance(leaf, sparse.IndexedSlices):
            continue
        if isinstance(leaf, (str, bytes)) or not (
            hasattr(leaf, "shape") and hasattr(leaf, "dtype") or isinstance(leaf, (int, float))
        ):
            raise TypeError(
                f"{who}: `{what}` at {_path_str(path)} is {type(leaf).__name__} "
                f"{validation.abbreviated(repr(leaf), 60)}; it must be an array"
            ) from error


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
    """The transformation for ``rule`` (used by :func:`rmsprop` and every preset).

    ``momentum_slot=True`` keeps a momentum buffer even for momentum 0 (Keras: a tensor or
    callable momentum; used by the stateful wrapper). ``initial_rms`` (a number or 0-d array)
    overrides ``rule.initial_rms``. The ``update`` is an :class:`Update`, whose ``apply`` method
    :func:`jrmsprop.update_and_apply` calls.
    """
    no_momentum = momentum is None
    hyperparams = dict(
        learning_rate=learning_rate,
        rho=rho,
        momentum=0.0 if no_momentum else momentum,
        epsilon=epsilon,
        decay=decay,
        weight_decay=0.0 if weight_decay is None else weight_decay,
    )
    concrete = {
        name: validation.check_hyperparameter(
            rule.user_name(name), value, name, float32=name in rule.float32_hyperparameters
        )
        for name, value in hyperparams.items()
    }
    for name, value in hyperparams.items():
        if validation.is_schedule(value):
            validation.check_schedule_signature(rule.user_name(name), value)
    validation.check_bool("centered", centered)
    # NumPy and Python integers enter jit as Python floats (an int64 would be narrowed to int32).
    hyperparams = {
        name: validation.jit_value(value, concrete[name]) for name, value in hyperparams.items()
    }
    learning_rate, rho, momentum, epsilon = (
        hyperparams[name] for name in ("learning_rate", "rho", "momentum", "epsilon")
    )
    if slot_dtype is not None:
        try:
            slot_kind = jnp.dtype(slot_dtype)
        except TypeError as e:
            raise TypeError(f"`slot_dtype` must be a dtype, got {slot_dtype!r}") from e
        if not jnp.issubdtype(slot_kind, jnp.floating):
            raise TypeError(f"`slot_dtype` must be a floating dtype, got {slot_kind.name}")
        slot_dtype = slot_kind

    # Is there a momentum slot? Decided by static information only (optax's rule: the state's
    # structure never depends on a traced value): None and a Python number by its value, a
    # schedule always (as Keras does for a callable); an array (optax.inject_hyperparams) gets
    # the slot and its value picks the formula at each step (momentum_slot None).
    if momentum_slot is None:
        momentum_slot = rule.momentum_slot
    if momentum_slot is None:
        if validation.is_schedule(momentum):
            momentum_slot = True
        elif no_momentum or _is_python_number(momentum):
            momentum_slot = concrete["momentum"] != 0.0
    one_minus_rho = None
    if rule.one_minus_rho_in_double and _is_python_number(rho):
        one_minus_rho = 1.0 - float(rho)  # Python double, rounded once when cast
    config = _Config(
        rule=rule,
        schedules=tuple(
            _Schedule(v) if validation.is_schedule(v) else None for v in hyperparams.values()
        ),
        centered=bool(centered),
        momentum_slot=momentum_slot,
        use_weight_decay=_uses_weight_decay(weight_decay, concrete["weight_decay"]),
        slot_dtype=slot_dtype,
        # A normal float32 number stays non-zero in every compute dtype (even with denormals
        # flushed); a smaller or traced ε keeps the guard of the square root.
        epsilon_nonzero=_is_python_number(epsilon)
        and abs(concrete["epsilon"] or 0.0) >= _FLOAT32_TINY,
    )
    dynamic = tuple(
        None if schedule is not None else value
        for schedule, value in zip(config.schedules, hyperparams.values(), strict=True)
    ) + (one_minus_rho,)

    def init_fn(params: optax.Params) -> optax.OptState:
        state = _init(params, config, rule.initial_rms if initial_rms is None else initial_rms)
        return cast(optax.OptState, state)  # chex's ArrayTree has no None (an absent slot)

    def run(updates, state, params, apply):
        _check_count(rule, getattr(state, "count", None))
        update = _tree_update if _is_traced(getattr(state, "count", None)) else _update
        try:
            return update(updates, state, params, dynamic, config=config, apply=apply)
        except TypeError as e:  # JAX refuses a leaf as a jit argument: name it, if it is ours
            what = "updates" if apply == "updates" else "grads"
            _name_a_leaf_that_is_not_an_array(rule.framework, e, what, updates)
            _name_a_leaf_that_is_not_an_array(rule.framework, e, "params", params)
            raise

    return optax.GradientTransformationExtraArgs(init_fn, Update(run))


class Update:
    """The ``update`` of a jrmsprop transformation: ``update(updates, state, params=None)``.

    ``apply(grads, state, params, fused=False)`` returns ``(new_params, new_state)`` instead:
    the update added to the parameters (see :func:`jrmsprop.update_and_apply`).
    """

    __slots__ = ("_run", "__weakref__")  # jax.jit keeps weak references to what it compiles

    def __init__(self, run: Callable[..., Any]):
        self._run = run

    def __call__(
        self,
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        del extra_args
        return self._run(updates, state, params, "updates")

    def apply(
        self,
        grads: optax.Updates,
        state: optax.OptState | RMSpropState,
        params: optax.Params,
        fused: bool = False,
    ) -> tuple[optax.Params, RMSpropState]:
        return self._run(grads, state, params, "fused" if fused else "params")


# TF 2.x Keras stores learning_rate, rho and momentum as float32 hyperparameter variables, and
# tf.cast(decay, var_dtype) converts a Python decay to a float32 tensor first; epsilon is converted
# straight to the variable's dtype (checked against tf_keras 2.21 on float64 variables).
KERAS2 = arithmetic.Rule(
    framework="rmsprop",
    float32_hyperparameters=frozenset({"learning_rate", "rho", "momentum", "decay"}),
)


def _is_python_number(value: Any) -> TypeGuard[float]:
    """A Python or NumPy scalar number (not a bool, array or schedule)."""
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


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
    r"""RMSprop with the exact arithmetic of the TensorFlow 2.x Keras optimizer.

    This is TF 2.0–2.10 ``tf.keras.optimizers.RMSprop``, which TF >= 2.11 calls
    ``tf.keras.optimizers.legacy.RMSprop`` (and ``tf_keras.optimizers.legacy.RMSprop``).
    TF >= 2.11's default ``tf.keras.optimizers.RMSprop`` is Keras 3's: use
    :func:`jrmsprop.compat.keras3`.

    With ``t`` the number of updates already applied and ``lr = learning_rate(t) / (1 + decay·t)``:

    .. math::

      r &\leftarrow \rho\, r + (1 - \rho)\, |g|^2 \\
      m_g &\leftarrow \rho\, m_g + (1 - \rho)\, g \quad (\text{centered}; v = r - |m_g|^2,
        \text{ else } v = r) \\
      \text{momentum slot:}\quad m &\leftarrow \mu\, m + \frac{lr\, g}{\sqrt{v + \epsilon}},
        \qquad u = -m \\
      \text{no momentum slot:}\quad u &= -\frac{lr\, g}{\sqrt{v} + \epsilon}

    So, as in Keras 2, ε sits *inside* the root when there is a momentum slot and *outside*
    otherwise. Whether there is a slot is decided by what you wrote, never by a traced value
    (optax's rule, so that a state has one structure in every calling style): ``None`` (the
    default) or a number by its value (0: no slot); a schedule always, as Keras does for a
    callable. An array -- ``optax.inject_hyperparams`` turns every number into one -- always
    gets the slot, and its value at each step picks the formula: 0 computes exactly what a
    Python 0 does (ε outside, the buffer untouched), anything else what that number does. So
    injected values give the plain transformation's numbers; Keras's own rule (a tensor
    momentum is "on" whatever its value) is what a schedule gives. Leave ``momentum`` at
    ``None`` under ``inject_hyperparams`` and the state has no buffer, as the plain one.

    Numerics:

    * The update is computed in the promoted dtype of the gradient, the slots and the parameter
      (when ``params`` is passed to ``update``), at least float32, and returned in the
      parameter's dtype (without ``params``: the promoted dtype of gradient and slot), as optax
      does. As in TF, ``learning_rate``, ``rho`` and ``momentum`` are float32 values even for
      float64 parameters (``float64(float32(0.1))``), and so is ``decay``; ``epsilon`` is not.
    * Slots have the parameter's dtype, except float16 parameters, which get float32 slots (the
      squared gradients in ``rms`` under/overflow float16); ``slot_dtype`` overrides this.
    * Complex parameters use ``|g|²`` with a real ``rms`` slot. TF 2.x Keras itself squares the
      complex gradient (``g·g``, complex ``rms``); jrmsprop deliberately does not reproduce that.
      A complex gradient for a real parameter raises.
    * A NaN or inf gradient poisons ``rms`` (and the momentum) for good, as in Keras: every later
      step is NaN. Wrap the optimizer in ``optax.apply_if_finite(tx, max_consecutive_errors)``
      to skip such steps.

    Sparse gradients may be given as :class:`jrmsprop.IndexedSlices` leaves (apply them with
    ``optax.apply_updates``). The other frameworks' arithmetic is in :mod:`jrmsprop.compat`.

    Args:
      learning_rate: step size ``lr`` (finite number >= 0, 0-d array, or schedule of the step).
      rho: discounting factor of the moving averages, in ``[0, 1]``.
      momentum: heavy-ball momentum ``μ`` in ``[0, 1]``, or ``None`` (no momentum slot).
      epsilon: ``ε`` against division by zero (finite, ``>= 0``). As Keras's ``epsilon or
        backend.epsilon()``, a number ``0`` or ``None`` means ``1e-7``; an array (e.g. under
        ``optax.inject_hyperparams``) or a schedule is used as it is.
      centered: normalise by the estimated variance (keeps the ``mg`` slot).
      decay: Keras's inverse-time learning-rate decay, ``lr / (1 + decay·t)`` (finite, ``>= 0``;
        a value in ``[0.5, 1]`` looks like a moving-average factor and warns, naming ``rho``).
      slot_dtype: dtype of the slots (default: as described under Numerics).
      lr: Keras's deprecated name of ``learning_rate``: replaces it, with Keras's warning.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`RMSpropState`.
      ``update(updates, state, params=None)`` is pure, compiled once per tree signature (also when
      called eagerly) and traces once inside a user's ``jit``.

    Example:
      >>> import jax.numpy as jnp, optax, jrmsprop
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> params = {"p": jnp.array(10.0)}
      >>> state = tx.init(params)
      >>> grads = {"p": params["p"]}  # loss = p² / 2
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.apply_updates(params, updates)["p"]
      Array(9.683772, dtype=float32)

    References:
      Hinton, *Neural Networks for Machine Learning*, lecture 6e (2012);
      ``tf.keras.optimizers.RMSprop`` (TensorFlow 2.0–2.10; ``tf_keras.optimizers.legacy``).
    """
    if lr is not None:
        learning_rate = validation.legacy_lr(learning_rate, {"lr": lr})
    if epsilon is None or (_is_python_number(epsilon) and epsilon == 0):
        epsilon = validation.KERAS_EPSILON  # Keras 2: ``epsilon or backend.epsilon()``
    if _is_python_number(decay) and 0.5 <= decay <= 1:
        # optax and PyTorch users write ρ as `decay`; Keras recipes decay the rate by 1e-6..1e-2.
        warnings.warn(
            f"rmsprop: `decay`={decay} is Keras's inverse-time learning-rate decay "
            f"lr / (1 + decay·t) (the rate is {1 + 10 * decay:g}x smaller by step 10), not the "
            "moving-average factor; pass that as `rho`",
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
