"""How many leaves one call of the CPU kernel should update: first call and step time.

``python benchmarks/kernel_group_probe.py [--leaves 512] [--size 32768] [--groups 1,8,32,128]
[--momentum 0.9] [--repeats 30]``

``jrmsprop.update_and_apply`` updates the float32 leaves that the one-pass CPU kernel takes in
calls of ``transform._KERNEL_GROUP`` leaves each. For each group size this builds the donated,
jitted step afresh (``jax.clear_caches()`` first) and times its first call (trace, compile, one
step; the faster of two, compiled in opposite orders); then it times the steps of all the group
sizes interleaved, round after round, so that they share the machine's noise. Group size 1 is
one call per leaf. Prints the medians, the best times and each ratio to the first group size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrmsprop
from jrmsprop._src import cpu_kernel, transform


def build(group: int, tx, params, state, grads):
    """The first call's seconds and a step closure over donated copies, for ``group``."""
    transform._KERNEL_GROUP = group
    jax.clear_caches()
    step = jax.jit(lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p), donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state)]
    start = time.perf_counter()
    box[:] = jax.block_until_ready(step(*box, grads))
    first = time.perf_counter() - start

    def run() -> float:
        t0 = time.perf_counter()
        box[:] = jax.block_until_ready(step(*box, grads))
        return time.perf_counter() - t0

    return first, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=512)
    parser.add_argument("--size", type=int, default=32768, help="float32 elements per leaf")
    parser.add_argument("--groups", default="1,8,32,128", help="leaves per kernel call")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not cpu_kernel.available():
        raise SystemExit(f"the CPU kernel is not available: {cpu_kernel.unavailable_reason()}")
    groups = [int(g) for g in args.groups.split(",")]
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(args.size), jnp.float32) for _ in range(args.leaves)]
    grads = [jnp.asarray(rng.standard_normal(args.size), jnp.float32) for _ in range(args.leaves)]
    tx = jrmsprop.rmsprop(1e-3, momentum=args.momentum)
    state = tx.init(params)
    default = transform._KERNEL_GROUP
    first: dict[int, float] = {}
    runs = {}
    try:  # each group size compiled twice, in opposite orders; the faster first call counts
        for group in groups + groups[::-1]:
            seconds, runs[group] = build(group, tx, params, state, grads)
            first[group] = min(first.get(group, seconds), seconds)
            print(f"group {group:>4}: first call {seconds:.2f} s", flush=True)
    finally:
        transform._KERNEL_GROUP = default
    times: dict[int, list[float]] = {g: [] for g in groups}
    for _ in range(args.repeats):
        for group in groups:
            times[group].append(runs[group]())
    base = groups[0]
    print(f"{args.leaves} leaves of {args.size}, momentum {args.momentum}, "
          f"{args.repeats} interleaved rounds; ratios to group {base}")  # fmt: skip
    print(f"{'group':>6} {'first s':>8} {'ratio':>6} {'median ms':>10} {'best ms':>8} {'ratio':>6}")
    med = {g: statistics.median(t) for g, t in times.items()}
    for group in groups:
        print(
            f"{group:>6} {first[group]:8.2f} {first[group] / first[base]:6.2f} "
            f"{1e3 * med[group]:10.2f} {1e3 * min(times[group]):8.2f} {med[group] / med[base]:6.2f}"
        )


if __name__ == "__main__":
    main()
