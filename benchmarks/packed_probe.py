"""Probe: what packed slots (``jrmsprop.packed``) buy on many small leaves.

``python benchmarks/packed_probe.py [--leaves 512 4096] [--size 256] [--repeats 5] [--steps 30]``

For ``n`` leaves of ``size`` float32 parameters, the user's jitted training step
(``update`` then ``optax.apply_updates``, params and state donated, gradients as inputs) is
built for:

* ``optax``: ``optax.rmsprop`` (Keras 2's ε outside the root);
* ``jrmsprop``: ``jrmsprop.rmsprop``, one slot buffer per leaf;
* ``packed``: ``jrmsprop.packed(jrmsprop.rmsprop(...))``, one slot buffer per dtype;
* ``flat``: ``jrmsprop.rmsprop`` on one leaf of ``n·size`` parameters (the user keeps the
  parameters flat with ``jax.flatten_util.ravel_pytree``: nothing is concatenated or split).

Compile time is ``jax.jit(step).lower(...).compile()`` (each repeat with a fresh transformation
and a fresh jit, so nothing is cached); step time is the median over ``steps`` calls after two
warm-up calls. Each measurement is repeated ``repeats`` times, interleaved across the
implementations, and the median is reported with the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrmsprop

try:
    from jrmsprop import packed
except ImportError:  # before jrmsprop/__init__.py exports it
    from jrmsprop._src.packed import packed

LR, RHO, EPS = 1e-3, 0.9, 1e-7


def _make_tx(kind: str) -> Any:
    if kind == "optax":
        return optax.rmsprop(LR, decay=RHO, eps=EPS, eps_in_sqrt=False)
    tx = jrmsprop.rmsprop(LR, rho=RHO, epsilon=EPS)
    return packed(tx) if kind == "packed" else tx


def _inputs(kind: str, n: int, size: int, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((n, size), dtype=np.float32)
    grads = rng.standard_normal((n, size), dtype=np.float32)
    if kind == "flat":
        return jnp.asarray(params.ravel()), jnp.asarray(grads.ravel())
    return [jnp.asarray(p) for p in params], [jnp.asarray(g) for g in grads]


def _step_fn(tx: Any) -> Callable[..., Any]:
    def step(p: Any, s: Any, g: Any) -> Any:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    return step


def compile_seconds(kind: str, n: int, size: int) -> float:
    tx = _make_tx("jrmsprop" if kind == "flat" else kind)
    params, grads = _inputs(kind, n, size)
    state = tx.init(params)
    step = jax.jit(_step_fn(tx), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    step.lower(params, state, grads).compile()
    return time.perf_counter() - t0


def step_seconds(kind: str, n: int, size: int, steps: int) -> float:
    tx = _make_tx("jrmsprop" if kind == "flat" else kind)
    params, grads = _inputs(kind, n, size)
    state = tx.init(params)
    compiled = jax.jit(_step_fn(tx), donate_argnums=(0, 1)).lower(params, state, grads).compile()
    times = []
    for k in range(steps + 2):
        t0 = time.perf_counter()
        params, state = compiled(params, state, grads)
        jax.block_until_ready((params, state))
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


KINDS = ("optax", "jrmsprop", "packed", "flat")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--size", type=int, default=256, help="float32 elements per leaf")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--no-compile", action="store_true", help="step times only")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.repeats} repeats")
    for n in args.leaves:
        compile_s: dict[str, list[float]] = {k: [] for k in args.kinds}
        step_s: dict[str, list[float]] = {k: [] for k in args.kinds}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every kind
            for kind in args.kinds:
                if not args.no_compile:
                    compile_s[kind].append(compile_seconds(kind, n, args.size))
                step_s[kind].append(step_seconds(kind, n, args.size, args.steps))
        med_c = {k: statistics.median(v) for k, v in compile_s.items() if v}
        med_s = {k: statistics.median(v) for k, v in step_s.items()}
        print(f"\n{n} leaves x {args.size} float32 (flat: one leaf of {n * args.size})")
        for kind in args.kinds:
            c = f"compile {med_c[kind]:7.2f} s" if kind in med_c else ""
            print(f"  {kind:9s} {c}  step {med_s[kind] * 1e3:8.3f} ms")

        def ratio(table: dict[str, float], a: str, b: str, label: str) -> None:
            if a in table and b in table:
                print(f"  {label:38s} {table[a] / table[b]:6.2f}x")

        ratio(med_c, "packed", "optax", "compile packed / optax")
        ratio(med_c, "packed", "jrmsprop", "compile packed / unpacked jrmsprop")
        ratio(med_c, "jrmsprop", "optax", "compile unpacked jrmsprop / optax")
        ratio(med_s, "packed", "flat", "step packed / flat (target <= 1.3)")
        ratio(med_s, "jrmsprop", "flat", "step unpacked jrmsprop / flat")
        ratio(med_s, "optax", "flat", "step optax / flat")
        ratio(med_s, "packed", "jrmsprop", "step packed / unpacked jrmsprop")


if __name__ == "__main__":
    main()
