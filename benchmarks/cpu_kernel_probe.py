"""XLA's jitted dense RMSprop step vs the fused CPU kernel, as ratios to the bandwidth limit.

    python benchmarks/cpu_kernel_probe.py [--n 16777216] [--repeats 9] [--json out.json]

For each Keras 2 variant (plain, momentum, centered, centered + momentum) on one float32 leaf of
``--n`` parameters it times, inside ``jax.jit`` with the parameter and the slots donated:

* ``update``: the optax update ``u = −delta`` and the new slots (what ``tx.update`` returns):
  ``xla`` (``arithmetic.rmsprop_step``) vs ``kernel`` (``cpu_kernel.fused_step(output="update")``),
  and ``kernel-1t`` (the kernel on one thread);
* ``update-nodonate``: ``update`` without donation (an eager ``tx.update``), both paths;
* ``step``: the parameter updated as well (``p + u``, what ``optax.apply_updates`` adds):
  ``xla`` (one jit, XLA fuses what it can), ``kernel+xla`` (kernel update, then ``p + u`` by XLA:
  what a per-leaf dispatch inside ``tx.update`` gives) and ``kernel`` (``output="param"``: the
  parameter written in place by the kernel).

The bandwidth limit is ``bytes that must move / bandwidth``: read g and the slots (and p), write
u or p and the slots, so 16/24/24/32 bytes per parameter for ``update`` and 20/28/28/36 for
``step``. The bandwidth is the best of a donated ``y = a·x + y`` on 64M float32 (12 bytes per
element, in place) measured before and after the runs. Times are medians over ``--repeats`` calls
after two warm-up calls; on a shared machine, compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src import arithmetic, cpu_kernel

VARIANTS = {  # name: (momentum slot, centered)
    "plain": (False, False),
    "momentum": (True, False),
    "centered": (False, True),
    "centered_momentum": (True, True),
}


def timed(fn, args: tuple, repeats: int, const: Any = ()) -> tuple[float, float]:
    """(median, best) seconds of ``args = fn(*const, *args)`` (a donated step feeding itself).

    ``const`` may be a function returning the tuple: it is then called before each timed call
    (a fresh copy of a donated gradient, made outside the timer).
    """
    fresh = const if callable(const) else (lambda: const)
    for _ in range(2):
        args = fn(*fresh(), *args)
        jax.block_until_ready(args)
    samples = []
    for _ in range(repeats):
        c = fresh()
        jax.block_until_ready(c)
        t0 = time.perf_counter()
        args = fn(*c, *args)
        jax.block_until_ready(args)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), min(samples)


_TYPE = re.compile(r"\b(f32|f64|bf16|f16|s32|u32|s64|u64|s8|u8|pred)\[([\d,]*)\]")
_ITEM = {"f32": 4, "f64": 8, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "u64": 8,
         "s8": 1, "u8": 1, "pred": 1}  # fmt: skip
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def hlo_bytes(compiled_text: str) -> int:
    """Bytes read and written by the top-level ops of the optimized program (noise-free).

    Every fusion, custom call or copy of the entry computation reads its operands and writes its
    result once; parameters, constants, tuples and bitcasts move nothing.
    """
    entry = compiled_text[compiled_text.index("\nENTRY") :]
    sizes: dict[str, int] = {}
    total = 0
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*?)\)", line)
        if not m:
            continue
        name, type_str, op, operands = m.groups()
        size = sum(
            math.prod(int(d) for d in dims.split(",") if d) * _ITEM[t]
            for t, dims in _TYPE.findall(type_str)
        )
        sizes[name] = size
        if op in _FREE:
            continue
        total += size + sum(sizes.get(o, 0) for o in re.findall(r"%([\w.\-]+)", operands))
    return total


def bandwidth(n: int = 1 << 26, repeats: int = 9) -> float:
    """Bytes per second of a donated float32 ``y = a·x + y`` (12 bytes per element)."""
    x = jnp.full((n,), 1.0, jnp.float32)
    a = jnp.float32(0.5)
    axpy = jax.jit(lambda a, x, y: (a * x + y,), donate_argnums=2)
    _, best = timed(axpy, (jnp.full((n,), 2.0, jnp.float32),), repeats, const=(a, x))
    return 12 * n / best


def scalars(momentum: bool) -> arithmetic.Scalars:
    hp = arithmetic.Hyperparams(
        *(jnp.float32(v) for v in (1e-3, 0.9, 0.9 if momentum else 0.0, 1e-7, 0.0, 0.0)),
        step=jnp.int32(10),
    )
    return arithmetic.resolve(hp, None, jnp.float32, arithmetic.Rule())


def make_fns(momentum: bool, centered: bool, sc: arithmetic.Scalars) -> dict[str, Any]:
    """The jitted steps ``(p, g, rms, mom, mg) -> same``; p, rms, mom, mg donated."""
    variant = arithmetic.Rule().variant(has_momentum_slot=momentum)
    k = 1 + momentum + centered

    def xla_update(g, slots):
        delta, *new = arithmetic.rmsprop_step(
            g, None, slots[0], slots[1] if momentum else None, slots[-1] if centered else None,
            sc, variant, jnp.float32,
        )  # fmt: skip
        return -delta, [s for s in new if s is not None]

    def kernel_call(g, slots, **kw):
        first, *new = cpu_kernel.fused_step(
            g, slots[0], slots[1] if momentum else None, slots[-1] if centered else None,
            sc, variant, **kw,
        )  # fmt: skip
        return first, [s for s in new if s is not None]

    def wrap(body, donate=True):
        # (g, p, *slots) -> (p, *slots), donating p and the slots (the update u reuses p's buffer)
        def f(g, p, *slots):
            p_new, new = body(p, g, list(slots))
            return (p_new, *new)

        donated = tuple(range(1, 2 + k)) if donate else ()
        return jax.jit(f, donate_argnums=donated, keep_unused=True)

    return {
        "update/xla": wrap(lambda p, g, s: xla_update(g, s)),
        "update/kernel": wrap(lambda p, g, s: kernel_call(g, s, output="update")),
        "step/xla": wrap(lambda p, g, s: (lambda u, new: (p + u, new))(*xla_update(g, s))),
        "step/kernel+xla": wrap(
            lambda p, g, s: (lambda u, new: (p + u, new))(*kernel_call(g, s, output="update"))
        ),
        "step/kernel": wrap(lambda p, g, s: kernel_call(g, s, output="param", param=p)),
        # not donated (an eager tx.update): XLA must copy each aliased slot before the kernel
        "update-nodonate/xla": wrap(lambda p, g, s: xla_update(g, s), donate=False),
        "update-nodonate/kernel": wrap(
            lambda p, g, s: kernel_call(g, s, output="update"), donate=False
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24, help="parameters (default 16M)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    if not cpu_kernel.available():
        print(f"CPU kernel not available: {cpu_kernel.unavailable_reason()}", file=sys.stderr)
        return 1
    n = args.n
    bw0 = bandwidth()
    rng = np.random.default_rng(0)
    base = {
        "p": rng.standard_normal(n, dtype=np.float32),
        "g": rng.standard_normal(n, dtype=np.float32),
        "rms": rng.random(n, dtype=np.float32),
        "mom": (rng.standard_normal(n, dtype=np.float32) * 1e-3),
        "mg": (rng.standard_normal(n, dtype=np.float32) * 0.1),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (momentum, centered) in VARIANTS.items():
        sc = scalars(momentum)
        fns = make_fns(momentum, centered, sc)
        os.environ[cpu_kernel.THREADS_ENV] = "1"  # read while tracing: a one-thread copy
        fns["update/kernel-1t"] = make_fns(momentum, centered, sc)["update/kernel"]
        os.environ.pop(cpu_kernel.THREADS_ENV)
        g = jnp.asarray(base["g"])
        slot_names = ["rms"] + (["mom"] if momentum else []) + (["mg"] if centered else [])
        k = len(slot_names)
        row = {}
        for mode, fn in fns.items():
            arrays = tuple(jnp.asarray(base[s]) for s in ("p", *slot_names))
            moved = hlo_bytes(fn.lower(g, *arrays).compile().as_text())
            med, best = timed(fn, arrays, args.repeats, const=(g,))
            row[mode] = {"median_s": med, "best_s": best, "hlo_bytes_per_param": moved / n}
            del arrays
        results[name] = {"bytes_update": 4 * (2 + 2 * k), "bytes_step": 4 * (3 + 2 * k), **row}
    bw1 = bandwidth()
    bw = max(bw0, bw1)
    report = {
        "n": n,
        "bandwidth_gbps": bw / 1e9,
        "bandwidth_runs_gbps": [bw0 / 1e9, bw1 / 1e9],
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(
        f"n = {n:,} float32, bandwidth {bw / 1e9:.2f} GB/s (donated axpy, runs "
        f"{bw0 / 1e9:.2f} / {bw1 / 1e9:.2f}); ratio = median (best) time / (bytes / bandwidth)"
    )
    modes = list(next(iter(results.values())))[2:]
    print("cells: bytes/param the compiled program moves, median (best) time / limit")
    print(f"{'variant':<18} {'min B/param':>11}  " + "  ".join(f"{m:>21}" for m in modes))
    for name, r in results.items():
        cells = []
        for m in modes:
            nbytes = r["bytes_update"] if m.startswith("update") else r["bytes_step"]
            limit = nbytes * n / bw
            r[m]["ratio"] = r[m]["median_s"] / limit
            r[m]["ratio_best"] = r[m]["best_s"] / limit
            moved, ratio, best = r[m]["hlo_bytes_per_param"], r[m]["ratio"], r[m]["ratio_best"]
            cells.append(f"{moved:3.0f}B {ratio:5.2f}x ({best:4.2f}x)")
        print(f"{name:<18} {r['bytes_update']:>4}/{r['bytes_step']:<6}  " + "  ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
