"""Probe: the donated step on many small leaves, fused CPU kernel against the XLA path.

``python benchmarks/probes/fused_small_leaves.py [--total N] [--sizes 1024,4096,...]
[--variants plain,momentum] [--compile]``

``jrmsprop.update_and_apply`` (and so ``RMSprop.apply_gradients``, which runs it in one donated
jitted step) lets every float32 leaf on CPU take the one-pass kernel. The kernel moves the fewest
bytes, which pays on large leaves; on small leaves that sit in cache the cost is per call
instead. This probe jits ``update_and_apply`` with params and state donated, for ``N / size``
leaves of ``size`` float32 each (``N`` = 2M by default), and times it with ``fused=True`` and
``fused=False`` (the XLA path), interleaved in one process (median of the middle samples), and
with ``--compile`` the time to lower and compile each program from a cleared cache. Both
programs give the same bits (``tests/test_update_and_apply.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jrmsprop

_VARIANTS = {"plain": (0.0, False), "momentum": (0.9, False), "centered_momentum": (0.9, True)}


def _inputs(tx, size: int, leaves: int):
    params = tuple(jnp.full((size,), 1.0 + i, jnp.float32) for i in range(leaves))
    grads = tuple(jnp.full((size,), 0.1, jnp.float32) for _ in range(leaves))
    return params, tx.init(params), grads


def _step(tx, fused: bool):
    return jax.jit(
        lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p, fused=fused), donate_argnums=(0, 1)
    )


def run(size: int, total: int, variant: str, repeats: int, compile_too: bool) -> None:
    momentum, centered = _VARIANTS[variant]
    leaves = max(16, total // size)
    tx = jrmsprop.rmsprop(1e-3, momentum=momentum, centered=centered)
    line = f"{size:>8} x {leaves:<5} {variant:<18}"
    if compile_too:
        best = {}
        for fused in (True, False, True, False):
            params, state, grads = _inputs(tx, size, leaves)
            jax.clear_caches()
            t0 = time.perf_counter()
            _step(tx, fused).lower(params, state, grads).compile()
            best[fused] = min(best.get(fused, float("inf")), time.perf_counter() - t0)
        line += f" compile fused {best[True]:6.2f} s  xla {best[False]:6.2f} s"
    steps = {f: _step(tx, f) for f in (True, False)}
    inputs = {f: _inputs(tx, size, leaves) for f in (True, False)}
    samples: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats + 1):
        for fused in (True, False):
            params, state, grads = inputs[fused]
            t0 = time.perf_counter()
            params, state = steps[fused](params, state, grads)
            jax.block_until_ready(params)
            samples[fused].append(time.perf_counter() - t0)
            inputs[fused] = (params, state, grads)
    mid = {f: statistics.median(sorted(s[1:])[1:-1]) for f, s in samples.items()}
    print(
        f"{line}  step fused {mid[True] * 1e3:8.3f} ms  xla {mid[False] * 1e3:8.3f} ms"
        f"  fused/xla {mid[True] / mid[False]:.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1 << 21, help="parameters in all")
    parser.add_argument("--sizes", default="1024,4096,16384,65536,262144")
    parser.add_argument("--variants", default="plain,momentum")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--compile", action="store_true", help="also time the compilations")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in _VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(_VARIANTS)}")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if min(sizes) < 1 or args.total < 1 or args.repeats < 3:
        parser.error("--sizes and --total must be positive and --repeats at least 3")
    for variant in variants:
        for size in sizes:
            run(size, args.total, variant, args.repeats, args.compile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
