"""Probe: the wrapper's step on many small leaves, fused CPU kernel against the XLA path.

``python benchmarks/probes/fused_small_leaves.py [--total N] [--sizes 1024,4096,...]
[--variants plain,momentum] [--compile]``

``RMSprop.apply_gradients`` runs one donated jitted step in which every float32 leaf on CPU takes
the one-pass kernel (``fused=True``). The kernel moves the fewest bytes, which pays on large
leaves; on small leaves that sit in cache the cost is per call instead. This probe builds the
wrapper's own compiled step (``jrmsprop._src.optimizer._step``) for ``N / size`` leaves of
``size`` float32 each (``N`` = 2M by default) and times it with ``fused`` on and off, interleaved
in one process (median of the middle samples), and with ``--compile`` the time to lower and
compile each program from a cleared cache. Both programs give the same bits
(``tests/test_cpu_kernel.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jrmsprop
from jrmsprop._src import optimizer as optimizer_lib

_VARIANTS = {"plain": (0.0, False), "momentum": (0.9, False), "centered_momentum": (0.9, True)}


def _inputs(size: int, leaves: int, momentum: bool, centered: bool):
    params = tuple(jnp.full((size,), 1.0 + i, jnp.float32) for i in range(leaves))
    grads = tuple(jnp.full((size,), 0.1, jnp.float32) for _ in range(leaves))

    def slot():
        return tuple(jnp.zeros((size,), jnp.float32) for _ in range(leaves))

    slots = (slot(), slot() if momentum else None, slot() if centered else None)
    return params, slots, jnp.zeros((), jnp.int32), grads


def run(size: int, total: int, variant: str, repeats: int, compile_too: bool) -> None:
    momentum, centered = _VARIANTS[variant]
    leaves = max(16, total // size)
    opt = jrmsprop.RMSprop(1e-3, momentum=momentum, centered=centered)
    values, clip = opt._hyperparameters.step_values(jnp.zeros((), jnp.int32))
    static = dict(centered=centered, momentum_slot=momentum > 0)
    line = f"{size:>8} x {leaves:<5} {variant:<18}"
    if compile_too:
        best = {}
        for fused in (True, False, True, False):
            params, slots, count, grads = _inputs(size, leaves, momentum > 0, centered)
            jax.clear_caches()
            t0 = time.perf_counter()
            optimizer_lib._step.lower(
                params, slots, count, grads, values, clip, fused=fused, **static
            ).compile()
            best[fused] = min(best.get(fused, float("inf")), time.perf_counter() - t0)
        line += f" compile fused {best[True]:6.2f} s  xla {best[False]:6.2f} s"
    state = {f: _inputs(size, leaves, momentum > 0, centered) for f in (True, False)}
    samples: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats + 1):
        for fused in (True, False):
            params, slots, count, grads = state[fused]
            t0 = time.perf_counter()
            params, slots, count = optimizer_lib._step(
                params, slots, count, grads, values, clip, fused=fused, **static
            )
            jax.block_until_ready(params)
            samples[fused].append(time.perf_counter() - t0)
            state[fused] = (params, slots, count, grads)
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
