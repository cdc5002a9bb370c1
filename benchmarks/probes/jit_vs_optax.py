"""Probe: the jitted, donated step (``tx.update`` + ``optax.apply_updates``) against optax's,
interleaved in one process.

``python benchmarks/probes/jit_vs_optax.py [--size 16777216] [--leaves 1]
[--rounds 25] [--momentum 0.0] [--centered]``

The benchmark's ``jit_vs_optax`` compares two medians taken in separate groups; this probe
alternates the two steps round by round (the same arrays, both compiled first), so a drift of
the shared machine hits both alike, and prints both medians and their ratio. Both programs move
the same bytes (``XLA B/param`` in the benchmark), so a ratio away from 1 is the compute inside
XLA's loops, e.g. the exactness guards of the centered step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.modes import jrmsprop_tx, optax_tx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 24, help="elements per leaf")
    parser.add_argument("--leaves", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--centered", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(args.size).astype(np.float32) for _ in range(args.leaves)]
    g0 = [(0.1 * rng.standard_normal(args.size)).astype(np.float32) for _ in range(args.leaves)]
    steps = {}
    for name, tx in (
        ("jrmsprop", jrmsprop_tx(args.momentum, args.centered)),
        ("optax", optax_tx(args.momentum, args.centered)),
    ):

        def step(p, s, g, tx=tx):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        jitted = jax.jit(step, donate_argnums=(0, 1))
        grads = [jnp.array(g) for g in g0]
        box = [[jnp.array(p) for p in p0], None]
        box[1] = tx.init(box[0])

        def run(box=box, jitted=jitted, grads=grads):
            box[0], box[1] = jitted(box[0], box[1], grads)
            jax.block_until_ready(box)

        run()  # compile
        run()
        steps[name] = run

    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, run in steps.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(
        f"momentum={args.momentum} centered={args.centered} {args.leaves} x {args.size}: "
        f"jrmsprop {med['jrmsprop']:.2f} ms, optax {med['optax']:.2f} ms, "
        f"ratio {med['jrmsprop'] / med['optax']:.3f}"
    )


if __name__ == "__main__":
    main()
