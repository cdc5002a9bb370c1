"""The notebooks in ``notebooks/`` run top to bottom and are stored with their outputs.

Every ``*.ipynb`` there is checked twice: the committed file must carry the outputs of one clean
top-to-bottom run (readers on GitHub see the results), and re-executing it must succeed. Each
notebook ``assert``s its own numbers (bit-identical resume, equality with single-device training,
error below a baseline, ...), so a behaviour change in jrmsprop fails the re-execution.

``python tests/test_notebooks.py [NOTEBOOK ...]`` re-executes notebooks in place and saves them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("vega_datasets")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "jrmsprop-tests"

# Optional packages a notebook imports (beyond the ones imported above); it is skipped without them.
REQUIREMENTS = {
    "flax_and_equinox": ("flax", "equinox"),
    "save_and_restore": ("flax",),
    "transfer_learning": ("sklearn",),
}
# Per-cell execution limit, in seconds. Every notebook runs in well under 20 s on 2 idle CPU
# cores; the limits leave room for a loaded CI machine, and turn a hang into a failure.
TIMEOUTS = {"data_parallel": 240, "flax_and_equinox": 240}
DEFAULT_TIMEOUT = 180
# A line each notebook prints only after its last check passed.
EXPECTED_OUTPUT = {
    "quickstart": "test MAE",
    "porting_from_keras": "9.683772",
    "time_series_forecasting": "better than persistence on 2015",
    "custom_training_loop": "bit for bit",
    "save_and_restore": "RMSprop: resumed at step 120, variables and optimizer weights identical",
    "data_parallel": "sharded jit  vs single device after 200 steps",
    "flax_and_equinox": "Equinox: train MSE",
    "many_small_leaves": "state round trip: identical",
    "transfer_learning": "fine-tuning: validation accuracy",
}


def test_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert set(EXPECTED_OUTPUT) <= names
    assert names <= set(EXPECTED_OUTPUT), "a new notebook needs its line in EXPECTED_OUTPUT"


@contextlib.contextmanager
def kernelspec_for_this_python() -> Iterator[str]:
    """A temporary kernelspec that runs this very interpreter, so the kernel imports this jrmsprop.

    (A user-level ``python3`` kernelspec could otherwise point at another environment.)
    """
    previous = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        os.environ["JUPYTER_PATH"] = tmp
        try:
            yield KERNEL
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous


def execute(nb, workdir: Path, timeout: int) -> None:
    """Runs every cell of ``nb`` in a fresh kernel (in ``workdir``); raises on any failing cell."""
    with kernelspec_for_this_python() as kernel:
        nbclient.NotebookClient(
            nb,
            timeout=timeout,
            startup_timeout=120,
            kernel_name=kernel,
            resources={"metadata": {"path": str(workdir)}},
        ).execute()
    # Store the generic kernelspec, not the temporary one.
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }


def _missing(path: Path) -> list[str]:
    return [m for m in REQUIREMENTS.get(path.stem, ()) if importlib.util.find_spec(m) is None]


def _stream_text(nb, name: str) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.get("name") == name
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    """Committed notebooks carry the outputs of one clean top-to-bottom run."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown", "a notebook opens with what it shows"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "notebook has no code cells"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom once"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert "Warning" not in _stream_text(nb, "stderr"), f"{path.name} stored a warning"
    assert EXPECTED_OUTPUT[path.stem] in _stream_text(nb, "stdout")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Execute the notebook; its own ``assert`` cells check the numbers it shows."""
    missing = _missing(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)} (pip install 'jrmsprop[demo]')")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(path, as_version=4)
    execute(nb, tmp_path, TIMEOUTS.get(path.stem, DEFAULT_TIMEOUT))  # CellExecutionError on failure
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(o.output_type == "error" for o in outputs)
    assert EXPECTED_OUTPUT[path.stem] in _stream_text(nb, "stdout")


def _refresh(paths: list[Path]) -> None:
    """Re-executes notebooks in place (each in a scratch directory) and saves them."""
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            execute(nb, Path(workdir), TIMEOUTS.get(path.stem, DEFAULT_TIMEOUT))
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"re-executed {path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    _refresh([Path(p).resolve() for p in sys.argv[1:]] or NOTEBOOKS)
