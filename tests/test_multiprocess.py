"""Beyond one machine: training on JAX's own multi-process runtime, resumed in another layout.

Two processes on localhost (``jax.distributed.initialize``, CPU collectives over gloo), 2 CPU
devices each, shard the parameters and the RMSprop state over all 4 devices, train and checkpoint
with orbax (each process writes its shards). A single process with 3 devices restores that
checkpoint into its own sharding and trains on; its numbers must equal, bit for bit, those of an
uninterrupted run on 1 device, both at the checkpoint and at the end. The processes run
tests/multiprocess_worker.py, the code docs/guides/multi_host.md shows.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import multiprocess_worker as worker
import numpy as np
import pytest

WORKER = Path(worker.__file__).resolve()
TIMEOUT_S = 240  # per group of processes; they are killed past it (a lone worker would hang)
TRAIN_DEVICES, PROCESSES, RESUME_DEVICES, REFERENCE_DEVICES = 2, 2, 3, 1

PAGE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "multi_host.md"

needs_cpu_collectives = pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values or sys.platform == "win32",
    reason=f"jax {jax.__version__} on {sys.platform}: no CPU collectives (gloo), no multi-process",
)
needs_orbax = pytest.mark.skipif(
    importlib.util.find_spec("orbax") is None
    or importlib.util.find_spec("orbax.checkpoint") is None,
    reason="needs orbax-checkpoint",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """The test's environment minus the suite's 8 simulated devices: each worker sets its own."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "xla_force_host_platform_device_count" not in f)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(commands: dict[str, list[str]], logs: Path) -> None:
    """Starts the commands together; fails (with every log) if one fails or all take too long.

    A failing process gets the others killed at once: a lone multi-process worker would
    otherwise wait in a collective or a barrier until its own timeouts.
    """
    procs = {}
    for name, args in commands.items():
        log = (logs / f"{name}.log").open("w")
        cmd = [sys.executable, str(WORKER), *args]
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env()), log)
    deadline = time.monotonic() + TIMEOUT_S
    problem = None
    try:
        while None in [p.poll() for p, _ in procs.values()]:  # a list: poll every one
            failed = [n for n, (p, _) in procs.items() if p.returncode not in (None, 0)]
            if failed:
                problem = f"{', '.join(failed)} failed"
                break
            if time.monotonic() > deadline:
                problem = f"timed out after {TIMEOUT_S} s"
                break
            time.sleep(0.1)
    finally:
        for p, log in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
    failed = [n for n, (p, _) in procs.items() if p.returncode != 0]
    if problem or failed:
        report = [f"{problem or ', '.join(failed) + ' failed'}; return codes:"]
        for name, (p, _) in procs.items():
            text = (logs / f"{name}.log").read_text()
            report.append(f"----- {name} (rc {p.returncode}) {' '.join(commands[name])}\n{text}")
        pytest.fail("\n".join(report), pytrace=False)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_page_shows_the_workers_code():
    """Every python block of docs/guides/multi_host.md is a run of lines of the worker."""
    source = _lines(WORKER.read_text())
    blocks = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), flags=re.M | re.S)
    assert len(blocks) >= 8, blocks
    for block in blocks:
        want = _lines(block)
        runs = (source[i : i + len(want)] for i in range(len(source) - len(want) + 1))
        assert want in runs, f"not in {WORKER.name} as one run of lines:\n{block}"


@pytest.mark.slow
@needs_cpu_collectives
@needs_orbax
def test_two_processes_checkpoint_resume_on_other_device_count(tmp_path):
    ckpt, ref, res = tmp_path / "ckpt", tmp_path / "reference.npz", tmp_path / "resumed.npz"
    port = _free_port()
    train = ["train", "--devices", str(TRAIN_DEVICES), "--port", str(port)]
    train += ["--num-processes", str(PROCESSES), "--ckpt", str(ckpt)]
    commands = {f"train{i}": [*train, "--process-id", str(i)] for i in range(PROCESSES)}
    # The uninterrupted run is independent of the others: it runs alongside the training.
    commands["reference"] = ["reference", "--devices", str(REFERENCE_DEVICES), "--out", str(ref)]
    _run(commands, tmp_path)
    assert (ckpt / "_CHECKPOINT_METADATA").exists(), sorted(p.name for p in tmp_path.iterdir())

    resume = ["resume", "--devices", str(RESUME_DEVICES), "--ckpt", str(ckpt), "--out", str(res)]
    _run({"resume": resume}, tmp_path)

    with np.load(ref) as reference, np.load(res) as resumed:
        assert sorted(resumed.files) == sorted(reference.files)
        slots = {f"final/opt_state/{s}/{p}" for s in ("rms", "momentum", "mg") for p in "wb"}
        assert slots <= set(reference.files), reference.files  # every slot went through orbax
        steps = worker.STEPS_BEFORE + worker.STEPS_AFTER
        assert reference["restored/opt_state/count"] == worker.STEPS_BEFORE
        assert reference["final/opt_state/count"] == steps
        # At the checkpoint (4 devices over 2 processes vs 1 device), then after resuming on 3.
        for key in sorted(reference.files):
            np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key, strict=True)
        assert not np.array_equal(reference["final/params/w"], reference["restored/params/w"])
