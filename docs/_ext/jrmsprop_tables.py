"""Tables of the docs generated from the code and the data, so that they cannot go stale.

At ``builder-inited`` this writes MyST snippets under ``docs/_generated/`` (git-ignored), which
the pages ``{include}``:

* ``presets_table.md``: the porting table, from the presets' signatures (argument names and
  defaults) and the framework rules they pass to the core (``jrmsprop._src.arithmetic.Rule``).
* ``golden_*.md``: jrmsprop against the golden files recorded from the real frameworks, replayed
  now (``tests/golden/deviation_table.py``, about a minute; cached in ``docs/_generated/`` under
  a hash of the package, the golden files and the replay code), with the tolerances of
  ``tests/golden_io.py``.
* ``benchmark_*.md``: the last full benchmark run, from ``benchmarks/results/latest.json``, with
  the modes and targets of the current harness (``benchmarks/run.py``).

Run it by hand with ``python docs/_ext/jrmsprop_tables.py`` to print the snippets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"

# ---- the presets table ---------------------------------------------------------------------

# (column heading, the jrmsprop entry point as written in code); the frameworks' own names.
PRESETS = (
    ("TF 2.x Keras", "rmsprop"),
    ("Keras 3", "compat.keras3"),
    ("PyTorch", "compat.torch"),
    ("TF1", "compat.tf1"),
    ("optax", "compat.optax_rmsprop"),
)


def _rules() -> dict[str, Any]:
    """Every framework rule defined in the package, by its ``framework`` name (= the preset)."""
    import jrmsprop.compat
    from jrmsprop._src import arithmetic, transform

    rules = {}
    for module in (transform, jrmsprop.compat):
        for value in vars(module).values():
            if isinstance(value, arithmetic.Rule):
                rules[value.framework] = value
    missing = [name for _, name in PRESETS if name not in rules]
    if missing:
        raise RuntimeError(
            f"docs/_ext/jrmsprop_tables.py: no arithmetic.Rule with framework {missing} in "
            "jrmsprop._src.transform or jrmsprop.compat; update PRESETS"
        )
    return rules


def _function(name: str) -> Callable[..., Any]:
    import jrmsprop

    obj: Any = jrmsprop
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _default(parameters: dict[str, inspect.Parameter], name: str) -> str:
    p = parameters[name]
    if p.default is inspect.Parameter.empty:
        return f"`{name}` (required)"
    return f"`{name}={p.default!r}`"


def presets_table() -> str:
    rules = _rules()
    columns = []
    for _, preset in PRESETS:
        rule, fn = rules[preset], _function(preset)
        params = inspect.signature(fn).parameters
        lr_name = next(iter(params))  # the first argument is the learning rate everywhere
        rho_name, eps_name = rule.user_name("rho"), rule.user_name("epsilon")
        has_decay_arg = "decay" in params and rho_name != "decay"
        if "eps_in_sqrt" in params:
            eps = f"`eps_in_sqrt={params['eps_in_sqrt'].default!r}`: inside √ unless False"
        elif rule.eps_in_sqrt is None:
            eps = "outside √ without momentum, **inside** with it"
        else:
            eps = "inside √" if rule.eps_in_sqrt else "outside √"
        if "initial_scale" in params:
            rms0 = f"`initial_scale` ({params['initial_scale'].default!r})"
        else:
            rms0 = f"**{rule.initial_rms:g}**" if rule.initial_rms else f"{rule.initial_rms:g}"
        weight_decay = {
            "none": "— (chain `optax.add_decayed_weights`)",
            "coupled": "coupled L2: `g += wd·p`",
            "decoupled": "decoupled: `p −= p·wd·lr`, before the step",
        }[rule.weight_decay]
        columns.append(
            {
                "jrmsprop": f"`{preset}`",
                "learning rate": _default(params, lr_name),
                "decay of the averages (ρ)": _default(params, rho_name),
                "ε": _default(params, eps_name),
                "momentum": _default(params, "momentum"),
                "where ε goes": eps,
                "where lr goes": (
                    "inside the momentum buffer"
                    if rule.lr_in_momentum
                    else "**outside**: `p −= lr·buf`"
                ),
                "momentum buffer": (
                    "always (also for momentum 0)"
                    if rule.momentum_slot
                    else "when momentum is not 0 (or a schedule or array)"
                ),
                "rms starts at": rms0,
                "`1 − ρ` computed": (
                    "in double, from a Python ρ"
                    if rule.one_minus_rho_in_double
                    else "in the compute dtype (float32 for float32 parameters)"
                ),
                "weight decay": weight_decay,
                "learning-rate decay": (
                    "`decay=`: `lr / (1 + decay·t)`, or a schedule"
                    if has_decay_arg
                    else "a schedule"
                ),
                "complex parameters": (
                    "two real ones (`view_as_real`)"
                    if rule.complex_as_real
                    else "\\|g\\|², real `rms`"
                ),
            }
        )
    heads = [""] + [framework for framework, _ in PRESETS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in columns[0]:
        lines.append("| " + " | ".join([row] + [c[row] for c in columns]) + " |")
    return "\n".join(lines) + "\n"


# ---- the extras -----------------------------------------------------------------------------

EXTRA_PURPOSES = {
    "keras": "`jrmsprop.keras.RMSprop`, the TF 2.x arithmetic for Keras 3's `model.compile`",
    "h5": "weights and optimizer state from saved `.h5` / `.keras` / `.safetensors` files",
    "demo": "`benchmarks/demo.py` and the notebooks",
    "test": "the test suite (with `demo`: the notebooks are tests too)",
    "docs": "building this documentation",
    "bench": "the peers that `benchmarks/run.py` times jrmsprop against",
    "frameworks": "the real frameworks: the golden-file generators and the live parity tests",
}


def extras_table() -> str:
    """``pip install -e '.[extra]'``: what for, and what it installs (from pyproject.toml)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [
        "| extra | for | installs |",
        "|---|---|---|",
        f"| *(none)* | jrmsprop itself | {', '.join(f'`{d}`' for d in project['dependencies'])} |",
    ]
    for extra, deps in project.get("optional-dependencies", {}).items():
        purpose = EXTRA_PURPOSES.get(extra, "")
        lines.append(f"| `{extra}` | {purpose} | {', '.join(f'`{d}`' for d in deps)} |")
    return "\n".join(lines) + "\n"


# ---- the benchmark tables ------------------------------------------------------------------

VARIANT_NAMES = {
    "plain": "plain",
    "momentum": "momentum",
    "centered": "centered",
    "centered_momentum": "centered + momentum",
}


def _harness() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import benchmarks.run as harness

    return harness


def _report() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _ratio(x: float) -> str:
    return f"{x:.2g}" if x < 0.1 else f"{x:.2f}"


def benchmark_machine() -> str:
    report = _report()
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    bw = " / ".join(f"{b['gbps']:.1f}" for b in report["bandwidth"])
    s = report["summary"]
    gib = m["mem_total_bytes"] / 2**30
    lines = [
        f"* **Machine:** {m['cpu_model']}, {m['cores_available']} cores, {gib:.0f} GiB, "
        f"JAX backend `{m['jax_backend']}`; Python {m['python']}.",
        f"* **Versions:** {versions}.",
        f"* **Memory bandwidth** (donated `y = a·x + y`, start / end of the run): {bw} GB/s; "
        f"the limits use {report['bandwidth_gbps']:.1f} GB/s.",
        f"* **Verdicts:** {s.get('PASS', 0)} PASS, {s.get('MISS', 0)} MISS, "
        f"{s.get('SKIP', 0)} SKIP; the run took {report['wall_s'] / 60:.0f} min.",
    ]
    lines += [f"* *Note:* {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def benchmark_steps() -> str:
    """Per parameter layout: the median step of every mode, ms and × the bandwidth limit."""
    harness, report = _harness(), _report()
    modes = [m.row for m in (*harness.DENSE_MODES, *harness.EMBEDDING_MODES)]
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for w in report["workloads"]:
        by_shape.setdefault(w["shape"], []).append(w)
    out, dropped = [], set()
    for shape in harness.SHAPES:
        records = by_shape.get(shape.name)
        if not records:
            continue
        first = records[0]
        out.append(f"### `{shape.name}`\n")
        leaves = f"{first['n_leaves']} leaf" + ("s" if first["n_leaves"] != 1 else "")
        out.append(
            f"{first['description']}: {first['n_params']:,} parameters in {leaves}. "
            "Median step in ms (× the bandwidth limit).\n"
        )
        heads = ["mode"] + [VARIANT_NAMES.get(r["variant"], r["variant"]) for r in records]
        limits = ["*bandwidth limit*"] + [f"*{_ms(r['limit_s'])}*" for r in records]
        rows = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        rows.append("| " + " | ".join(limits) + " |")
        present = {row for r in records for row in r["results"]}
        dropped |= present - set(modes)
        for mode in dict.fromkeys(modes):
            if mode not in present:
                continue
            cells = []
            for r in records:
                res = r["results"].get(mode)
                if not res or "median_s" not in res:
                    cells.append("—")
                else:
                    cells.append(f"{_ms(res['median_s'])} ({res['median_s'] / r['limit_s']:.2f}×)")
            if any(c != "—" for c in cells):
                rows.append(f"| `{mode}` | " + " | ".join(cells) + " |")
        out.append("\n".join(rows) + "\n")
    if dropped:
        out.append(
            f"*Left out: {len(dropped)} mode(s) of the recorded run that the current harness no "
            f"longer runs ({', '.join(f'`{d}`' for d in sorted(dropped))}).*\n"
        )
    return "\n".join(out)


def benchmark_targets(ids: tuple[str, ...] = ()) -> str:
    """The targets of the current harness (``ids``: only those), with the recorded values
    grouped by layout."""
    harness, report = _harness(), _report()
    goals = {}
    for t in harness.TARGETS:
        goals.setdefault(t.id, t)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in report["targets"]:
        if rec["id"] not in goals or (ids and rec["id"] not in ids):
            continue
        parts = rec["workload"].split("/")
        shape = "/".join(parts[:-1]) if len(parts) > 1 else parts[0]
        groups.setdefault((rec["id"], shape), []).append(rec)
    order = list(goals)
    rows = [
        "| target | goal | layout | value (per variant) | verdict |",
        "|---|---|---|---|---|",
    ]
    for (tid, shape), recs in sorted(groups.items(), key=lambda kv: order.index(kv[0][0])):
        t = goals[tid]
        threshold = t.threshold
        if threshold == harness.NO_SLOWER:
            threshold = f"1 (+{report.get('tolerance', harness.TOLERANCE):.0%} noise)"
        values = " / ".join("—" if r["value"] is None else _ratio(r["value"]) for r in recs)
        verdicts = [r["status"] for r in recs]
        verdict = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
        if len(set(verdicts)) == 1:
            verdict = verdicts[0]
        desc = recs[0]["description"]
        layout = shape.removeprefix("memory/")
        op = {"<=": "≤", ">=": "≥"}.get(t.op, t.op)
        goal = threshold if isinstance(threshold, str) else f"{threshold:g}"
        rows.append(f"| {desc} | {op} {goal} | `{layout}` | {values} | {verdict} |")
    dropped = sorted({rec["id"] for rec in report["targets"]} - set(goals))
    if dropped and not ids:
        rows.append(
            f"\n*Left out: {len(dropped)} target(s) of the recorded run that the current harness "
            f"no longer has ({', '.join(f'`{d}`' for d in dropped)}).*"
        )
    return "\n".join(rows) + "\n"


# ---- the golden-file tables -----------------------------------------------------------------

GOLDEN_LABELS = {
    "keras2": "TF 2.x Keras (`rmsprop`)",
    "keras3": "Keras 3 (`compat.keras3`)",
    "tf1": "TF1 (`compat.tf1`)",
    "torch": "PyTorch (`compat.torch`)",
}


def _golden_inputs() -> list[Path]:
    tests = ROOT / "tests"
    files = sorted((ROOT / "jrmsprop").rglob("*.py")) + sorted((ROOT / "jrmsprop").rglob("*.cc"))
    files += [tests / "golden_io.py", tests / "golden" / "deviation_table.py"]
    return files + sorted((tests / "golden").glob("*.npz"))


def _golden_rows() -> tuple[list[str], list[list[str]]]:
    """``deviation_table``'s header and rows, replayed now or read from the cache."""
    digest = hashlib.sha256()
    for path in _golden_inputs():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    cache = GENERATED / "golden_cache.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == digest.hexdigest():
            return cached["header"], cached["rows"]
    script = ROOT / "tests" / "golden" / "deviation_table.py"
    spec = importlib.util.spec_from_file_location("_jrmsprop_deviation_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    header, rows = list(module.HEADER), module.rows()
    GENERATED.mkdir(exist_ok=True)
    cache.write_text(json.dumps({"key": digest.hexdigest(), "header": header, "rows": rows}))
    return header, rows


def _golden_tolerances() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import golden_io
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return golden_io


def golden_summary() -> str:
    header, rows = _golden_rows()
    gio = _golden_tolerances()
    col = {name: header.index(name) for name in header}
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for row in rows:
        config = row[col["configuration"]]
        kind = (
            "state transfer, then the rest of the run"
            if "state transfer" in config
            else "sparse `IndexedSlices`, repeated indices"
            if "**sparse**" in config
            else "with `weight_decay`"
            if row[0] == "keras3" and "weight_decay=" in config
            else "dense"
        )
        groups.setdefault((row[0], kind), []).append(row)
    lines = [
        "| framework (preset) | cases | bit for bit | max deviation / scale | worst / tolerance "
        "| tolerance |",
        "|---|---|---|---|---|---|",
    ]
    for (framework, kind), members in groups.items():
        devs = [float(r[col["max abs dev / scale"]]) for r in members]
        slots = [float(r[col["slots max dev / scale"]]) for r in members]
        worst = max(float(r[col["worst / tolerance"]]) for r in members)
        exact = sum(d == 0 and s == 0 for d, s in zip(devs, slots, strict=True))
        label = GOLDEN_LABELS.get(framework, framework)
        tol = f"{gio.atol_for(framework):.0e}·scale + {gio.RTOL:.0e}·\\|p\\|"
        dev = "**0**" if max(devs) == 0 else f"{max(devs):.1e}"
        lines.append(
            f"| {label}, {kind} | {len(members)} | {exact} | {dev} | {worst:.2f} | {tol} |"
        )
    worst_all = max(float(r[col["max abs dev / scale"]]) for r in rows)
    lines.append(f"\n{len(rows)} cases; the largest deviation / scale of any: {worst_all:.2e}.")
    return "\n".join(lines) + "\n"


def golden_cases() -> str:
    header, rows = _golden_rows()
    keep = [
        "framework", "configuration", "steps", "max abs dev / scale", "worst / tolerance",
        "slots max dev / scale",
    ]  # fmt: skip
    idx = [header.index(k) for k in keep]
    lines = ["| " + " | ".join(keep) + " |", "|" + "---|" * len(keep)]
    for row in rows:
        cells = [row[i] for i in idx]
        cells[1] = cells[1].replace("**", "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SNIPPETS: dict[str, Callable[[], str]] = {
    "extras_table.md": extras_table,
    "golden_summary.md": golden_summary,
    "golden_cases.md": golden_cases,
    "presets_table.md": presets_table,
    "benchmark_machine.md": benchmark_machine,
    "benchmark_steps.md": benchmark_steps,
    "benchmark_targets.md": benchmark_targets,
    "benchmark_packing.md": lambda: benchmark_targets(
        (
            "leaves_vs_flat",
            "packed_params_vs_flat",
            "compile_vs_optax",
            "packed_params_compile_vs_optax",
            "packed_fused_vs_limit",
        )
    ),  # fmt: skip
}


def write_all() -> None:
    GENERATED.mkdir(exist_ok=True)
    for name, make in SNIPPETS.items():
        text = "<!-- generated by docs/_ext/jrmsprop_tables.py: do not edit -->\n\n" + make()
        path = GENERATED / name
        if not path.exists() or path.read_text() != text:  # unchanged: no rebuild
            path.write_text(text)


def public_names() -> list[str]:
    """Every public name: ``jrmsprop.__all__``, ``jrmsprop.compat.__all__``, ``jrmsprop.keras``."""
    import jrmsprop
    import jrmsprop.compat

    names = [f"jrmsprop.{n}" for n in jrmsprop.__all__ if n != "compat"]
    names += [f"jrmsprop.compat.{n}" for n in jrmsprop.compat.__all__]
    return names + ["jrmsprop.keras.RMSprop"]


def check_api_coverage(app: Any, env: Any) -> None:
    """A warning (an error under ``-W``) for each public name without an API reference entry."""
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    for name in public_names():
        if name not in documented:
            logging.getLogger(__name__).warning(
                "public name %s has no entry in the API reference (docs/api.md)", name
            )


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: write_all())
    app.connect("env-check-consistency", check_api_coverage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for name, make in SNIPPETS.items():
        print(f"==> {name}\n{make()}")
