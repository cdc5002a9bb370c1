"""jrmsprop's benchmark: jrmsprop against optax, torch and tf_keras, in one process and one run.

    python benchmarks/run.py           # full run -> benchmarks/results/latest.{json,txt}
    python benchmarks/run.py --quick   # every workload at toy size: checks that it runs, no grades
    python benchmarks/run.py --only dense16m_512leaves,memory   # a subset -> out/bench.{json,txt}

Per workload (:data:`SHAPES` x variants) it prints the median step time of every mode (who runs
the step, and how: :data:`DENSE_MODES`, :data:`EMBEDDING_MODES`), the first call (compilation
included), the ratio to a memory-bandwidth limit measured in the same run and XLA's own count of
the bytes a compiled step moves; then the peak memory of a step (fresh subprocesses) and a
PASS/MISS/SKIP verdict per target (:data:`TARGETS`). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jrmsprop  # noqa: E402

SCHEMA = "jrmsprop-bench/3"
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"  # the full run's report
SCRATCH = ROOT / "out" / "bench.json"  # the report of a --quick or --only run
Step = Callable[[], Any]
Log = Callable[[str], None]

# ---- Workloads: parameter layouts x variants, inputs drawn once and shared by every mode ----

LEARNING_RATE, RHO, EPSILON, MOMENTUM = 1e-3, 0.9, 1e-7, 0.9
#: variant -> (momentum, centered)
VARIANTS = {"plain": (0.0, False), "momentum": (MOMENTUM, False), "centered": (0.0, True),
            "centered_momentum": (MOMENTUM, True)}  # fmt: skip
#: float32 bytes a step must move per parameter: read p, g, rms (+mom, +mg); write p, rms (+...)
BYTES_PER_PARAM = {"plain": 20, "momentum": 28, "centered": 28, "centered_momentum": 36}


@dataclass(frozen=True)
class Shape:
    """A parameter layout: leaf shapes at full and ``--quick`` size, the variants run on it.
    ``recompile``: the modes a compile-time target compares make a second first call (the
    faster counts); ``rows``: the embedding rows a step touches (full, quick)."""

    name: str
    kind: str  # "dense" or "embedding"
    full: tuple[tuple[int, ...], ...]
    quick: tuple[tuple[int, ...], ...]
    variants: tuple[str, ...]
    description: str
    recompile: bool = False
    rows: tuple[int, int] = (0, 0)


SHAPES: tuple[Shape, ...] = (
    Shape("dense16m_1leaf", "dense", ((4096, 4096),), ((256, 256),), tuple(VARIANTS),
          "16M float32 parameters as one leaf"),
    Shape("dense16m_512leaves", "dense", ((128, 256),) * 512, ((32, 64),) * 32, tuple(VARIANTS),
          "16M float32 parameters as 512 leaves of 32768", recompile=True),
    # one variant, one first call per mode: XLA:CPU takes 15-50 s to compile a 4096-leaf step
    Shape("small4096x256", "dense", ((256,),) * 4096, ((256,),) * 64, ("plain",),
          "4096 leaves of 256 float32 parameters (per-leaf overhead)"),
    Shape("embedding1m", "embedding", ((1_000_000, 64),), ((16384, 16),), ("plain", "momentum"),
          "1M x 64 embedding table, 1024 random rows per step", rows=(1024, 64)),
)  # fmt: skip


@dataclass
class Workload:
    """One (shape, variant) and its inputs (standard normal float32). An embedding step's
    gradient is ``values`` at rows ``indices`` (duplicates allowed; ``grads``: summed, dense)."""

    shape: Shape
    variant: str
    leaves: tuple[tuple[int, ...], ...]
    rows: int = 0
    params: list[np.ndarray] = field(default_factory=list)
    grads: list[np.ndarray] = field(default_factory=list)
    indices: Any = None
    values: Any = None

    name = property(lambda self: f"{self.shape.name}/{self.variant}")
    kind = property(lambda self: self.shape.kind)
    n_params = property(lambda self: int(sum(math.prod(s) for s in self.leaves)))
    momentum = property(lambda self: VARIANTS[self.variant][0])
    centered = property(lambda self: VARIANTS[self.variant][1])

    def make_inputs(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = [rng.standard_normal(s, dtype=np.float32) for s in self.leaves]
        if self.kind == "dense":
            self.grads = [rng.standard_normal(s, dtype=np.float32) for s in self.leaves]
            return
        num_rows, dim = self.leaves[0]
        self.indices = rng.integers(0, num_rows, size=self.rows, dtype=np.int32)
        self.values = rng.standard_normal((self.rows, dim), dtype=np.float32)
        self.grads = [np.zeros((num_rows, dim), np.float32)]
        np.add.at(self.grads[0], self.indices, self.values)

    def free_inputs(self) -> None:
        self.params, self.grads, self.indices, self.values = [], [], None, None


def build_workloads(quick: bool, only: Sequence[str] = ()) -> list[Workload]:
    """The workloads whose name contains one of ``only`` (empty: all)."""
    out = []
    for shape in SHAPES:
        for variant in shape.variants:
            leaves, rows = (shape.quick, shape.rows[1]) if quick else (shape.full, shape.rows[0])
            wl = Workload(shape, variant, leaves, rows)
            if not only or any(sel in wl.name for sel in only):
                out.append(wl)
    return out


# ---- Peers, imported lazily, each optional ----

PEERS = ("optax", "torch", "tf_keras")


class Skip(Exception):
    """A mode that cannot run here (with the reason)."""


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _import_peer(key: str) -> Any:
    if key == "torch":
        import torch

        torch.set_num_threads(cpu_count())
        return torch
    if key == "tf_keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        import tf_keras

        tf.get_logger().setLevel("ERROR")
        return tf, tf_keras
    return optax


class Peers:
    """The peers asked for (``--peers``), imported on first use; :class:`Skip` when absent."""

    def __init__(self, wanted: set[str]):
        self.wanted, self.notes, self.modules = wanted, {}, {}

    def get(self, key: str) -> Any:
        if key not in self.modules:
            self.modules[key] = None
            try:
                if key not in self.wanted:
                    raise Skip("not requested (--peers)")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.modules[key] = _import_peer(key)
            except Exception as e:  # noqa: BLE001 - any import failure means "absent"
                self.notes[key] = _reason(e, "not importable")
        if self.modules[key] is None:
            raise Skip(self.notes[key])
        return self.modules[key]


def _reason(e: BaseException, what: str = "error") -> str:
    return str(e) if isinstance(e, Skip) else f"{what}: {type(e).__name__}: {e}"


# ---- The steps: a mode builds a zero-argument step, a closure over its own state ----


def jrmsprop_tx(momentum: float, centered: bool) -> Any:
    return jrmsprop.rmsprop(
        LEARNING_RATE, rho=RHO, momentum=momentum, epsilon=EPSILON, centered=centered
    )


def optax_tx(momentum: float, centered: bool) -> Any:
    """``optax.rmsprop`` with Keras 2's rule, as jrmsprop's: ε outside the root without
    momentum, inside with."""
    return optax.rmsprop(LEARNING_RATE, decay=RHO, eps=EPSILON, eps_in_sqrt=momentum > 0,
                         centered=centered, momentum=momentum or None)  # fmt: skip


def update_and_apply(tx: Any, grads: Any, state: Any, params: Any, fused: bool) -> Any:
    """``jrmsprop.update_and_apply``: the one place the benchmark names it."""
    return jrmsprop.update_and_apply(tx, grads, state, params, fused=fused)


def _device(arrays: list[np.ndarray]) -> list[Any]:
    """The arrays on the device before any first call is timed."""
    return jax.block_until_ready([jnp.array(a) for a in arrays])


def _inputs(wl: Workload, layout: str = "tree") -> tuple[Any, Any]:
    """The parameters and gradients on the device: as a tree, as one flat leaf, or packed
    (``jrmsprop.pack``: one buffer per dtype crosses the jit)."""
    params, grads = _device(wl.params), _device(wl.grads)
    if layout == "flat":
        return tuple(jnp.concatenate([a.ravel() for a in x]) for x in (params, grads))
    if layout == "packed":
        params = jrmsprop.pack(params)
        return params, jrmsprop.pack(grads, like=params)
    return params, grads


def jit_step(update: Callable[..., Any], params: Any, state: Any, *args: Any) -> Step:
    """``params, state = update(params, state, *args)`` in a ``jax.jit`` with params and state
    donated. The step has ``lower()`` (for XLA's cost analysis) and ``n_leaves``."""
    step = jax.jit(update, donate_argnums=(0, 1))
    box = jax.block_until_ready([params, state])

    def run() -> Any:
        box[0], box[1] = step(box[0], box[1], *args)
        return box

    run.lower = lambda: step.lower(box[0], box[1], *args)  # type: ignore[attr-defined]
    run.n_leaves = len(jax.tree.leaves(params))  # type: ignore[attr-defined]
    return run


def tx_step(tx: Any, params: Any, *grads: Any, grad_fn: Any = None, apply: Any = None) -> Step:
    """The user's step, ``tx.update`` then ``apply`` (default ``optax.apply_updates``), donated;
    ``grad_fn(*grads)`` builds the gradient inside the jit (default: ``grads[0]``)."""
    make_grad, apply = grad_fn or (lambda g: g), apply or optax.apply_updates

    def update(p: Any, s: Any, *g: Any) -> Any:
        updates, s = tx.update(make_grad(*g), s, p)
        return apply(p, updates), s

    return jit_step(update, params, tx.init(params), *grads)


def jrmsprop_jit(wl: Workload, peers: Peers, layout: str = "tree") -> Step:
    return tx_step(jrmsprop_tx(wl.momentum, wl.centered), *_inputs(wl, layout))


def jrmsprop_update_and_apply(wl: Workload, peers: Peers, fused: bool, layout: str = "tree"):
    """``update_and_apply`` in the user's donated jit: the fused one-pass CPU kernel, or with
    ``fused=False`` the XLA path only; ``layout="packed"``: on packed parameters."""
    from jrmsprop._src import cpu_kernel

    if fused and not cpu_kernel.available():
        raise Skip(f"the fused CPU kernel is not available ({cpu_kernel.unavailable_reason()})")
    tx, (params, grads) = jrmsprop_tx(wl.momentum, wl.centered), _inputs(wl, layout)
    step = functools.partial(update_and_apply, tx, fused=fused)
    return jit_step(lambda p, s, g: step(g, s, p), params, tx.init(params), grads)


def eager_update(wl: Workload, peers: Peers, make_tx: Callable[..., Any] = jrmsprop_tx) -> Step:
    """``tx.update`` called eagerly, the state carried on."""
    if make_tx is optax_tx:
        peers.get("optax")
    tx, (params, grads) = make_tx(wl.momentum, wl.centered), _inputs(wl)
    box = jax.block_until_ready([tx.init(params)])

    def run() -> Any:
        updates, box[0] = tx.update(grads, box[0], params)
        return updates, box[0]

    return run


def jrmsprop_apply_gradients(wl: Workload, peers: Peers) -> Step:
    opt = jrmsprop.RMSprop(learning_rate=LEARNING_RATE, rho=RHO, momentum=wl.momentum,
                           epsilon=EPSILON, centered=wl.centered)  # fmt: skip
    variables = [jrmsprop.Variable(p, name=f"v{i}") for i, p in enumerate(wl.params)]
    grads = _device(wl.grads)
    if wl.kind == "embedding":
        values, indices = jnp.array(wl.values), jnp.array(wl.indices)
        grads = [jrmsprop.IndexedSlices(values, indices, wl.leaves[0])]
    pairs = list(zip(grads, variables, strict=True))

    def run() -> Any:
        opt.apply_gradients(pairs)
        return [v.value for v in variables]

    return run


def jrmsprop_sparse_jit(wl: Workload, peers: Peers) -> Step:
    tx, table, shape = jrmsprop_tx(wl.momentum, wl.centered), jnp.array(wl.params[0]), wl.leaves[0]

    def grad_fn(values, rows):
        return jrmsprop.IndexedSlices(values, rows, shape)

    return tx_step(tx, table, jnp.array(wl.values), jnp.array(wl.indices), grad_fn=grad_fn)


def dense_jit(wl: Workload, peers: Peers, make_tx: Callable[..., Any] = jrmsprop_tx) -> Step:
    """The user's step on a dense gradient, by jrmsprop or optax (``make_tx=optax_tx``)."""
    if make_tx is optax_tx:
        peers.get("optax")
    tx = make_tx(wl.momentum, wl.centered)
    return tx_step(tx, *_inputs(wl))


def torch_foreach(wl: Workload, peers: Peers) -> Step:
    torch = peers.get("torch")
    params = [torch.from_numpy(p.copy()).requires_grad_() for p in wl.params]
    for p, g in zip(params, wl.grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    opt = torch.optim.RMSprop(params, lr=LEARNING_RATE, alpha=RHO, eps=EPSILON,
                              momentum=wl.momentum, centered=wl.centered, foreach=True)  # fmt: skip
    return opt.step


def tf_keras_function(wl: Workload, peers: Peers) -> Step:
    """``tf_keras.optimizers.legacy.RMSprop.apply_gradients`` in a ``tf.function``."""
    tf, tf_keras = peers.get("tf_keras")
    opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=LEARNING_RATE, rho=RHO,
                                             momentum=wl.momentum, epsilon=EPSILON,
                                             centered=wl.centered)  # fmt: skip
    variables = [tf.Variable(p) for p in wl.params]
    if wl.kind == "embedding":
        dense_shape = tf.constant(wl.leaves[0], dtype=tf.int64)
        grads = [tf.IndexedSlices(tf.constant(wl.values), tf.constant(wl.indices), dense_shape)]
    else:
        grads = [tf.constant(g) for g in wl.grads]
    opt._create_all_weights(variables)  # slots up front: halves the trace on many variables

    @tf.function
    def step() -> None:  # apply_gradients may return an Operation, which tf.function refuses
        opt.apply_gradients(zip(grads, variables, strict=True))

    return step


@dataclass(frozen=True)
class Mode:
    """A row of a workload's table. ``group``: JAX modes are timed in shuffled rounds with the
    others of their group ("compiled", "sparse", "eager"); ``None`` (peers): alone.
    ``shapes``: where it runs (empty: everywhere)."""

    row: str
    make: Callable[[Workload, Peers], Step]
    group: str | None
    shapes: tuple[str, ...] = ()


_ONE_LEAF, _MANY = ("dense16m_1leaf",), ("dense16m_512leaves",)
_DENSE16M, _MULTI_LEAF = ("dense16m_1leaf", "dense16m_512leaves"), (*_MANY, "small4096x256")
_P = functools.partial

DENSE_MODES: tuple[Mode, ...] = (
    Mode("jrmsprop/jit_donated", jrmsprop_jit, "compiled"),
    Mode("jrmsprop/jit_flat", _P(jrmsprop_jit, layout="flat"), "compiled", _MULTI_LEAF),
    Mode("jrmsprop/jit_fused", _P(jrmsprop_update_and_apply, fused=True), "compiled", _DENSE16M),
    Mode("jrmsprop/jit_xla", _P(jrmsprop_update_and_apply, fused=False), "compiled", _ONE_LEAF),
    Mode("jrmsprop/jit_packed_params", _P(jrmsprop_jit, layout="packed"), "compiled",
         _MULTI_LEAF),
    Mode("jrmsprop/jit_packed_fused", _P(jrmsprop_update_and_apply, fused=True, layout="packed"),
         "compiled", _MANY),
    Mode("jrmsprop/eager_update", eager_update, "eager", _ONE_LEAF),
    Mode("jrmsprop/apply_gradients", jrmsprop_apply_gradients, "compiled"),
    Mode("optax/jit_donated", _P(dense_jit, make_tx=optax_tx), "compiled"),
    Mode("optax/eager_update", _P(eager_update, make_tx=optax_tx), "eager", _ONE_LEAF),
    Mode("torch/foreach", torch_foreach, None),
    # (tracing a tf.function over 4096 variables takes minutes)
    Mode("tf_keras/tf_function", tf_keras_function, None, _DENSE16M),
)  # fmt: skip
EMBEDDING_MODES: tuple[Mode, ...] = (
    Mode("jrmsprop/sparse_jit", jrmsprop_sparse_jit, "sparse"),
    Mode("jrmsprop/dense_jit", dense_jit, "compiled"),
    Mode("jrmsprop/apply_gradients", jrmsprop_apply_gradients, "sparse"),
    Mode("optax/dense_jit", _P(dense_jit, make_tx=optax_tx), "compiled"),
    Mode("tf_keras/tf_function", tf_keras_function, None),
)


def modes_for(wl: Workload) -> tuple[Mode, ...]:
    """The rows run on ``wl``, in report order."""
    table = EMBEDDING_MODES if wl.kind == "embedding" else DENSE_MODES
    return tuple(m for m in table if not m.shapes or wl.shape.name in m.shapes)


# ---- Timing, bandwidth, XLA's cost analysis ----

#: Pause before every timed eager step: JAX frees buffers asynchronously, and without a pause
#: the munmaps of the previous eager step land in the next timed one (+20-35% on a 16M step).
#: Not for compiled steps: after a pause XLA's threads must wake up (up to 3x a short step).
SETTLE_S = 0.02


def block(x: Any) -> None:
    """Waits for JAX results (torch's and TF's CPU steps are synchronous already)."""
    jax.block_until_ready(x)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def first_order(rows: list[str], seed: int) -> list[str]:
    """The order in which :func:`time_steps` makes the first calls for ``seed``."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    return order


def time_steps(
    steps: dict[str, Step], repeats: int, budget_s: float, settle_s: float = 0.0, seed: int = 0
) -> tuple[dict[str, dict[str, Any]], dict[str, BaseException]]:
    """Times steps in rounds, each once per round in a shuffled order, so that changing load
    hits them alike. First each step's first call (compilation included) and one warm-up call,
    in an order shuffled by ``seed``; rounds stop at ``repeats``, or once ``budget_s`` per step
    is spent and 3 rounds are done. ``settle_s``: a pause before every timed step. A step that
    raises is dropped and returned among the errors."""
    firsts: dict[str, float] = {}
    errors: dict[str, BaseException] = {}
    with gc_paused():
        for row in first_order(list(steps), seed):
            try:
                t0 = time.perf_counter()
                block(steps[row]())
                firsts[row] = time.perf_counter() - t0
                block(steps[row]())
            except Exception as e:  # noqa: BLE001 - reported as this mode's error
                errors[row] = e
        order = [r for r in steps if r in firsts]
        samples: dict[str, list[float]] = {r: [] for r in order}
        start = time.perf_counter()
        for i in range(repeats):
            random.Random(i).shuffle(order)  # no step always follows the same other step
            for row in order:
                if settle_s:
                    time.sleep(settle_s)
                t = time.perf_counter()
                block(steps[row]())
                samples[row].append(time.perf_counter() - t)
            if time.perf_counter() - start > budget_s * max(len(order), 1) and i + 1 >= 3:
                break
    return {r: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                "n": len(s), "first_call_s": firsts[r], "first_calls_s": [firsts[r]],
                "samples_s": s} for r, s in samples.items()}, errors  # fmt: skip


def first_calls_again(builders: dict[str, Callable[[], Step]], results: dict[str, Any]) -> None:
    """One more first call of each step in ``builders`` (in that order), built afresh after
    ``jax.clear_caches()``; ``first_call_s`` becomes the faster. A compilation that takes
    seconds scatters far more than a step, so compile-time targets compare the best of two,
    taken in opposite orders. A failure keeps the first call already measured."""
    jax.clear_caches()
    with gc_paused():
        for row, build in builders.items():
            try:
                step = build()
                t0 = time.perf_counter()
                block(step())
            except Exception:  # noqa: BLE001 - see the docstring
                continue
            r = results[row]
            r["first_calls_s"].append(time.perf_counter() - t0)
            r["first_call_s"] = min(r["first_calls_s"])
            del step


def bandwidth_probe(n: int) -> dict[str, Any]:
    """Memory bandwidth of a donated ``y = a·x + y`` on ``n`` float32: 12 bytes per element,
    written in place (no fresh pages), the median of 10 steps."""
    x, y, a = jnp.full((n,), 1.0, jnp.float32), jnp.full((n,), 2.0, jnp.float32), jnp.float32(0.5)
    axpy = jax.jit(lambda a, x, y: a * x + y, donate_argnums=2)
    for _ in range(2):
        y = axpy(a, x, y).block_until_ready()
    samples = []
    for _ in range(10):
        t = time.perf_counter()
        y = axpy(a, x, y).block_until_ready()
        samples.append(time.perf_counter() - t)
    med = statistics.median(samples)
    return {"elements": n, "bytes_per_step": 12 * n, "median_s": med, "gbps": 12 * n / med / 1e9}


def xla_cost(compiled: Any) -> dict[str, float]:
    """XLA's ``bytes accessed`` (what the program's top-level ops read and write: the DRAM
    traffic for arrays far larger than the caches) and ``temp_bytes`` (scratch memory besides
    arguments and results) of a ``jax.stages.Compiled``. An in-place scatter counts as its
    whole operand, so of a sparse step only ``temp_bytes`` tells (whether it copies its table)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per partition
    out = {}
    if cost and "bytes accessed" in cost:
        out["bytes_accessed"] = float(cost["bytes accessed"])
    if (memory := compiled.memory_analysis()) is not None:
        out["temp_bytes"] = float(memory.temp_size_in_bytes)
    return out


# ---- Running a workload ----


def _build(mode: Mode, wl: Workload, peers: Peers) -> Step:
    peer = mode.row.split("/")[0]
    if peer in PEERS and peer not in peers.wanted:
        raise Skip("not requested (--peers)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mode.make(wl, peers)


def run_workload(wl: Workload, peers: Peers, bandwidth_bps: float, args: Any, log: Log) -> dict:
    """Runs every mode on one workload; returns its record."""
    wl.make_inputs()
    bpp = BYTES_PER_PARAM[wl.variant]
    record: dict[str, Any] = {
        "name": wl.name, "shape": wl.shape.name, "kind": wl.kind, "variant": wl.variant,
        "description": wl.shape.description, "n_params": wl.n_params,
        "n_leaves": len(wl.leaves), "leaf_shape": list(wl.leaves[0]), "bytes_per_param": bpp,
        "bytes_moved": bpp * wl.n_params, "limit_s": bpp * wl.n_params / bandwidth_bps,
    }  # fmt: skip
    if wl.kind == "embedding":  # momentum: lazy rows; without, rms (and mg) decay on every row
        sparse_bpp = 0 if wl.momentum else 8 * (2 if wl.centered else 1)
        touched = bpp * wl.rows * wl.leaves[0][1]
        record.update(rows_per_step=wl.rows, sparse_bytes_per_param=sparse_bpp,
                      sparse_bytes_moved=sparse_bpp * wl.n_params + touched)  # fmt: skip
    modes, results = modes_for(wl), {}
    recompiled = {m for t in TARGETS for r in (t.num, t.den) if r and r.field == "first_call_s"
                  for m in r.modes} if wl.shape.recompile else set()  # fmt: skip
    batches = [[m for m in modes if m.group == g] for g in ("compiled", "sparse", "eager")]
    for batch in batches + [[m] for m in modes if m.group is None]:  # peers one at a time
        steps, by_row = {}, {m.row: m for m in batch}
        for mode in batch:
            try:
                steps[mode.row] = _build(mode, wl, peers)
            except Exception as e:  # noqa: BLE001 - a failing mode must not end the run
                results[mode.row] = {"skipped": _reason(e)}
        group = batch[0].group if batch else None
        seed = zlib.crc32(f"{wl.name}/{group}".encode())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            repeats = args.repeats if group in ("eager", None) else 3 * args.repeats
            settle = SETTLE_S if group == "eager" else 0.0
            timings, errors = time_steps(steps, repeats, args.budget, settle, seed)
            again = [r for r in first_order(list(steps), seed)[::-1] if r in recompiled]
            if again := [r for r in again if r in timings]:
                builders = {r: _P(_build, by_row[r], wl, peers) for r in again}
                first_calls_again(builders, timings)
        results.update({row: {"skipped": _reason(e)} for row, e in errors.items()})
        for row, r in timings.items():
            results[row] = r
            if getattr(steps[row], "n_leaves", 0) == 1:  # cheap to compile again
                cost = xla_cost(steps[row].lower().compile())
                if "bytes_accessed" in cost and group != "sparse":
                    r["xla_bytes_per_param"] = cost["bytes_accessed"] / wl.n_params
                if "temp_bytes" in cost:
                    r["xla_temp_bytes"] = cost["temp_bytes"]
        for row in by_row:
            r = results[row]
            time_s = (
                f"{r.get('median_s', 0) * 1e3:10.3f} ms (first {r.get('first_call_s', 0):.2f} s)"
            )
            log(f"  {wl.name:<34} {row:<26} {r.get('skipped') or time_s}")
        steps.clear()
        gc.collect()
    record["results"] = {m.row: results[m.row] for m in modes}
    wl.free_inputs()
    gc.collect()
    return record


# ---- Peak memory of a step, each case in a fresh interpreter ----

MEMORY_CASES = (
    ("jrmsprop_jit_donated", "plain"),
    ("jrmsprop_jit_donated", "centered_momentum"),
    ("jrmsprop_apply_gradients", "plain"),
    ("jrmsprop_apply_gradients", "centered_momentum"),
    ("optax_jit_donated", "plain"),
    ("jrmsprop_jit_not_donated", "plain"),  # the method check: must show params + state extra
)


def _vm() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmHWM", "VmRSS")))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: the memory one warm step of ``spec['case']`` needs beyond what is
    resident (params, grads, state). After two steps and a steady RSS (JAX frees buffers
    asynchronously), the kernel's high-water mark is reset (``/proc/self/clear_refs``) before
    the RSS is read; one more step; ``VmHWM - VmRSS`` is its extra. Arrays of 32 MiB and more
    are mmap-ed, so every transient buffer faults in fresh pages (and JAX's CPU backend has no
    ``memory_stats()``)."""
    n, case, (momentum, centered) = spec["n"], spec["case"], VARIANTS[spec["variant"]]
    rng, shape = np.random.default_rng(0), (math.isqrt(n), n // math.isqrt(n))
    params = jnp.array(rng.standard_normal(shape, dtype=np.float32))
    grads = jnp.array(rng.standard_normal(shape, dtype=np.float32))
    if case == "jrmsprop_apply_gradients":
        opt = jrmsprop.RMSprop(learning_rate=LEARNING_RATE, rho=RHO, momentum=momentum,
                               epsilon=EPSILON, centered=centered)  # fmt: skip
        var = jrmsprop.Variable(params)

        def run() -> None:
            opt.apply_gradients([(grads, var)])
            jax.block_until_ready(var.value)

        def state() -> Any:  # (read at the end: a reference kept across steps could matter)
            return [var.value, [w.value for w in opt.weights[1:]]]

    else:
        tx = (optax_tx if case.startswith("optax") else jrmsprop_tx)(momentum, centered)

        def train_step(p: Any, s: Any, g: Any) -> Any:
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        step = jax.jit(train_step, donate_argnums=() if "not_donated" in case else (0, 1))
        box = [params, tx.init(params)]

        def run() -> None:
            box[:] = jax.block_until_ready(step(box[0], box[1], grads))

        def state() -> Any:
            return box

    del params
    run()
    run()
    gc.collect()
    deadline, last, same = time.perf_counter() + 5.0, _vm()["VmRSS"], 1
    while same < 5 and time.perf_counter() < deadline:  # wait for a steady RSS
        time.sleep(0.01)
        rss = _vm()["VmRSS"]
        same, last = (same + 1 if rss == last else 1), rss
    try:  # reset first: a free before the baseline can only raise the extra
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    except OSError:
        return {**spec, "error": "cannot reset the high-water mark (/proc/self/clear_refs)"}
    before = _vm()
    run()
    extra = _vm()["VmHWM"] - before["VmRSS"]
    data = sum(x.nbytes for x in jax.tree.leaves(state())) + grads.nbytes
    return {**spec, "data_bytes": data, "extra_bytes": extra, "peak_ratio": (data + extra) / data}


def memory_specs(quick: bool) -> list[dict[str, Any]]:
    """The cases (``quick``: jrmsprop's donated step and the method check, at 8M parameters).
    Every array stays above glibc's largest mmap threshold (32 MiB): smaller ones may reuse pages
    a previous step freed."""
    quick_cases = (MEMORY_CASES[0], MEMORY_CASES[-1])
    return [{"case": c, "variant": v, "n": 1 << 23 if quick else 1 << 24}
            for c, v in MEMORY_CASES if not quick or (c, v) in quick_cases]  # fmt: skip


def run_memory(quick: bool, log: Log, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from benchmarks.run import memory_child\n"
            "print('@@JSON@@' + json.dumps(memory_child(json.loads(sys.argv[1]))))")  # fmt: skip
    results = []
    for spec in memory_specs(quick):
        try:
            proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)],
                                  capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
            payload = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@JSON@@")]
            if proc.returncode != 0 or not payload:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
            results.append(json.loads(payload[-1][len("@@JSON@@") :]))
        except (subprocess.TimeoutExpired, RuntimeError) as e:
            results.append({**spec, "error": str(e)})
        m = results[-1]
        log(
            f"  memory {m['case']:<28} {m['variant']:<18} "
            + (f"error {m['error']}" if "error" in m else f"peak/data {m['peak_ratio']:.3f}")
        )
    return results  # fmt: skip


# ---- Targets: one table of data, judged by one loop ----

NO_SLOWER, TOLERANCE = "no_slower", 0.05  # "no slower than": at most 1 + TOLERANCE


@dataclass(frozen=True)
class Ref:
    """A number of a record: its ``field`` (no ``modes``), or the smallest ``field`` among the
    results of ``modes``; ``get`` returns it and the mode it came from."""

    field: str
    modes: tuple[str, ...] = ()

    def get(self, record: dict[str, Any]) -> tuple[float | None, str]:
        results = record.get("results", {})
        values = [(record.get(self.field), "")] if not self.modes else [
            (results.get(m, {}).get(self.field), m) for m in self.modes]  # fmt: skip
        found = [(float(v), m) for v, m in values if isinstance(v, (int, float))]
        return min(found) if found else (None, "")


def median(*modes: str) -> Ref:
    return Ref("median_s", modes)


def first_call(*modes: str) -> Ref:
    return Ref("first_call_s", modes)


LIMIT = Ref("limit_s")


@dataclass(frozen=True)
class Target:
    """``num / den`` (``num`` without ``den``) ``op`` ``threshold``, on the records of ``kind``
    whose shape is in ``shapes`` and variant in ``variants`` (empty: all). ``note`` (filled in
    from the record's fields) is shown next to a result that is not a PASS."""

    id: str
    description: str
    num: Ref
    den: Ref | None
    op: str
    threshold: float | str
    kind: str = "dense"
    shapes: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    note: str = ""

    def applies(self, record: dict[str, Any]) -> bool:
        return (record["kind"] == self.kind and (not self.shapes or record["shape"] in self.shapes)
                and (not self.variants or record["variant"] in self.variants))  # fmt: skip


_JIT, _APPLY, _SPARSE = "jrmsprop/jit_donated", "jrmsprop/apply_gradients", "jrmsprop/sparse_jit"
_OPTAX, _FLAT, _TF = "optax/jit_donated", "jrmsprop/jit_flat", "tf_keras/tf_function"
_STREAMS = ("TF semantics: without momentum rms (and mg) decay on every row, so the sparse step "
            "streams the whole rms table; speed-up bounded by {bytes_per_param}/"
            "{sparse_bytes_per_param} bytes")  # fmt: skip

TARGETS: tuple[Target, ...] = (
    Target("jit_vs_limit", "jit+donated step / bandwidth limit", median(_JIT), LIMIT, "<=", 1.2,
           shapes=_DENSE16M),
    Target("jit_vs_optax", "jit+donated step / optax jit+donated", median(_JIT), median(_OPTAX),
           "<=", NO_SLOWER),
    Target("compile_vs_optax", "first call (compilation) / optax's first call", first_call(_JIT),
           first_call(_OPTAX), "<=", 1.0, shapes=_MULTI_LEAF),
    Target("leaves_vs_flat", "jit+donated step / the same parameters as one flat leaf",
           median(_JIT), median(_FLAT), "<=", 1.3, shapes=_MULTI_LEAF),
    Target("small_vs_torch", "jit+donated step / torch foreach", median(_JIT),
           median("torch/foreach"), "<=", NO_SLOWER, shapes=("small4096x256",)),
    Target("apply_vs_jit", "apply_gradients / jit+donated step", median(_APPLY), median(_JIT),
           "<=", 1.3),
    Target("apply_vs_torch", "apply_gradients / torch foreach", median(_APPLY),
           median("torch/foreach"), "<", 1.0),
    Target("apply_vs_tf_keras", "apply_gradients / tf_keras tf.function", median(_APPLY),
           median(_TF), "<", 1.0, shapes=_DENSE16M),
    Target("eager_vs_optax", "eager update / optax eager update", median("jrmsprop/eager_update"),
           median("optax/eager_update"), "<=", 0.3, shapes=_ONE_LEAF),
    Target("fused_vs_xla", "fused CPU kernel step / XLA step", median("jrmsprop/jit_fused"),
           median("jrmsprop/jit_xla"), "<", 1.0, shapes=_ONE_LEAF),
    Target("fused_vs_limit", "fused CPU kernel step / bandwidth limit",
           median("jrmsprop/jit_fused"), LIMIT, "<=", 1.2, shapes=_DENSE16M),
    Target("packed_params_vs_flat", "packed-parameter step / one flat leaf",
           median("jrmsprop/jit_packed_params"), median(_FLAT), "<=", 1.3, shapes=_MULTI_LEAF),
    Target("packed_params_compile_vs_optax", "packed-parameter first call / optax's first call",
           first_call("jrmsprop/jit_packed_params"), first_call(_OPTAX), "<=", 1.0,
           shapes=_MULTI_LEAF),
    Target("packed_fused_vs_limit", "fused CPU kernel on packed parameters / bandwidth limit",
           median("jrmsprop/jit_packed_fused"), LIMIT, "<=", 1.2, shapes=_MANY),
    Target("sparse_vs_dense", "dense jit step / sparse jit step (speed-up)",
           median("jrmsprop/dense_jit"), median(_SPARSE), ">=", 50.0, kind="embedding",
           variants=("momentum", "centered_momentum")),
    Target("sparse_vs_dense", "dense jit step / sparse jit step (speed-up)",
           median("jrmsprop/dense_jit"), median(_SPARSE), ">=", 50.0, kind="embedding",
           variants=("plain", "centered"), note=_STREAMS),
    Target("sparse_vs_tf", "sparse jit step / TF sparse apply (tf.function)", median(_SPARSE),
           median(_TF), "<", 1.0, kind="embedding"),
    Target("dense_vs_optax", "dense jit step / optax jit+donated", median("jrmsprop/dense_jit"),
           median("optax/dense_jit"), "<=", NO_SLOWER, kind="embedding"),
    Target("apply_vs_jit", "apply_gradients (sparse) / sparse jit step", median(_APPLY),
           median(_SPARSE), "<=", 1.3, kind="embedding"),
    Target("apply_vs_tf_keras", "apply_gradients (sparse) / TF sparse (tf.function)",
           median(_APPLY), median(_TF), "<", 1.0, kind="embedding"),
    # peak memory (the not-donated case is the method check, not a target)
    Target("memory", "peak / (params + grads + state)", Ref("peak_ratio"), None, "<=", 1.1,
           kind="memory", shapes=("jrmsprop_jit_donated", "jrmsprop_apply_gradients",
                                  "optax_jit_donated")),
)  # fmt: skip


def memory_records(memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memory results as records the targets apply to (shape = the case)."""
    return [{**m, "name": f"memory/{m['case']}/{m['variant']}", "kind": "memory",
             "shape": m["case"]} for m in memory]  # fmt: skip


def evaluate(records: list[dict[str, Any]], grade: bool = True, tolerance: float = TOLERANCE):
    """Every target on every record it applies to; ``grade=False`` (``--quick``): the values
    only, status ``None``. A missing value is a SKIP, never a PASS."""
    out = []
    for record in records:
        for t in (t for t in TARGETS if t.applies(record)):
            num, num_mode = t.num.get(record)
            den, den_mode = t.den.get(record) if t.den is not None else (1.0, "")
            value = None if num is None or den is None or den <= 0 else num / den
            threshold = 1.0 + tolerance if t.threshold == NO_SLOWER else float(t.threshold)
            notes = [t.note.format(**record)] if t.note else []
            if t.threshold == NO_SLOWER:
                notes.append(f"'no slower' with {tolerance:.0%} noise tolerance")
            notes += [record["error"]] if record.get("error") else []
            status = None
            if grade and (value is None or not math.isfinite(value)):
                status = "SKIP"
            elif grade:
                passed = {"<=": value <= threshold, "<": value < threshold,
                          ">=": value >= threshold}[t.op]  # fmt: skip
                status = "PASS" if passed else "MISS"
            out.append({"id": t.id, "workload": record["name"], "description": t.description,
                        "value": value, "op": t.op, "threshold": threshold, "status": status,
                        "note": "; ".join(notes)})  # fmt: skip
    return out


# ---- The run and its report ----


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    def version(dist: str) -> str | None:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
        return None

    def proc(path: str, prefix: str) -> str:
        with contextlib.suppress(OSError), open(path) as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(prefix)), "")
        return ""

    dists = ("jrmsprop", "jax", "jaxlib", "optax", "numpy", "torch", "tensorflow", "tf_keras")
    mem = proc("/proc/meminfo", "MemTotal")
    return {"cpu_model": proc("/proc/cpuinfo", "model name") or platform.processor(),
            "cores_available": cpu_count(), "loadavg_start": list(os.getloadavg()),
            "mem_total_bytes": int(mem.split()[0]) * 1024 if mem else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {d: version(d) for d in dists}, "jax_backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS")}  # fmt: skip


def run_benchmark(args: argparse.Namespace, log: Log = print) -> dict[str, Any]:
    """Runs everything ``args`` selects; returns the JSON-able report."""
    t_start, only, machine = time.perf_counter(), _split(args.only), machine_info()
    peers = Peers(set(PEERS) if args.peers == "all" else set(_split(args.peers)))
    report: dict[str, Any] = {
        "schema": SCHEMA, "command": " ".join(["python benchmarks/run.py", *args.argv]),
        "quick": args.quick, "repeats": args.repeats, "tolerance": TOLERANCE,
        "machine": machine, "bandwidth": [], "workloads": [], "memory": [], "notes": [],
        "settings": {"learning_rate": LEARNING_RATE, "rho": RHO, "epsilon": EPSILON,
                     "momentum": MOMENTUM, "dtype": "float32"},
    }  # fmt: skip
    if (load := machine["loadavg_start"][0]) > 0.5 * machine["cores_available"]:
        report["notes"].append(f"the machine was busy at the start (1-min load {load:.1f}): "
                               "timings are noisy")  # fmt: skip

    def probe(when: str) -> float:
        bw = {**bandwidth_probe((1 << 20) if args.quick else (1 << 26)), "when": when}
        report["bandwidth"].append(bw)
        log(f"bandwidth ({when}): {bw['gbps']:.1f} GB/s")
        return bw["gbps"]

    gbps = probe("start")
    for wl in build_workloads(args.quick, only):
        report["workloads"].append(run_workload(wl, peers, gbps * 1e9, args, log))
    if not only or "memory" in only:
        report["memory"] = run_memory(args.quick, log)
    probe("end")
    best = report["bandwidth_gbps"] = max(b["gbps"] for b in report["bandwidth"])
    for record in report["workloads"]:  # the limits use the best bandwidth (the strictest)
        record["limit_s"] = record["bytes_moved"] / (best * 1e9)
        if "sparse_bytes_moved" in record:
            record["sparse_limit_s"] = record["sparse_bytes_moved"] / (best * 1e9)
        for r in record["results"].values():
            if "median_s" in r:
                r["ratio_to_limit"] = r["median_s"] / record["limit_s"]
    machine["loadavg_end"] = list(os.getloadavg())
    report["notes"] += [f"peer {k}: {v}" for k, v in sorted(peers.notes.items())]
    records = report["workloads"] + memory_records(report["memory"])
    report["targets"] = evaluate(records, grade=not args.quick)
    if not args.quick:
        statuses = [t["status"] for t in report["targets"]]
        report["summary"] = {s: statuses.count(s) for s in ("PASS", "MISS", "SKIP")}
    report["wall_s"] = time.perf_counter() - t_start
    return report


def _x(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:.2g}"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    m, quick = report["machine"], report["quick"]
    lines = [
        f"jrmsprop bench  ({'quick' if quick else 'full'}, repeats={report['repeats']})",
        f"machine: {m['cpu_model']}, {m['cores_available']} cores, "
        f"{(m['mem_total_bytes'] or 0) / 2**30:.0f} GiB, load {m['loadavg_start']} -> "
        f"{m.get('loadavg_end')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v is not None),
        "bandwidth (donated axpy, 12 B/elem): "
        + ", ".join(f"{b['when']} {b['gbps']:.1f} GB/s" for b in report["bandwidth"])
        + f"; limit uses {report['bandwidth_gbps']:.1f} GB/s (the best)",
    ]
    for wl in report["workloads"]:
        sparse = wl.get("sparse_limit_s")
        lines += [
            "",
            f"== {wl['name']}: {wl['n_params']:,} params in {wl['n_leaves']} leaves, "
            f"{wl['bytes_per_param']} B/param, limit {wl['limit_s'] * 1e3:.3f} ms"
            + (f", sparse limit {sparse * 1e3:.3f} ms" if sparse is not None else ""),
        ]
        ref_mode = _JIT if wl["kind"] == "dense" else _SPARSE
        ref = wl["results"].get(ref_mode, {}).get("median_s")
        lines.append(
            f"   {'mode':<26} {'median ms':>10} {'x limit':>8} "
            f"{'x ' + ref_mode.split('/')[1]:>16} {'1st call s':>10} {'n':>3} "
            f"{'XLA B/param':>11} {'XLA temp MiB':>12}"
        )
        for mode, r in wl["results"].items():
            if "skipped" in r:
                lines.append(f"   {mode:<26} {'skip':>10}  ({r['skipped']})")
                continue
            med, bpp, temp = r["median_s"], r.get("xla_bytes_per_param"), r.get("xla_temp_bytes")
            lines.append(
                f"   {mode:<26} {med * 1e3:10.3f} {_x(med / wl['limit_s']):>8} "
                f"{_x(med / ref if ref else None):>16} {r['first_call_s']:>10.2f} {r['n']:>3} "
                f"{'' if bpp is None else f'{bpp:.1f}':>11} "
                f"{'' if temp is None else f'{temp / 2**20:.2f}':>12}".rstrip()
            )
    if report["memory"]:
        lines += [
            "",
            "== memory: peak RSS growth during one warm step, fresh subprocess each",
            f"   {'case':<28} {'variant':<18} {'data MiB':>9} {'extra MiB':>10} {'peak/data':>9}",
        ]
        for mm in report["memory"]:
            head = f"   {mm['case']:<28} {mm['variant']:<18}"
            lines.append(
                f"{head} error: {mm['error']}"
                if "error" in mm
                else f"{head} {mm['data_bytes'] / 2**20:>9.1f} "
                f"{mm['extra_bytes'] / 2**20:10.1f} {_x(mm['peak_ratio']):>9}"
            )
    width = max([24] + [len(t["id"]) for t in report["targets"]])
    lines += [
        "",
        "== targets" + (" (not graded: a quick run only checks that things run)" if quick else ""),
        f"   {'target':<{width}} {'workload':<48} {'value':>8} {'goal':>8}"
        + ("" if quick else "  status"),
    ]
    for t in report["targets"]:
        status, note = t["status"], t["note"]
        lines.append(
            f"   {t['id']:<{width}} {t['workload']:<48} {_x(t['value']):>8} "
            f"{t['op'] + ' ' + format(t['threshold'], 'g'):>8}"
            + (f"  {status}" if status else "")
            + (f"  ({note})" if status and status != "PASS" and note else "")
        )
    if not quick:
        counts = report["summary"]
        lines.append(f"   PASS {counts['PASS']}, MISS {counts['MISS']}, SKIP {counts['SKIP']}")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join([*lines, f"wall time {report['wall_s']:.0f} s"])  # fmt: skip


# ---- Command line ----


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why a file could not be written to ``path`` (None: it can), checked before a run that
    takes minutes: the folder, or the nearest existing one above it where the others would be
    made, must take a new file, really created and removed (``os.access`` cannot tell for root,
    ``/proc`` or read-only file systems)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return f"{path} is a directory"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    folder = base = os.path.dirname(path)
    while not os.path.exists(base):
        base = os.path.dirname(base)
    if not os.path.isdir(base):
        return f"{base} is not a directory"
    try:
        if base == folder:
            tempfile.NamedTemporaryFile(dir=folder, prefix=".jrmsprop-").close()
        else:
            os.rmdir(tempfile.mkdtemp(dir=base, prefix=".jrmsprop-"))
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    return None


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(f"{s.name}/{'|'.join(s.variants)}" for s in SHAPES)
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes: checks that it runs, no grades")
    p.add_argument("--only", default="", metavar="A,B", help=f"parts of names: {names}, memory")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="the report (and PATH.txt); '': none; default: "
        f"{RESULTS.relative_to(ROOT)}, with --quick or --only {SCRATCH.relative_to(ROOT)}",
    )
    p.add_argument("--repeats", type=int, default=7, help="timed steps per mode (compiled: x3)")
    p.add_argument("--budget", type=float, default=2.0, help="s per mode, once 3 steps are timed")
    p.add_argument("--peers", default="all", help=f"some of {','.join(PEERS)} (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/run.py [options]``: 0 unless the report cannot be written (a MISS is
    a result, not an error)."""
    parser, argv = build_parser(), list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv, only = argv, _split(args.only)
    names = [wl.name for wl in build_workloads(False)]
    unknown = sorted(set(_split(args.peers)) - set(PEERS)) if args.peers != "all" else []
    unmatched = [s for s in only if s != "memory" and not any(s in n for n in names)]
    for bad, message in (
        (args.repeats < 1, f"--repeats must be >= 1, got {args.repeats}"),
        (not 0 < args.budget < math.inf, f"--budget must be > 0 s and finite, got {args.budget}"),
        (unknown, f"--peers: unknown {unknown}; known: {', '.join(PEERS)}"),
        (not (args.json or ".json").endswith(".json"), f"--json {args.json}: not a .json name"),
        (unmatched, f"--only: {', '.join(map(repr, unmatched))} matches no workload; valid "
         f"names (or any part of one): {', '.join(names)}, memory"),
    ):  # fmt: skip
        if bad:
            parser.error(message)
    if args.json is None:
        args.json = str(SCRATCH if args.quick or only else RESULTS)
    if args.json and (why := unwritable_reason(args.json)):
        parser.error(f"--json {args.json}: {why}")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    report = run_benchmark(args, log)
    print(text := format_report(report))
    if args.json:
        path = Path(args.json)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1))
            path.with_suffix(".txt").write_text(text + "\n")
        except OSError as e:  # checked up front, but a disk can fill or a folder go
            print(f"run.py: could not write {path}: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path} and {path.with_suffix('.txt').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
