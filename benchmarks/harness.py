"""``python -m jrmsprop bench``: jrmsprop against its peers, in one process and one run.

Every workload (:mod:`benchmarks.workloads`) runs jrmsprop's modes and each importable peer's
(:mod:`benchmarks.modes`) on the *same* NumPy inputs and reports the median wall time of a step,
the first call (compilation included), ratios against a memory-bandwidth limit measured in the
same run and against each other, XLA's own count of the bytes a compiled step moves, peak memory
(:mod:`benchmarks.measure`), and a PASS/MISS/SKIP verdict per target (:mod:`benchmarks.targets`).
Nothing here asserts timings: the numbers are printed and written to JSON for people to read.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import statistics
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import measure, targets
from benchmarks.modes import PEER_NAMES, ROW_PEER, Mode, Peers, Skip, modes_for
from benchmarks.workloads import (
    BYTES_PER_PARAM,
    EPSILON,
    LEARNING_RATE,
    MOMENTUM,
    RHO,
    SHAPES,
    VARIANTS,
    Workload,
    build_workloads,
)
from jrmsprop._src.output_path import unwritable_reason

__all__ = ["SCHEMA", "build_parser", "format_report", "main", "run_benchmark", "run_workload"]

SCHEMA = "jrmsprop-bench/2"

Log = Callable[[str], None]

#: The modes whose first call a target compares (compile time): on a workload of many leaves each
#: is compiled a second time after the timed rounds, and its ``first_call_s`` is the faster of
#: the two (``measure.first_calls_again``).
RECOMPILED = frozenset(
    mode
    for target in targets.TARGETS
    for ref in (target.num, target.den)
    if ref is not None and ref.field == "first_call_s"
    for mode in ref.modes
)


def _sparse_traffic(wl: Workload, bandwidth_bps: float) -> dict[str, Any]:
    """The bytes the sparse embedding step must move (and its limit)."""
    bpp = BYTES_PER_PARAM[wl.variant]
    touched = wl.rows * wl.leaf_shapes[0][1]
    if wl.momentum > 0:  # lazy rows: only the touched rows move
        sparse_bpp, sparse_bytes = 0, bpp * touched
    else:  # rms (and mg) decay on every row: read + write the whole table, plus the rows
        sparse_bpp = 8 * (2 if wl.centered else 1)
        sparse_bytes = sparse_bpp * wl.n_params + bpp * touched
    return {
        "rows_per_step": wl.rows,
        "sparse_bytes_per_param": sparse_bpp,
        "sparse_bytes_moved": sparse_bytes,
        "sparse_limit_s": sparse_bytes / bandwidth_bps,
    }


def _build(mode: Mode, wl: Workload, peers: Peers) -> Callable[[], Any]:
    peer = ROW_PEER.get(mode.row.split("/")[0])
    if peer is not None and peer not in peers.wanted:
        raise Skip("not requested (--peers)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mode.make(wl, peers)


def run_workload(
    wl: Workload, peers: Peers, bandwidth_bps: float, repeats: int, budget_s: float, log: Log
) -> dict[str, Any]:
    """Runs every mode on one workload; returns its JSON record."""
    wl.make_inputs()
    bpp = BYTES_PER_PARAM[wl.variant]
    record: dict[str, Any] = {
        "name": wl.name,
        "shape": wl.shape.name,
        "kind": wl.kind,
        "variant": wl.variant,
        "description": wl.shape.description,
        "n_params": wl.n_params,
        "n_leaves": len(wl.leaf_shapes),
        "leaf_shape": list(wl.leaf_shapes[0]),
        "bytes_per_param": bpp,
        "bytes_moved": bpp * wl.n_params,
        "limit_s": bpp * wl.n_params / bandwidth_bps,
        "results": {},
    }
    if wl.kind == "embedding":
        record.update(_sparse_traffic(wl, bandwidth_bps))
    results = record["results"]
    modes = modes_for(wl)

    def done(mode: Mode, timing: measure.Timing, step: Any) -> None:
        results[mode.row] = r = timing.as_dict()
        lower = getattr(step, "lower", None)
        if lower is not None and getattr(step, "n_leaves", 0) == 1:  # cheap to compile again
            cost = measure.xla_cost(lower().compile())
            if "bytes_accessed" in cost and mode.group != "sparse":
                # (XLA counts an in-place scatter as its whole operand: no B/param for sparse)
                r["xla_bytes_per_param"] = cost["bytes_accessed"] / wl.n_params
            if "temp_bytes" in cost:
                r["xla_temp_bytes"] = cost["temp_bytes"]
        log(
            f"  {wl.name:<34} {mode.row:<26} {statistics.median(timing.samples) * 1e3:10.3f} ms"
            f"  (first {timing.first_call_s:.2f} s, n={len(timing.samples)})"
        )

    def failed(mode: Mode, e: BaseException) -> None:
        if isinstance(e, Skip):
            results[mode.row] = {"skipped": str(e)}
            log(f"  {wl.name:<34} {mode.row:<26} skipped: {e}")
        else:
            results[mode.row] = {"skipped": f"error: {type(e).__name__}: {e}"}
            log(f"  {wl.name:<34} {mode.row:<26} ERROR {type(e).__name__}: {e}")

    # The JAX modes (jrmsprop's and optax's), whose ratios are compared against tight targets,
    # are sampled in shuffled rounds so that drifting machine load hits them all alike, in groups
    # of like with like: the compiled dense steps (cheap, so 3x the repeats), the sparse steps
    # (which would otherwise always start with caches flushed by a 64M-row dense step), and the
    # eager updates (with a pause before each step).
    for group_name in ("compiled", "sparse", "eager"):
        group: dict[str, Callable[[], Any]] = {}
        members = [m for m in modes if m.group == group_name]
        by_row = {m.row: m for m in members}
        for mode in members:
            try:
                group[mode.row] = _build(mode, wl, peers)
            except Exception as e:  # noqa: BLE001 - a failing mode must not end the run
                failed(mode, e)
        eager = group_name == "eager"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seed = zlib.crc32(f"{wl.name}/{group_name}".encode())
            timings, errors = measure.measure_interleaved(
                group,
                repeats if eager else 3 * repeats,
                budget_s,
                settle_s=measure.SETTLE_S if eager else 0.0,
                seed=seed,
            )
            if len(wl.leaf_shapes) > 1:  # where the compile-time targets apply
                again = {m: by_row[m] for m in measure.first_order(list(group), seed)[::-1]}
                measure.first_calls_again(
                    {
                        row: functools.partial(_build, mode, wl, peers)
                        for row, mode in again.items()
                        if row in RECOMPILED and row in timings
                    },
                    timings,
                )
        for mode in members:
            try:
                if mode.row in errors:
                    raise errors[mode.row]
                if mode.row in timings:
                    done(mode, timings[mode.row], group[mode.row])
            except Exception as e:  # noqa: BLE001
                failed(mode, e)
        group.clear()
        gc.collect()

    # The other frameworks, one after the other (each with its own thread pools).
    for mode in modes:
        if mode.group is not None:
            continue
        step = None
        try:
            step = _build(mode, wl, peers)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                timing = measure.measure(step, repeats, budget_s, warmup=1, sync=mode.sync)
            done(mode, timing, step)
        except Exception as e:  # noqa: BLE001 - a failing peer must not end the run
            failed(mode, e)
        step = None  # release the mode's buffers before the next one
        gc.collect()
    record["results"] = {m.row: results[m.row] for m in modes if m.row in results}
    wl.free_inputs()
    gc.collect()
    return record


def _peers(text: str) -> set[str]:
    return set(PEER_NAMES) if text == "all" else {p.strip() for p in text.split(",") if p.strip()}


def _only(text: str | None) -> list[str]:
    """The ``--only`` selectors: comma-separated, blanks dropped."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def run_benchmark(args: argparse.Namespace, log: Log = print) -> dict[str, Any]:
    """Runs everything ``args`` selects and returns the JSON-able report."""
    t_start = time.perf_counter()
    only = _only(args.only)
    peers = Peers(_peers(args.peers), slow=args.slow)
    machine = measure.machine_info()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "argv": list(args.argv),
        "command": "python -m jrmsprop bench " + " ".join(args.argv),
        "quick": args.quick,
        "repeats": args.repeats,
        "tolerance": args.tolerance,
        "machine": machine,
        "settings": {
            "learning_rate": LEARNING_RATE,
            "rho": RHO,
            "epsilon": EPSILON,
            "momentum": MOMENTUM,
            "dtype": "float32",
            "timing": (
                "median of up to --repeats timed steps after the first call and one warm-up "
                f"call; a mode stops sampling after {args.budget:g} s once it has 3 samples; "
                "the jrmsprop and optax modes of a workload are sampled in shuffled rounds "
                "(compiled dense steps and sparse steps with 3x --repeats, eager updates "
                "with --repeats); "
                f"every timed eager step starts after a {measure.SETTLE_S * 1e3:g} ms pause; "
                "on many-leaf workloads the modes that a compile-time target compares make a "
                "second first call (fresh step, caches cleared, reverse order) and report the "
                "faster (first_calls_s has both)"
            ),
        },
        "bandwidth": [],
        "workloads": [],
        "memory": [],
        "notes": [],
    }
    load, cores = machine["loadavg_start"], machine["cores_available"]
    if load and load[0] > 0.5 * cores:
        report["notes"].append(
            f"the machine was busy at the start (1-min load {load[0]:.1f} on {cores} cores): "
            "timings are noisy"
        )
    bw_n = (1 << 20) if args.quick else (1 << 26)

    def probe(when: str) -> float:
        log(f"bandwidth probe ({bw_n:,} float32, {when})...")
        bw = {**measure.bandwidth_probe(bw_n), "when": when}
        report["bandwidth"].append(bw)
        log(f"  {bw['gbps']:.1f} GB/s")
        return bw["gbps"]

    gbps = probe("start")
    workloads = build_workloads(args.quick, only, args.all_variants)
    if not args.all_variants:
        for shape in SHAPES:
            if shape.variants_note and any(w.shape is shape for w in workloads):
                report["notes"].append(f"{shape.name}: {shape.variants_note}")
    for wl in workloads:
        report["workloads"].append(
            run_workload(wl, peers, gbps * 1e9, args.repeats, args.budget, log)
        )

    if not args.no_memory and (not only or "memory" in only):
        log("memory (subprocesses)...")
        report["memory"] = measure.run_memory(args.quick)
        for mm in report["memory"]:
            log(
                f"  {mm['case']:<28} {mm['variant']:<18} peak/data {mm.get('peak_ratio')}"
                + (f" error {mm['error']}" if "error" in mm else "")
            )

    probe("end")
    best = max(b["gbps"] for b in report["bandwidth"])
    report["bandwidth_gbps"] = best
    # The limit uses the best bandwidth seen (the strictest limit); recompute the ratios.
    for record in report["workloads"]:
        record["limit_s"] = record["bytes_moved"] / (best * 1e9)
        if "sparse_bytes_moved" in record:
            record["sparse_limit_s"] = record["sparse_bytes_moved"] / (best * 1e9)
        for r in record["results"].values():
            if "median_s" in r:
                r["ratio_to_limit"] = r["median_s"] / record["limit_s"]
    machine["loadavg_end"] = measure.loadavg()
    for key, note in sorted(peers.notes.items()):
        report["notes"].append(f"peer {key}: {note}")
    records = report["workloads"] + targets.memory_records(report["memory"])
    report["targets"] = targets.evaluate(records, args.tolerance)
    report["summary"] = {
        s: sum(t["status"] == s for t in report["targets"]) for s in ("PASS", "MISS", "SKIP")
    }
    report["wall_s"] = time.perf_counter() - t_start
    return report


# --------------------------------------------------------------------------------------------
# The printed report
# --------------------------------------------------------------------------------------------


def _fmt_x(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:.2g}"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    m = report["machine"]
    lines = [
        f"jrmsprop bench  ({'quick' if report['quick'] else 'full'}, repeats={report['repeats']})",
        f"machine: {m['cpu_model']}, {m['cores_available']} cores, "
        f"{(m['mem_total_bytes'] or 0) / 2**30:.0f} GiB, load {m['loadavg_start']} -> "
        f"{m.get('loadavg_end')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v is not None),
        "bandwidth (donated axpy, 12 B/elem): "
        + ", ".join(f"{b['when']} {b['gbps']:.1f} GB/s" for b in report["bandwidth"])
        + f"; limit uses {report['bandwidth_gbps']:.1f} GB/s (the best)",
    ]
    for wl in report["workloads"]:
        sparse_limit = wl.get("sparse_limit_s")
        lines += [
            "",
            f"== {wl['name']}: {wl['n_params']:,} params in {wl['n_leaves']} leaves, "
            f"{wl['bytes_per_param']} B/param, limit {wl['limit_s'] * 1e3:.3f} ms"
            + (f", sparse limit {sparse_limit * 1e3:.3f} ms" if sparse_limit is not None else ""),
        ]
        ref_mode = "jrmsprop/jit_donated" if wl["kind"] == "dense" else "jrmsprop/sparse_jit"
        ref = wl["results"].get(ref_mode, {}).get("median_s")
        lines.append(
            f"   {'mode':<26} {'median ms':>10} {'x limit':>8} {'x ' + ref_mode.split('/')[1]:>16}"
            f" {'1st call s':>10} {'n':>3} {'XLA B/param':>11} {'XLA temp MiB':>12}"
        )
        for mode, r in wl["results"].items():
            if "skipped" in r:
                lines.append(f"   {mode:<26} {'skip':>10}  ({r['skipped']})")
                continue
            med = r["median_s"]
            bpp, temp = r.get("xla_bytes_per_param"), r.get("xla_temp_bytes")
            lines.append(
                f"   {mode:<26} {med * 1e3:10.3f} {_fmt_x(med / wl['limit_s']):>8} "
                f"{_fmt_x(med / ref if ref else None):>16} {r['first_call_s']:>10.2f} "
                f"{r['n']:>3} {'' if bpp is None else f'{bpp:.1f}':>11} "
                f"{'' if temp is None else f'{temp / 2**20:.2f}':>12}".rstrip()
            )
    if report.get("memory"):
        lines += [
            "",
            "== memory: peak RSS growth during one warm step, fresh subprocess each",
            f"   {'case':<28} {'variant':<18} {'data MiB':>9} {'extra MiB':>10} {'peak/data':>9}",
        ]
        for mm in report["memory"]:
            if "error" in mm:
                lines.append(f"   {mm['case']:<28} {mm['variant']:<18} error: {mm['error']}")
                continue
            extra = mm["extra_bytes"]
            lines.append(
                f"   {mm['case']:<28} {mm['variant']:<18} {mm['data_bytes'] / 2**20:>9.1f} "
                f"{'-' if extra is None else f'{extra / 2**20:10.1f}'} "
                f"{_fmt_x(mm['peak_ratio']):>9}"
            )
    width = max([24] + [len(t["id"]) for t in report["targets"]])
    lines += [
        "",
        "== targets",
        f"   {'target':<{width}} {'workload':<48} {'value':>8} {'goal':>8}  status",
    ]
    for t in report["targets"]:
        goal = f"{t['op']} {t['threshold']:g}"
        lines.append(
            f"   {t['id']:<{width}} {t['workload']:<48} {_fmt_x(t['value']):>8} {goal:>8}  "
            f"{t['status']}" + (f"  ({t['note']})" if t["note"] and t["status"] != "PASS" else "")
        )
    counts = report["summary"]
    lines.append(f"   PASS {counts['PASS']}, MISS {counts['MISS']}, SKIP {counts['SKIP']}")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jrmsprop bench",
        description=(
            "Time jrmsprop against optax, Keras 3 (JAX backend), torch.optim.RMSprop(foreach) and "
            "tf_keras.optimizers.legacy.RMSprop on the same inputs, in one process; print a "
            "table with PASS/MISS per target and write JSON. Ships with the source checkout "
            "(benchmarks/), not with the wheel."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--json",
        metavar="PATH",
        default="jrmsprop-bench.json",
        help="where to write the JSON report ('' for nowhere; default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        metavar="WORKLOAD",
        default="",
        help=(
            "comma-separated substrings of workload names to run (e.g. 'dense16m_1leaf', "
            "'small4096x256/plain', 'embedding'); 'memory' selects the memory check. "
            "Workloads: " + ", ".join(s.name for s in SHAPES) + "; variants: " + ", ".join(VARIANTS)
        ),
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per mode (median)")
    parser.add_argument(
        "--budget",
        type=float,
        default=2.0,
        help="seconds per mode after which sampling stops (once 3 samples exist)",
    )
    parser.add_argument(
        "--peers",
        default="all",
        help="comma-separated peers to run: " + ", ".join(PEER_NAMES) + " (default: all)",
    )
    parser.add_argument(
        "--all-variants", action="store_true", help="all four variants on every workload (slow)"
    )
    parser.add_argument(
        "--slow", action="store_true", help="also trace tf.function over >1024 variables"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="noise tolerance of the 'no slower than' targets (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jrmsprop bench [options]``; returns 0 (MISSes are reported, not errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget must be > 0 seconds (and finite), got {args.budget}")
    unknown = _peers(args.peers) - set(PEER_NAMES)
    if unknown:
        parser.error(f"--peers: unknown peer(s) {sorted(unknown)}; known: {', '.join(PEER_NAMES)}")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        parser.error(f"--tolerance must be >= 0 (and finite), got {args.tolerance}")
    only = _only(args.only)
    names = [wl.name for wl in build_workloads(args.quick, [], args.all_variants)]
    unmatched = [s for s in only if s != "memory" and not any(s in name for name in names)]
    if unmatched:
        hint = "" if args.all_variants else " (add --all-variants for the other variants)"
        parser.error(
            f"--only: {', '.join(map(repr, unmatched))} "
            f"{'matches' if len(unmatched) == 1 else 'match'} no workload; valid names "
            f"(or any part of one): {', '.join(names)}, memory{hint}"
        )
    if "memory" in only and args.no_memory:
        parser.error("--only memory selects the memory check, which --no-memory skips")
    if args.json:
        why = unwritable_reason(args.json)
        if why:
            parser.error(f"--json {args.json}: {why}")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    report = run_benchmark(args, log)
    print(format_report(report))
    if args.json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        except OSError as e:  # checked up front, but the disk can fill or the folder go
            print(f"jrmsprop bench: could not write --json {args.json}: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.json}")
    return 0
