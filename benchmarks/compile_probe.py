"""Trace and compile time of the jitted step, jrmsprop against optax, with the noise taken out.

``python benchmarks/compile_probe.py [--leaves 512] [--repeats 3] [variants...]``

The benchmark's ``compile_vs_optax`` is one first-call sample per mode, which scatters by ±20%
on a shared machine. This probe builds a fresh jitted step (params and state donated, as in
``jrmsprop/jit_donated``) ``--repeats`` times for each optimizer, alternating the two, with
``jax.clear_caches()`` before each, and reports the minimum of the trace-and-lower time and of
the XLA compile time separately. Leaves are float32 ``(128, 256)`` (``(256,)`` above 512 leaves).
``--samples`` also prints every compilation in the order it ran, with the minor page faults it
took (the first large compilation in a process faults in the memory of XLA's reachability map).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.modes import jrmsprop_tx, optax_tx  # noqa: E402
from benchmarks.workloads import VARIANTS  # noqa: E402


def probe(
    leaves: int, variant: str, repeats: int, samples: bool = False
) -> dict[str, tuple[float, float]]:
    """``{name: (min trace+lower s, min compile s)}`` for jrmsprop and optax."""
    import jax
    import jax.numpy as jnp
    import optax

    momentum, centered = VARIANTS[variant]
    shape = (128, 256) if leaves <= 512 else (256,)
    params = [jnp.full(shape, i + 1.0, jnp.float32) for i in range(leaves)]
    grads = [jnp.full(shape, 0.1, jnp.float32) for _ in range(leaves)]
    makers = {
        "jrmsprop": lambda: jrmsprop_tx(momentum, centered),
        "optax": lambda: optax_tx(momentum, centered),
    }
    best = {name: (float("inf"), float("inf")) for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            tx = make()

            def step(p, s, g, tx=tx):
                updates, s = tx.update(g, s, p)
                return optax.apply_updates(p, updates), s

            state = jax.block_until_ready(tx.init(params))
            jax.clear_caches()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads)
            t1 = time.perf_counter()
            lowered.compile()
            t2 = time.perf_counter()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            best[name] = (min(best[name][0], t1 - t0), min(best[name][1], t2 - t1))
            if samples:
                print(f"  {variant:<18} {name:<9} trace {t1 - t0:6.2f} compile {t2 - t1:6.2f}"
                      f"  minor page faults {faults / 1e3:7.0f}k", flush=True)  # fmt: skip
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--leaves", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", action="store_true", help="print every compilation")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.leaves < 1 or args.repeats < 1:
        parser.error("--leaves and --repeats must be >= 1")
    print(f"{args.leaves} leaves, minimum of {args.repeats} fresh compilations (seconds)")
    print(f"{'variant':<18} {'trace':>7} {'compile':>8} {'optax trace':>12} {'optax compile':>14}"
          f" {'total x optax':>14}")  # fmt: skip
    for variant in args.variants or list(VARIANTS):
        best = probe(args.leaves, variant, args.repeats, args.samples)
        (jt, jc), (ot, oc) = best["jrmsprop"], best["optax"]
        print(f"{variant:<18} {jt:>7.2f} {jc:>8.2f} {ot:>12.2f} {oc:>14.2f}"
              f" {(jt + jc) / (ot + oc):>14.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
