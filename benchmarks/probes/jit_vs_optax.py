"""Probe: the jitted, donated step (``tx.update`` + ``optax.apply_updates``) against optax's, and
optionally against jrmsprop at another git revision, taking turns on the same buffers.

``python benchmarks/probes/jit_vs_optax.py [--size 16777216] [--leaves 1] [--rounds 30]
[--variants plain,momentum,centered,centered_momentum] [--baseline REV]``

The benchmark's ``jit_vs_optax`` compares two medians of steps interleaved with the other
compiled modes of the workload, each step on arrays of its own. Here the contestants update
*the same physical buffers* in turn: every step donates the parameters and the slots and gets
them back in the same buffers (the probe checks the addresses and names a contestant whose step
allocated new ones), and the next contestant's state is rebuilt around those buffers
(jrmsprop's ``rms`` / ``momentum`` / ``mg`` are optax's ``nu`` / ``trace`` / ``mu``). So neither
side profits from a luckier placement of its pages, and a drift of the shared machine hits all
alike; the order alternates round by round. It prints each median and the ratios.

``--baseline REV`` adds jrmsprop as it was at git revision ``REV`` of this checkout (extracted
with ``git archive`` into a temporary directory and imported as ``jrmsprop_baseline``): the
"no regression" check of a change, measured in one process.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.modes import optax_tx  # noqa: E402
from benchmarks.workloads import EPSILON, LEARNING_RATE, RHO, VARIANTS  # noqa: E402

#: The state field that holds each slot, in jrmsprop's and in optax's states.
SLOT_OF_FIELD = {"rms": "rms", "nu": "rms", "momentum": "momentum", "trace": "momentum"}
SLOT_OF_FIELD.update({"mg": "mg", "mu": "mg"})


def baseline_package(rev: str) -> Any:
    """jrmsprop at git revision ``rev``, imported as the package ``jrmsprop_baseline``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "jrmsprop"],
        check=True,
        capture_output=True,
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="jrmsprop-baseline-"))
    # (the extraction filters exist from Python 3.12 and in later patch releases of 3.10 / 3.11)
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, **safe)
    package = target / "jrmsprop_baseline"
    (target / "jrmsprop").rename(package)
    for source in package.rglob("*.py"):
        text = source.read_text()
        source.write_text(re.sub(r"\bjrmsprop\b", "jrmsprop_baseline", text))
    sys.path.insert(0, str(target))
    return importlib.import_module("jrmsprop_baseline")


def slot_at(path: tuple[Any, ...]) -> str | None:
    """The slot that a state leaf at ``path`` belongs to (None for the count and the like)."""
    names = [k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)]
    return next((SLOT_OF_FIELD[n] for n in names if n in SLOT_OF_FIELD), None)


def slots_of(state: Any) -> dict[str, list[Any]]:
    """The state's slot arrays by slot name (leaves in the parameters' order)."""
    slots: dict[str, list[Any]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        slot = slot_at(path)
        if slot is not None:
            slots.setdefault(slot, []).append(leaf)
    return slots


def with_slots(state: Any, slots: dict[str, list[Any]]) -> Any:
    """``state`` with its slot arrays replaced by ``slots`` (as :func:`slots_of` returns them)."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    remaining = {name: iter(arrays) for name, arrays in slots.items()}
    leaves = []
    for path, leaf in paths_and_leaves:
        slot = slot_at(path)
        leaves.append(leaf if slot is None else next(remaining[slot]))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def addresses(params: list[Any], slots: dict[str, list[Any]]) -> set[int]:
    """The buffers the parameters and slots live in (XLA may hand a donated buffer to another
    output of the same shape: a permutation is still the same buffers)."""
    arrays = [*params, *(a for arrays in slots.values() for a in arrays)]
    return {a.unsafe_buffer_pointer() for a in arrays}


def run_variant(variant: str, contestants: dict[str, Any], args: argparse.Namespace) -> None:
    momentum, centered = VARIANTS[variant]
    rng = np.random.default_rng(0)
    params = [
        jax.device_put(rng.standard_normal(args.size).astype(np.float32))
        for _ in range(args.leaves)
    ]
    grads = [
        jax.device_put((0.1 * rng.standard_normal(args.size)).astype(np.float32))
        for _ in range(args.leaves)
    ]
    txs = {
        name: optax_tx(momentum, centered)
        if make is None
        else make(LEARNING_RATE, rho=RHO, momentum=momentum, epsilon=EPSILON, centered=centered)
        for name, make in contestants.items()
    }
    states = {name: tx.init(params) for name, tx in txs.items()}
    steps = {}
    for name, tx in txs.items():

        def step(p, s, g, tx=tx):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        steps[name] = jax.jit(step, donate_argnums=(0, 1))
    slots = slots_of(states["jrmsprop"])
    times: dict[str, list[float]] = {name: [] for name in txs}
    moved = set()
    order = list(txs)
    for r in range(args.rounds + 2):  # two rounds of compilation and warm-up
        for name in order if r % 2 else order[::-1]:
            state = with_slots(states[name], slots)
            before = addresses(params, slots)
            t0 = time.perf_counter()
            params, state = steps[name](params, state, grads)
            jax.block_until_ready((params, state))
            elapsed = time.perf_counter() - t0
            states[name], slots = state, slots_of(state)
            if addresses(params, slots) != before:
                moved.add(name)
            if r >= 2:
                times[name].append(elapsed)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    line = f"{variant:18s} {args.leaves} x {args.size}: " + ", ".join(
        f"{name} {m:.2f} ms" for name, m in med.items()
    )
    line += f"; jrmsprop/optax {med['jrmsprop'] / med['optax']:.3f}"
    if "baseline" in med:
        line += (
            f", baseline/optax {med['baseline'] / med['optax']:.3f}"
            f", jrmsprop/baseline {med['jrmsprop'] / med['baseline']:.3f}"
        )
    print(line + (f"  (new buffers from: {sorted(moved)})" if moved else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 24, help="elements per leaf")
    parser.add_argument("--leaves", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--baseline", metavar="REV", help="also time jrmsprop at this revision")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    import jrmsprop

    contestants: dict[str, Any] = {"jrmsprop": jrmsprop.rmsprop, "optax": None}
    if args.baseline:
        contestants["baseline"] = baseline_package(args.baseline).rmsprop
    for variant in variants:
        run_variant(variant, contestants, args)


if __name__ == "__main__":
    main()
