"""Smoke tests of the benchmark harness (``benchmarks/``, run by ``python -m jrmsprop bench``).

No timing is asserted (timings depend on the machine): a ``--quick`` run must finish, write a
JSON report with the documented schema, and every reported number must be finite and positive.
The target table is judged on synthetic records with known answers, and XLA's cost analysis (the
bytes-moved column) is checked on programs whose traffic is known exactly.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jrmsprop import __main__ as cli

harness = cli.load_benchmark()  # the checkout's benchmarks.harness (tests run from a checkout)

from benchmarks import (  # noqa: E402
    compile_probe,
    measure,
    modes,
    packed_params_probe,
    targets,
    workloads,
)

ROOT = Path(__file__).resolve().parent.parent


def _finite_positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_report(report: dict) -> None:
    assert report["schema"] == harness.SCHEMA
    machine = report["machine"]
    assert machine["cores_available"] >= 1
    assert machine["versions"]["jax"] and machine["versions"]["optax"]
    assert [b["when"] for b in report["bandwidth"]] == ["start", "end"]
    assert all(_finite_positive(b["gbps"]) for b in report["bandwidth"])
    assert report["bandwidth_gbps"] == max(b["gbps"] for b in report["bandwidth"])
    assert report["workloads"]
    for wl in report["workloads"]:
        assert wl["bytes_per_param"] == workloads.BYTES_PER_PARAM[wl["variant"]]
        assert wl["bytes_moved"] == wl["bytes_per_param"] * wl["n_params"]
        assert wl["limit_s"] == pytest.approx(wl["bytes_moved"] / (report["bandwidth_gbps"] * 1e9))
        for mode, r in wl["results"].items():
            if "skipped" in r:
                assert isinstance(r["skipped"], str) and r["skipped"], mode
                assert not r["skipped"].startswith("error"), (wl["name"], mode, r["skipped"])
                continue
            assert r["n"] == len(r["samples_s"]) >= 1
            assert all(_finite_positive(t) for t in r["samples_s"])
            for key in ("median_s", "min_s", "max_s", "first_call_s", "ratio_to_limit"):
                assert _finite_positive(r[key]), (wl["name"], mode, key)
            assert r["min_s"] <= r["median_s"] <= r["max_s"]
            # compared by a compile-time target on many leaves: the best of two first calls
            twice = mode in harness.RECOMPILED and wl["n_leaves"] > 1
            assert len(r["first_calls_s"]) == (2 if twice else 1), (wl["name"], mode)
            assert r["first_call_s"] == min(r["first_calls_s"])
    for t in report["targets"]:
        assert t["status"] in ("PASS", "MISS", "SKIP")
        if t["status"] != "SKIP":
            assert _finite_positive(t["value"]), t
    assert sum(report["summary"].values()) == len(report["targets"])


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--peers", "optax", "--repeats", "2", "--budget", "0.05"]
    argv += ["--only", "dense16m_1leaf/plain", "--no-memory"]
    assert harness.main([*argv, "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    _check_report(report)
    by_name = {wl["name"]: wl for wl in report["workloads"]}
    assert set(by_name) == {"dense16m_1leaf/plain"}

    dense = by_name["dense16m_1leaf/plain"]["results"]
    # jrmsprop's own modes always run; optax was requested; the other peers were not.
    for mode in ("jrmsprop/jit_donated", "jrmsprop/eager_update", "jrmsprop/apply_gradients"):
        assert "median_s" in dense[mode], mode
    assert "median_s" in dense["optax/jit_donated"] and "median_s" in dense["optax/eager_update"]
    assert dense["torch/foreach"] == {"skipped": "not requested (--peers)"}
    assert dense["jrmsprop/jit_flat"] == {"skipped": "single leaf: already flat"}
    # XLA's count for the compiled plain step: never below the 20 bytes/param it must move, and
    # the same program as optax's (same arithmetic, same fusion).
    jit, optax_jit = dense["jrmsprop/jit_donated"], dense["optax/jit_donated"]
    assert jit["xla_bytes_per_param"] >= 20
    assert jit["xla_bytes_per_param"] == pytest.approx(optax_jit["xla_bytes_per_param"], rel=0.01)

    ids = {(t["id"], t["workload"]) for t in report["targets"]}
    assert ("jit_vs_limit", "dense16m_1leaf/plain") in ids
    assert ("compile_vs_optax", "dense16m_1leaf/plain") not in ids  # many-leaf workloads only
    statuses = {(t["id"], t["workload"]): t["status"] for t in report["targets"]}
    assert statuses[("apply_vs_torch", "dense16m_1leaf/plain")] == "SKIP"  # torch not requested
    printed = capsys.readouterr().out
    assert "== targets" in printed and "jit_vs_optax" in printed and "XLA B/param" in printed


@pytest.mark.slow
def test_quick_run_many_leaves_embedding_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--peers", "optax", "--repeats", "2", "--budget", "0.05", "--only"]
    argv += ["dense16m_512leaves/centered_momentum,small4096x256/plain,embedding1m/momentum,memory"]
    assert harness.main([*argv, "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    _check_report(report)
    by_name = {wl["name"]: wl for wl in report["workloads"]}
    assert set(by_name) == {
        "dense16m_512leaves/centered_momentum",
        "small4096x256/plain",
        "embedding1m/momentum",
    }
    emb = by_name["embedding1m/momentum"]
    res = emb["results"]
    for mode in ("jrmsprop/sparse_jit", "jrmsprop/dense_jit", "jrmsprop/apply_gradients"):
        assert "median_s" in res[mode], mode
    # With momentum the sparse step touches only the named rows: XLA allocates no table-sized
    # scratch buffer (the table is 1 MiB at --quick size).
    table_bytes = 4 * emb["n_params"]
    assert res["jrmsprop/sparse_jit"]["xla_temp_bytes"] < 0.1 * table_bytes
    assert "xla_bytes_per_param" not in res["jrmsprop/sparse_jit"]  # an upper bound only
    assert emb["sparse_bytes_per_param"] == 0 and emb["rows_per_step"] == 64

    for wl in (by_name["dense16m_512leaves/centered_momentum"], by_name["small4096x256/plain"]):
        assert "median_s" in wl["results"]["jrmsprop/jit_flat"]
        assert "median_s" in wl["results"]["optax/jit_donated"]
        assert "median_s" in wl["results"]["jrmsprop/jit_packed_params"]
    statuses = {(t["id"], t["workload"]): t for t in report["targets"]}
    for shape in ("dense16m_512leaves/centered_momentum", "small4096x256/plain"):
        assert statuses[("compile_vs_optax", shape)]["status"] != "SKIP"
        assert statuses[("leaves_vs_flat", shape)]["status"] != "SKIP"
        assert statuses[("packed_params_vs_flat", shape)]["status"] != "SKIP"
    # Memory, in subprocesses: the non-donated method check must see params + rms extra.
    memory = {(m["case"], m["variant"]): m for m in report["memory"]}
    assert set(memory) == {(c, "plain") for c, v in measure.MEMORY_CASES if v == "plain"}
    for m in report["memory"]:
        assert "error" not in m, m
        assert _finite_positive(m["data_bytes"]) and m["peak_ratio"] >= 1.0
    not_donated = memory[("jrmsprop_jit_not_donated", "plain")]
    params_and_rms = 2 * 4 * not_donated["n_params"]
    assert not_donated["extra_bytes"] >= 0.9 * params_and_rms
    assert [t["workload"] for t in report["targets"] if t["id"] == "memory"] == [
        "memory/jrmsprop_jit_donated/plain",
        "memory/jrmsprop_apply_gradients/plain",
        "memory/optax_jit_donated/plain",
    ]


@pytest.mark.slow
@pytest.mark.frameworks
def test_quick_run_with_frameworks(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tf_keras")
    pytest.importorskip("keras")
    out = tmp_path / "bench.json"
    argv = ["--quick", "--repeats", "2", "--budget", "0.2", "--no-memory", "--quiet"]
    argv += ["--only", "dense16m_1leaf/momentum,embedding1m/momentum", "--json", str(out)]
    assert harness.main(argv) == 0
    report = json.loads(out.read_text())
    _check_report(report)
    dense = report["workloads"][0]["results"]
    for mode in ("keras3/apply", "torch/foreach", "tf_keras/eager", "tf_keras/tf_function"):
        assert "median_s" in dense[mode], (mode, dense[mode])
    sparse = report["workloads"][1]["results"]
    assert "median_s" in sparse["tf_keras/eager"], sparse["tf_keras/eager"]


def test_workload_selection():
    build = workloads.build_workloads
    quick = build(quick=True, only=[], all_variants=False)
    names = [w.name for w in quick]
    assert "dense16m_1leaf/centered_momentum" in names
    assert "small4096x256/plain" in names
    assert "small4096x256/momentum" not in names  # default plan: plain only (compile time)
    full = build(quick=False, only=["dense16m_512leaves"], all_variants=False)
    assert [w.variant for w in full] == list(workloads.VARIANTS)
    assert all(w.n_params == 1 << 24 and len(w.leaf_shapes) == 512 for w in full)
    one = build(quick=False, only=["dense16m_1leaf/plain"], all_variants=False)
    assert [w.n_params for w in one] == [4096 * 4096]
    assert len(build(quick=True, only=["small"], all_variants=True)) == 4
    emb = build(quick=False, only=["embedding1m/plain"], all_variants=False)
    assert emb[0].leaf_shapes == ((1_000_000, 64),) and emb[0].rows == 1024
    assert build(quick=True, only=["no-such-workload"], all_variants=True) == []


def test_modes_per_workload():
    rows = {
        w.shape.name: [m.row for m in modes.modes_for(w)]
        for w in workloads.build_workloads(quick=True, only=["plain"], all_variants=False)
    }
    # the fused-kernel rows on the 16M workloads, the packed rows on the many-leaf ones
    assert "jrmsprop/jit_fused" in rows["dense16m_1leaf"]
    assert "jrmsprop/jit_packed" not in rows["dense16m_1leaf"]
    assert "jrmsprop/jit_packed" in rows["small4096x256"]
    assert "jrmsprop/jit_fused" not in rows["small4096x256"]
    assert "jrmsprop/jit_packed_params" in rows["small4096x256"]
    assert "jrmsprop/jit_packed_params" in rows["dense16m_512leaves"]
    assert "jrmsprop/jit_packed_params" not in rows["dense16m_1leaf"]
    assert "jrmsprop/jit_packed_fused" in rows["dense16m_512leaves"]
    assert "jrmsprop/jit_packed_fused" not in rows["small4096x256"]
    assert rows["embedding1m"][:2] == ["jrmsprop/sparse_jit", "jrmsprop/dense_jit"]
    assert all(len(set(r)) == len(r) for r in rows.values())


def test_bytes_per_param():
    # read p, g, rms (+mom, +mg), write p, rms (+mom, +mg); float32
    assert workloads.BYTES_PER_PARAM == {
        "plain": 20,
        "momentum": 28,
        "centered": 28,
        "centered_momentum": 36,
    }


def _record(shape: str, times: dict[str, float], first: dict[str, float] | None = None) -> dict:
    first = first or {}
    return {
        "name": f"{shape}/plain",
        "shape": shape,
        "kind": "dense",
        "variant": "plain",
        "limit_s": 0.010,
        "results": {
            m: {"median_s": t, **({"first_call_s": first[m]} if m in first else {})}
            for m, t in times.items()
        },
    }


def test_targets_table():
    times = {
        "jrmsprop/jit_donated": 0.0115,  # 1.15x the 10 ms limit: PASS (<= 1.2)
        "optax/jit_donated": 0.0112,  # jrmsprop 2.7% slower: PASS within 5% tolerance
        "jrmsprop/apply_gradients": 0.016,  # 1.39x jit: MISS
        "torch/foreach": 0.030,  # apply 0.53x torch: PASS
        "tf_keras/eager": 0.050,
        "tf_keras/tf_function": 0.015,  # the faster TF mode; apply 1.07x: MISS
        "jrmsprop/eager_update": 0.031,
        "optax/eager_update": 0.100,  # 0.31 > 0.3: MISS
    }
    got = {t["id"]: t for t in targets.evaluate([_record("dense16m_1leaf", times)], tolerance=0.05)}
    assert {k: (t["status"], t["value"]) for k, t in got.items()} == {
        "jit_vs_limit": ("PASS", pytest.approx(1.15)),
        "jit_vs_optax": ("PASS", pytest.approx(0.0115 / 0.0112)),
        "apply_vs_jit": ("MISS", pytest.approx(0.016 / 0.0115)),
        "apply_vs_torch": ("PASS", pytest.approx(0.016 / 0.030)),
        "apply_vs_tf_keras": ("MISS", pytest.approx(0.016 / 0.015)),
        "eager_vs_optax": ("MISS", pytest.approx(0.31)),
        "fused_vs_xla": ("SKIP", None),  # no fused rows: SKIP, never PASS
        "fused_vs_limit": ("SKIP", None),
    }
    assert "vs tf_keras/tf_function" in got["apply_vs_tf_keras"]["note"]
    # No tolerance: 2.7% slower is a MISS.
    strict = {t["id"]: t["status"] for t in targets.evaluate([_record("dense16m_1leaf", times)], 0)}
    assert strict["jit_vs_optax"] == "MISS"


def test_targets_table_many_leaves_compile_and_options():
    times = {
        "jrmsprop/jit_donated": 0.024,
        "jrmsprop/jit_flat": 0.020,  # 1.2x flat: PASS (<= 1.3)
        "jrmsprop/jit_packed": 0.027,  # 1.35x flat: MISS
        "jrmsprop/jit_fused": 0.011,  # 1.1x limit: PASS; 0.46x the XLA step: PASS
        "jrmsprop/jit_xla": 0.024,
        "jrmsprop/jit_packed_params": 0.022,  # 1.1x flat: PASS
        "jrmsprop/jit_packed_fused": 0.013,  # 1.3x limit: MISS
        "optax/jit_donated": 0.024,
    }
    first = {
        "jrmsprop/jit_donated": 4.0,
        "optax/jit_donated": 5.0,
        "jrmsprop/jit_packed": 6.0,
        "jrmsprop/jit_packed_params": 0.5,
    }
    record = _record("dense16m_512leaves", times, first)
    got = {t["id"]: (t["status"], t["value"]) for t in targets.evaluate([record], 0.05)}
    assert got["jit_vs_limit"] == ("MISS", pytest.approx(2.4))
    assert got["compile_vs_optax"] == ("PASS", pytest.approx(0.8))
    assert got["leaves_vs_flat"] == ("PASS", pytest.approx(1.2))
    assert got["packed_vs_flat"] == ("MISS", pytest.approx(1.35))
    assert got["packed_compile_vs_optax"] == ("MISS", pytest.approx(1.2))
    assert got["fused_vs_xla"] == ("PASS", pytest.approx(0.011 / 0.024))
    assert got["fused_vs_limit"] == ("PASS", pytest.approx(1.1))
    assert got["packed_params_vs_flat"] == ("PASS", pytest.approx(1.1))
    assert got["packed_params_compile_vs_optax"] == ("PASS", pytest.approx(0.1))
    assert got["packed_fused_vs_limit"] == ("MISS", pytest.approx(1.3))
    assert "small_vs_torch" not in got  # only on the 4096-leaf workload


def test_targets_table_embedding_and_memory():
    record = {
        "name": "embedding1m/plain",
        "shape": "embedding1m",
        "kind": "embedding",
        "variant": "plain",
        "bytes_per_param": 20,
        "sparse_bytes_per_param": 8,
        "results": {
            "jrmsprop/sparse_jit": {"median_s": 0.009},
            "jrmsprop/dense_jit": {"median_s": 0.036},
            "optax/dense_jit": {"median_s": 0.035},
            "tf_keras/tf_function": {"median_s": 0.090},
        },
    }
    memory = targets.memory_records(
        [
            {"case": "jrmsprop_jit_donated", "variant": "plain", "peak_ratio": 1.02},
            {"case": "optax_jit_donated", "variant": "plain", "peak_ratio": 1.2},
            {"case": "jrmsprop_jit_not_donated", "variant": "plain", "peak_ratio": 1.67},
            {"case": "jrmsprop_apply_gradients", "variant": "plain", "error": "exit 1: boom"},
        ]
    )
    out = targets.evaluate([record, *memory], tolerance=0.05)
    got = {(t["id"], t["workload"]): t for t in out}
    sparse = got[("sparse_vs_dense", "embedding1m/plain")]
    assert (sparse["status"], sparse["value"]) == ("MISS", pytest.approx(4.0))
    assert "bounded by 20/8 bytes" in sparse["note"]
    assert got[("sparse_vs_tf", "embedding1m/plain")]["value"] == pytest.approx(0.1)
    assert got[("dense_vs_optax", "embedding1m/plain")]["status"] == "PASS"
    assert got[("apply_vs_jit", "embedding1m/plain")]["status"] == "SKIP"
    assert [(t["workload"], t["status"]) for t in out if t["id"] == "memory"] == [
        ("memory/jrmsprop_jit_donated/plain", "PASS"),
        ("memory/optax_jit_donated/plain", "MISS"),
        ("memory/jrmsprop_apply_gradients/plain", "SKIP"),  # the not-donated check is no target
    ]
    assert "boom" in got[("memory", "memory/jrmsprop_apply_gradients/plain")]["note"]


def test_xla_cost_of_a_known_program():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    n = 1 << 16
    axpy = jax.jit(lambda a, x, y: a * x + y, donate_argnums=2)
    x = jnp.ones((n,), jnp.float32)
    cost = measure.xla_cost(axpy.lower(jnp.float32(2.0), x, x + 1).compile())
    # One loop reading x and y and writing y in place: 12 bytes per element (+ the scalar a).
    assert cost["bytes_accessed"] == pytest.approx(12 * n, abs=64)
    assert cost["temp_bytes"] < 1024


def test_xla_cost_sees_a_table_copy():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rows, dim, k = 1 << 14, 16, 64
    table = jnp.zeros((rows, dim), jnp.float32)
    values = jnp.ones((k, dim), jnp.float32)
    indices = jnp.arange(k, dtype=jnp.int32)

    def scatter(t, v, i):
        return t.at[i].add(v, mode="drop")

    in_place = measure.xla_cost(
        jax.jit(scatter, donate_argnums=0).lower(table, values, indices).compile()
    )

    def read_old_after_update(t, v, i):
        new = scatter(t, v, i)
        return new, t[new[0, 0].astype(jnp.int32)]  # needs the old table after the update

    copying = measure.xla_cost(
        jax.jit(read_old_after_update, donate_argnums=0).lower(table, values, indices).compile()
    )
    assert in_place["temp_bytes"] < 0.1 * table.nbytes
    assert copying["temp_bytes"] >= table.nbytes  # XLA must keep a full copy of the old table


def test_cli_finds_the_checkout_harness():
    assert harness.__file__ == str(ROOT / "benchmarks" / "harness.py")
    assert cli.load_benchmark() is harness


def test_cli_bench_dispatches_to_the_harness(monkeypatch):
    calls = []
    monkeypatch.setattr(harness, "main", lambda argv: calls.append(list(argv)))
    assert cli.main(["bench", "--quick", "--only", "x"]) == 0  # a None return counts as success
    assert calls == [["--quick", "--only", "x"]]


def test_cli_without_a_checkout_says_so(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.load_benchmark(tmp_path)
    assert "ships with the source checkout, not the wheel" in str(exc.value.code)


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        harness.main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--budget", "0"], "--budget must be > 0 seconds"),
        (["--peers", "optax,mxnet"], "unknown peer(s) ['mxnet']"),
        (["--tolerance", "-1"], "--tolerance must be >= 0"),
        (["--budget", "nan"], "--budget must be > 0 seconds (and finite), got nan"),
        (["--budget", "inf"], "--budget must be > 0 seconds (and finite), got inf"),
        (["--tolerance", "nan"], "--tolerance must be >= 0 (and finite), got nan"),
        (["--tolerance", "inf"], "--tolerance must be >= 0 (and finite), got inf"),
        (["--only", "nosuch"], "--only: 'nosuch' matches no workload; valid names"),
        (["--only", "small,nosuch,zz"], "--only: 'nosuch', 'zz' match no workload"),
        (["--only", "memory", "--no-memory"], "--only memory selects the memory check"),
        (["--json", "/proc/jrmsprop-bench.json"], "--json /proc/jrmsprop-bench.json: cannot"),
    ],
)
def test_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        harness.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_only_error_lists_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exc:
        harness.main(["--only", "nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for name in ("dense16m_1leaf/plain", "small4096x256/plain", "embedding1m/momentum", "memory"):
        assert name in err
    # a variant only --all-variants plans is valid with it (checked, not run: --json is bad)
    with pytest.raises(SystemExit):
        harness.main(["--only", "small4096x256/centered", "--all-variants", "--json", "/proc/x"])
    assert "--json" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["dir", "file_parent", "proc"])
def test_unwritable_json_is_refused_before_the_run(where, tmp_path, monkeypatch, capsys):
    """A --json that cannot be written fails at once (rc 2), not after the run, which is skipped."""
    (tmp_path / "a_file").write_text("")
    path = {
        "dir": tmp_path,  # a folder, not a file
        "file_parent": tmp_path / "a_file" / "bench.json",  # its "folder" is a file
        "proc": Path("/proc/jrmsprop-bench.json"),  # the folder exists but takes no files
    }[where]
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    monkeypatch.setattr(harness, "run_benchmark", lambda *a: pytest.fail("ran the benchmark"))
    with pytest.raises(SystemExit) as exc:
        harness.main(["--quick", "--only", "small", "--json", str(path)])
    assert exc.value.code == 2
    assert f"--json {path}:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no probe files left


def test_json_in_new_folders_is_accepted_and_not_created_early(tmp_path, monkeypatch):
    out = tmp_path / "new" / "deeper" / "bench.json"
    seen = []

    def fake_run(args, log):
        seen.append(out.parent.exists())
        return {"fake": True}

    monkeypatch.setattr(harness, "run_benchmark", fake_run)
    monkeypatch.setattr(harness, "format_report", lambda report: "")
    assert harness.main(["--quick", "--only", "small", "--json", str(out)]) == 0
    assert seen == [False]  # checked, not made, before the run
    assert json.loads(out.read_text()) == {"fake": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_python_m_jrmsprop_bench_bad_json_is_a_clean_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jrmsprop", "bench", "--json", "/proc/x.json", "--only", "small"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--json /proc/x.json:" in proc.stderr and "Traceback" not in proc.stderr


def test_python_m_jrmsprop_bench_help_from_elsewhere(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jrmsprop", "bench", "--help"],
        cwd=tmp_path,  # not the checkout: the shim must find benchmarks/ from the package
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "not with the wheel" in proc.stdout


def test_compile_probe_reports_both_optimizers(capsys):
    """The compile probe times jrmsprop and optax on the same tree; bad arguments are refused."""
    best = compile_probe.probe(leaves=3, variant="centered_momentum", repeats=1)
    assert set(best) == {"jrmsprop", "optax"}
    assert all(t > 0 and c > 0 for t, c in best.values())
    assert compile_probe.main(["--leaves", "2", "--repeats", "1", "plain"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("2 leaves") and rows[2].split()[0] == "plain"
    assert len(rows[2].split()) == 6
    assert compile_probe.main(["--leaves", "2", "--repeats", "2", "--samples", "plain"]) == 0
    samples = [r.split() for r in capsys.readouterr().out.splitlines() if r.startswith("  ")]
    assert [r[1] for r in samples] == ["jrmsprop", "optax"] * 2  # alternating, in run order
    assert all(r[-1].endswith("k") for r in samples)  # with the page faults each took
    for argv in (["bogus"], ["--leaves", "0"]):
        with pytest.raises(SystemExit):
            compile_probe.main(argv)


def test_packed_params_probe_times_both_layouts(capsys):
    """The whole-training-step probe runs both models both ways; bad arguments are refused."""
    for model in packed_params_probe.MODELS:
        for packed in (False, True):
            compile_s, step_s = packed_params_probe.measure(model, 4, packed, steps=2)
            assert compile_s > 0 and step_s > 0
    assert packed_params_probe.main(["--model", "small", "--leaves", "3", "--steps", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and rows[1].split()[:2] == ["small", "3"]
    for argv in (["--model", "bogus"], ["--leaves", "1"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            packed_params_probe.main(argv)


def test_jit_vs_optax_probe_hands_each_slot_to_its_counterpart():
    """The probe's contestants take turns on one set of buffers: jrmsprop's rms / momentum / mg
    must become optax's nu / trace / mu (a swap would time a different computation)."""
    import jax.numpy as jnp

    import jrmsprop
    from benchmarks.probes import jit_vs_optax as probe

    params = [jnp.zeros(3), jnp.zeros(2)]
    ours = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True).init(params)
    ours = ours._replace(
        rms=[jnp.full(3, 1.0), jnp.full(2, 2.0)],
        momentum=[jnp.full(3, 3.0), jnp.full(2, 4.0)],
        mg=[jnp.full(3, 5.0), jnp.full(2, 6.0)],
    )
    theirs = probe.with_slots(modes.optax_tx(0.9, True).init(params), probe.slots_of(ours))
    stddev, _, trace = theirs
    assert stddev.nu[0] is ours.rms[0] and stddev.nu[1] is ours.rms[1]
    assert stddev.mu[0] is ours.mg[0] and stddev.mu[1] is ours.mg[1]
    assert trace.trace[0] is ours.momentum[0] and trace.trace[1] is ours.momentum[1]
    back = probe.with_slots(ours._replace(rms=None, mg=None, momentum=None), {})
    assert back.rms is None  # a state without slots passes through
    ids = {k: [id(a) for a in v] for k, v in probe.slots_of(ours).items()}
    assert {k: [id(a) for a in v] for k, v in probe.slots_of(theirs).items()} == ids


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_jit_vs_optax_probe_runs_against_a_baseline_revision():
    out = subprocess.run(
        [sys.executable, "benchmarks/probes/jit_vs_optax.py", "--size", "64", "--rounds", "1"]
        + ["--variants", "centered", "--baseline", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "jrmsprop/baseline" in out.stdout and out.stdout.startswith("centered ")
    bad = subprocess.run(
        [sys.executable, "benchmarks/probes/jit_vs_optax.py", "--variants", "sideways"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--variants: unknown ['sideways']" in bad.stderr
