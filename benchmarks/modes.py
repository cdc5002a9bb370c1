"""Who runs the step, and how: one row of the report per :class:`Mode`.

Each mode's constructor takes the workload and the lazily imported peers and returns a
zero-argument step (a closure over its own state), or raises :class:`Skip` with the reason.
The :data:`DENSE_MODES` and :data:`EMBEDDING_MODES` tables list them in report order.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.measure import block, cpu_count, no_sync
from benchmarks.workloads import EPSILON, LEARNING_RATE, RHO, Workload

Step = Callable[[], Any]


class Skip(Exception):
    """A mode that cannot run here (with the reason)."""


# --------------------------------------------------------------------------------------------
# Peers (imported lazily, each optional)
# --------------------------------------------------------------------------------------------

PEER_NAMES = ("optax", "keras", "torch", "tf_keras")


class Peers:
    """Lazily imported peer frameworks; :class:`Skip` (with the reason) when absent."""

    def __init__(self, wanted: set[str], slow: bool = False):
        self.wanted = wanted
        self.slow = slow
        self.notes: dict[str, str] = {}
        self._modules: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self._modules:
            module = None
            if key not in self.wanted:
                self.notes[key] = "not requested (--peers)"
            else:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        module = _LOADERS[key]()
                except Exception as e:  # noqa: BLE001 - any import failure means "absent"
                    self.notes[key] = f"not importable: {type(e).__name__}: {e}"
            self._modules[key] = module
        if self._modules[key] is None:
            raise Skip(self.notes[key])
        return self._modules[key]


def _load_torch() -> Any:
    import torch

    torch.set_num_threads(cpu_count())
    return torch


def _load_tf_keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    tf.get_logger().setLevel("ERROR")
    return (tf, tf_keras)


def _load_keras() -> Any:
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"  # must precede the import
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras runs on the {keras.backend.backend()!r} backend, not jax")
    return keras


_LOADERS: dict[str, Callable[[], Any]] = {
    "optax": lambda: importlib.import_module("optax"),
    "keras": _load_keras,
    "torch": _load_torch,
    "tf_keras": _load_tf_keras,
}


# --------------------------------------------------------------------------------------------
# The optimizers
# --------------------------------------------------------------------------------------------


def jrmsprop_tx(momentum: float, centered: bool, **options: Any) -> Any:
    import jrmsprop

    return jrmsprop.rmsprop(
        LEARNING_RATE, rho=RHO, momentum=momentum, epsilon=EPSILON, centered=centered, **options
    )


def optax_tx(momentum: float, centered: bool) -> Any:
    """``optax.rmsprop`` with Keras 2's rule, as jrmsprop's default: ε outside the root without
    momentum, inside with."""
    import optax

    return optax.rmsprop(
        LEARNING_RATE,
        decay=RHO,
        eps=EPSILON,
        eps_in_sqrt=momentum > 0,
        centered=centered,
        momentum=momentum if momentum > 0 else None,
    )


# --------------------------------------------------------------------------------------------
# Step builders
# --------------------------------------------------------------------------------------------


def _device(arrays: list[np.ndarray]) -> list[Any]:
    """The arrays on the device, transferred (so no mode's first call waits for another's)."""
    import jax
    import jax.numpy as jnp

    return jax.block_until_ready([jnp.array(a) for a in arrays])


def jit_donated_step(
    tx: Any, params: Any, *grads: Any, grad_fn: Any = None, apply: Any = None
) -> Step:
    """The user's jitted training step, params and state donated, as a closure.

    The step has ``lower()`` (for XLA's cost analysis) and ``n_leaves``. ``grad_fn`` builds the
    gradient from ``grads`` inside the jit (the sparse step; by default ``grads[0]`` is it);
    ``apply`` adds the updates (default ``optax.apply_updates``).
    """
    import jax
    import optax

    make_grad = grad_fn or (lambda g: g)
    apply = apply or optax.apply_updates

    def train_step(p: Any, s: Any, *g: Any) -> Any:
        updates, s = tx.update(make_grad(*g), s, p)
        return apply(p, updates), s

    step = jax.jit(train_step, donate_argnums=(0, 1))
    box = jax.block_until_ready([params, tx.init(params)])  # first call: compile + one step

    def run() -> Any:
        box[0], box[1] = step(box[0], box[1], *grads)
        return box

    run.lower = lambda: step.lower(box[0], box[1], *grads)  # type: ignore[attr-defined]
    run.n_leaves = len(jax.tree.leaves(params))  # type: ignore[attr-defined]
    return run


def eager_update_step(tx: Any, params: Any, grads: Any) -> Step:
    """``updates, state = tx.update(grads, state, params)`` called eagerly, state carried on."""
    import jax

    box = jax.block_until_ready([tx.init(params)])

    def run() -> Any:
        updates, box[0] = tx.update(grads, box[0], params)
        return updates, box[0]

    return run


# --------------------------------------------------------------------------------------------
# The modes
# --------------------------------------------------------------------------------------------


def jrmsprop_jit(wl: Workload, peers: Peers, **options: Any) -> Step:
    tx = jrmsprop_tx(wl.momentum, wl.centered, **options)
    return jit_donated_step(tx, _device(wl.params), _device(wl.grads))


def jrmsprop_jit_flat(wl: Workload, peers: Peers) -> Step:
    if len(wl.leaf_shapes) == 1:
        raise Skip("single leaf: already flat")
    import jax.numpy as jnp

    flat_p = jnp.array(np.concatenate([a.ravel() for a in wl.params]))
    flat_g = jnp.array(np.concatenate([a.ravel() for a in wl.grads]))
    return jit_donated_step(jrmsprop_tx(wl.momentum, wl.centered), flat_p, flat_g)


def _apply_step(wl: Workload, fused: bool, packed_params: bool = False) -> Step:
    """``jrmsprop.update_and_apply`` (what ``RMSprop.apply_gradients`` runs too) in the user's
    ``jit``, params and state donated; ``fused`` lets float32 leaves take the one-pass CPU
    kernel; ``packed_params`` packs parameters and gradients first (``jrmsprop.pack``)."""
    import jax

    import jrmsprop
    from jrmsprop._src import cpu_kernel

    if fused and not cpu_kernel.available():
        raise Skip(
            f"the fused CPU kernel is not available here ({cpu_kernel.unavailable_reason()})"
        )
    tx = jrmsprop_tx(wl.momentum, wl.centered)
    params, grads = _device(wl.params), _device(wl.grads)
    if packed_params:
        params = jrmsprop.pack(params)
        grads = jrmsprop.pack(grads, like=params)
    step = jax.jit(
        lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p, fused=fused), donate_argnums=(0, 1)
    )
    box = jax.block_until_ready([params, tx.init(params)])

    def run() -> Any:
        box[0], box[1] = step(box[0], box[1], grads)
        return box

    run.lower = lambda: step.lower(box[0], box[1], grads)  # type: ignore[attr-defined]
    run.n_leaves = len(jax.tree.leaves(params))  # type: ignore[attr-defined]
    return run


def jrmsprop_jit_fused(wl: Workload, peers: Peers) -> Step:
    return _apply_step(wl, fused=True)


def jrmsprop_jit_xla(wl: Workload, peers: Peers) -> Step:
    return _apply_step(wl, fused=False)


def jrmsprop_jit_packed_fused(wl: Workload, peers: Peers) -> Step:
    """The fused CPU kernel on packed parameters: one kernel call for all leaves."""
    if len(wl.leaf_shapes) == 1:
        raise Skip("single leaf: nothing to pack")
    return _apply_step(wl, fused=True, packed_params=True)


def jrmsprop_jit_packed_params(wl: Workload, peers: Peers) -> Step:
    """The user's jitted step with packed parameters (``jrmsprop.pack``): gradients packed
    like them, the state's slots packed by ``tx.init``; one buffer per dtype crosses the jit."""
    if len(wl.leaf_shapes) == 1:
        raise Skip("single leaf: nothing to pack")
    import jrmsprop

    params = jrmsprop.pack(_device(wl.params))
    grads = jrmsprop.pack(_device(wl.grads), like=params)
    return jit_donated_step(jrmsprop_tx(wl.momentum, wl.centered), params, grads)


def jrmsprop_jit_packed(wl: Workload, peers: Peers) -> Step:
    if len(wl.leaf_shapes) == 1:
        raise Skip("single leaf: nothing to pack")
    import jrmsprop

    tx = jrmsprop.packed(jrmsprop_tx(wl.momentum, wl.centered))
    return jit_donated_step(tx, _device(wl.params), _device(wl.grads))


def jrmsprop_eager(wl: Workload, peers: Peers) -> Step:
    tx = jrmsprop_tx(wl.momentum, wl.centered)
    return eager_update_step(tx, _device(wl.params), _device(wl.grads))


def jrmsprop_apply_gradients(wl: Workload, peers: Peers) -> Step:
    import jax.numpy as jnp

    import jrmsprop

    opt = jrmsprop.RMSprop(
        learning_rate=LEARNING_RATE,
        rho=RHO,
        momentum=wl.momentum,
        epsilon=EPSILON,
        centered=wl.centered,
    )
    variables = [jrmsprop.Variable(p, name=f"v{i}") for i, p in enumerate(wl.params)]
    if wl.kind == "embedding":
        assert wl.values is not None and wl.indices is not None
        grads = [
            jrmsprop.IndexedSlices(jnp.array(wl.values), jnp.array(wl.indices), wl.leaf_shapes[0])
        ]
    else:
        grads = _device(wl.grads)
    pairs = list(zip(grads, variables, strict=True))

    def run() -> Any:
        opt.apply_gradients(pairs)
        return [v.value for v in variables]

    return run


def jrmsprop_sparse_jit(wl: Workload, peers: Peers) -> Step:
    import jax.numpy as jnp

    import jrmsprop

    assert wl.values is not None and wl.indices is not None
    shape = wl.leaf_shapes[0]
    return jit_donated_step(
        jrmsprop_tx(wl.momentum, wl.centered),
        jnp.array(wl.params[0]),
        jnp.array(wl.values),
        jnp.array(wl.indices),
        grad_fn=lambda values, indices: jrmsprop.IndexedSlices(values, indices, shape),
        apply=jrmsprop.apply_updates,
    )


def jrmsprop_dense_jit(wl: Workload, peers: Peers) -> Step:
    import jrmsprop

    tx = jrmsprop_tx(wl.momentum, wl.centered)
    return jit_donated_step(tx, _device(wl.params), _device(wl.grads), apply=jrmsprop.apply_updates)


def optax_jit(wl: Workload, peers: Peers) -> Step:
    peers.get("optax")
    return jit_donated_step(
        optax_tx(wl.momentum, wl.centered), _device(wl.params), _device(wl.grads)
    )


def optax_eager(wl: Workload, peers: Peers) -> Step:
    peers.get("optax")
    tx = optax_tx(wl.momentum, wl.centered)
    return eager_update_step(tx, _device(wl.params), _device(wl.grads))


def keras3_apply(wl: Workload, peers: Peers) -> Step:
    keras = peers.get("keras")
    opt = keras.optimizers.RMSprop(
        learning_rate=LEARNING_RATE,
        rho=RHO,
        momentum=wl.momentum,
        epsilon=EPSILON,
        centered=wl.centered,
    )
    variables = [keras.Variable(p) for p in wl.params]
    opt.build(variables)
    grads = _device(wl.grads)

    def run() -> Any:
        opt.apply(grads, variables)
        return [v.value for v in variables]

    return run


def torch_foreach(wl: Workload, peers: Peers) -> Step:
    torch = peers.get("torch")
    params = [torch.from_numpy(p.copy()).requires_grad_() for p in wl.params]
    for p, g in zip(params, wl.grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    opt = torch.optim.RMSprop(
        params,
        lr=LEARNING_RATE,
        alpha=RHO,
        eps=EPSILON,
        momentum=wl.momentum,
        centered=wl.centered,
        foreach=True,
    )
    return opt.step


def _tf_setup(wl: Workload, peers: Peers) -> tuple[Any, Any, list[Any], list[Any]]:
    tf, tf_keras = peers.get("tf_keras")
    opt = tf_keras.optimizers.legacy.RMSprop(
        learning_rate=LEARNING_RATE,
        rho=RHO,
        momentum=wl.momentum,
        epsilon=EPSILON,
        centered=wl.centered,
    )
    variables = [tf.Variable(p) for p in wl.params]
    if wl.kind == "embedding":
        grads = [
            tf.IndexedSlices(
                tf.constant(wl.values),
                tf.constant(wl.indices),
                tf.constant(wl.leaf_shapes[0], dtype=tf.int64),
            )
        ]
    else:
        grads = [tf.constant(g) for g in wl.grads]
    # Creating the slots up front halves the tf.function trace time on many variables.
    create = getattr(opt, "_create_all_weights", None)
    if create is not None:
        create(variables)
    return tf, opt, variables, grads


def tf_keras_eager(wl: Workload, peers: Peers) -> Step:
    _, opt, variables, grads = _tf_setup(wl, peers)
    return lambda: opt.apply_gradients(zip(grads, variables, strict=True))


def tf_keras_function(wl: Workload, peers: Peers) -> Step:
    if len(wl.leaf_shapes) > 1024 and not peers.slow:
        raise Skip(
            "tracing a tf.function over >1024 variables takes minutes (35 s at 1024 measured); "
            "--slow runs it"
        )
    tf, opt, variables, grads = _tf_setup(wl, peers)

    @tf.function
    def step() -> None:  # apply_gradients may return an Operation, which tf.function refuses
        opt.apply_gradients(zip(grads, variables, strict=True))

    return step


# --------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One row: ``make(workload, peers)`` builds the step.

    ``group``: the JAX modes are timed in shuffled rounds with the others of their group
    ("compiled", "sparse" or "eager"); ``None``: timed alone (the other frameworks).
    ``shapes``: the workload shapes it runs on (empty: all of its table's).
    """

    row: str
    make: Callable[[Workload, Peers], Step]
    group: str | None
    shapes: tuple[str, ...] = ()

    @property
    def sync(self) -> Callable[[Any], None]:
        return block if self.group is not None or self.row.startswith("keras3/") else no_sync


_DENSE16M = ("dense16m_1leaf", "dense16m_512leaves")
_MULTI_LEAF = ("dense16m_512leaves", "small4096x256")

DENSE_MODES: tuple[Mode, ...] = (
    Mode("jrmsprop/jit_donated", jrmsprop_jit, "compiled"),
    Mode("jrmsprop/jit_flat", jrmsprop_jit_flat, "compiled"),
    Mode("jrmsprop/jit_fused", jrmsprop_jit_fused, "compiled", _DENSE16M),
    Mode("jrmsprop/jit_xla", jrmsprop_jit_xla, "compiled", _DENSE16M),
    Mode("jrmsprop/jit_packed", jrmsprop_jit_packed, "compiled", _MULTI_LEAF),
    Mode("jrmsprop/jit_packed_params", jrmsprop_jit_packed_params, "compiled", _MULTI_LEAF),
    Mode(
        "jrmsprop/jit_packed_fused", jrmsprop_jit_packed_fused, "compiled", ("dense16m_512leaves",)
    ),
    Mode("jrmsprop/eager_update", jrmsprop_eager, "eager"),
    Mode("jrmsprop/apply_gradients", jrmsprop_apply_gradients, "compiled"),
    Mode("optax/jit_donated", optax_jit, "compiled"),
    Mode("optax/eager_update", optax_eager, "eager"),
    Mode("keras3/apply", keras3_apply, None),
    Mode("torch/foreach", torch_foreach, None),
    Mode("tf_keras/eager", tf_keras_eager, None),
    Mode("tf_keras/tf_function", tf_keras_function, None),
)

EMBEDDING_MODES: tuple[Mode, ...] = (
    Mode("jrmsprop/sparse_jit", jrmsprop_sparse_jit, "sparse"),
    Mode("jrmsprop/dense_jit", jrmsprop_dense_jit, "compiled"),
    Mode("jrmsprop/apply_gradients", jrmsprop_apply_gradients, "sparse"),
    Mode("optax/dense_jit", optax_jit, "compiled"),
    Mode("tf_keras/eager", tf_keras_eager, None),
    Mode("tf_keras/tf_function", tf_keras_function, None),
)

#: The peer a row's prefix needs (for ``--peers``); jrmsprop's rows need none.
ROW_PEER = {"optax": "optax", "keras3": "keras", "torch": "torch", "tf_keras": "tf_keras"}


def modes_for(wl: Workload) -> tuple[Mode, ...]:
    """The rows run on ``wl``, in report order."""
    table = EMBEDDING_MODES if wl.kind == "embedding" else DENSE_MODES
    return tuple(m for m in table if not m.shapes or wl.shape.name in m.shapes)
