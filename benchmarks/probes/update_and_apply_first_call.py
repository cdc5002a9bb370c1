"""Probe: the first call of a donated, jitted ``update_and_apply`` step, split into its phases.

``python benchmarks/probes/update_and_apply_first_call.py [--leaves 512] [--size 32768]
[--momentum 0.9] [--repeats 2] [--label NAME]``

Builds the step on ``leaves`` float32 leaves of ``size`` elements and, ``repeats`` times after
``jax.clear_caches()``, times ``lower`` (trace and lower) and ``compile`` separately; then one
fresh step's first call (trace, compile, one step) and the median of 40 steps. To compare two
versions of jrmsprop, run it alternately in fresh processes with ``PYTHONPATH`` pointing at
each checkout (``git worktree add /tmp/old <commit>``), e.g.::

    for i in 1 2; do
      PYTHONPATH=/tmp/old python benchmarks/probes/update_and_apply_first_call.py --label old
      python benchmarks/probes/update_and_apply_first_call.py --label new
    done
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrmsprop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=512)
    parser.add_argument("--size", type=int, default=32768, help="float32 elements per leaf")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label", default=jrmsprop.__file__)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(args.size), jnp.float32) for _ in range(args.leaves)]
    grads = [jnp.asarray(rng.standard_normal(args.size), jnp.float32) for _ in range(args.leaves)]
    tx = jrmsprop.rmsprop(1e-3, momentum=args.momentum)
    state = tx.init(params)
    jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.ones(3)))  # JAX's own start-up

    def build():
        return jax.jit(
            lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p), donate_argnums=(0, 1)
        )

    for _ in range(args.repeats):
        jax.clear_caches()
        t0 = time.perf_counter()
        lowered = build().lower(params, state, grads)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        print(f"{args.label}: lower {t1 - t0:.2f} s, compile {t2 - t1:.2f} s", flush=True)
    jax.clear_caches()
    step = build()
    box = [jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state)]
    t0 = time.perf_counter()
    box[:] = jax.block_until_ready(step(*box, grads))
    first = time.perf_counter() - t0
    times = []
    for _ in range(40):
        t0 = time.perf_counter()
        box[:] = jax.block_until_ready(step(*box, grads))
        times.append(time.perf_counter() - t0)
    print(
        f"{args.label}: first call {first:.2f} s, step median {1e3 * statistics.median(times):.2f}"
        f" ms (best {1e3 * min(times):.2f} ms)"
    )


if __name__ == "__main__":
    main()
