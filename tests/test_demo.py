"""Tests of ``jrmsprop demo`` and the ``python -m jrmsprop`` command line.

The demo's claim is checked against ``jrmsprop/_src/demo_reference.npz``, recorded from the real
``tf_keras`` legacy RMSprop by ``tests/golden/generate_demo_reference.py``: with the recipe
``RMSprop(2.5e-4, rho=0.95, epsilon=0.01)`` jrmsprop's full-batch loss curve stays on tf_keras's
(measured: max relative gap 3.6e-7 over 1000 steps, final weights within 2.4e-7 -- float32
rounding of two different matmul/reduction implementations, nothing more), while
``optax.rmsprop`` with "the same" settings ends 26 % higher (max relative gap 0.26, weights off by
0.088). The tolerances below leave a wide margin for other CPUs and still sit four orders of
magnitude under optax's gap.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
pytest.importorskip("vega_datasets")

from jrmsprop import __main__ as cli  # noqa: E402
from jrmsprop._src import demo  # noqa: E402

# jrmsprop vs tf_keras (measured 3.6e-7 / 2.4e-7) and optax vs tf_keras (measured 0.26 / 0.088).
JRMSPROP_LOSS_GAP = 1e-5
JRMSPROP_PARAM_GAP = 1e-5
OPTAX_MIN_LOSS_GAP = 0.2
OPTAX_MIN_PARAM_GAP = 0.05

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW = re.compile(
    r"^(?P<name>\S.*?)\s{2,}(?P<loss>\d\.\d{4})\s+(?P<mae>\d+\.\d\d mpg|-)\s+"
    r"(?P<loss_gap>\d\.\de[-+]\d\d|-)\s+(?P<param_gap>\d\.\de[-+]\d\d|-)\s+(?P<time>[\d.]+ s|-)$"
)


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; asserts the file really is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    assert b"IEND" in data[-12:], "truncated PNG"
    return struct.unpack(">II", data[16:24])


def _parse_table(stdout: str) -> dict[str, dict[str, str]]:
    """The table's rows by their first word (``tf_keras``, ``jrmsprop.rmsprop(...``, ...)."""
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line.rstrip())
        if m:
            rows[m["name"].split("(")[0].split()[0]] = m.groupdict()
    return rows


def _reference() -> dict[str, np.ndarray]:
    with np.load(demo.REFERENCE) as f:
        return dict(f)


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def default_run() -> demo.Result:
    return demo.run(progress=False)


def test_auto_mpg_split_is_clean_standardized_and_seeded():
    data = demo.load_auto_mpg(seed=0)
    # 406 cars, 14 without mpg or horsepower -> 392; 20 % held out.
    assert data.x_train.shape == (314, 9) and data.x_test.shape == (78, 9)
    assert data.y_train.shape == (314,) and data.y_test.shape == (78,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(data.y_train.mean(), 0.0, atol=1e-5)
    assert np.isfinite(data.x_test).all() and np.isfinite(data.y_test).all()
    assert 6.0 < data.y_std < 9.5  # real mpg: the spread is ~7.8 mpg
    # The one-hot origin columns hold 0/1 before standardising: exactly two values each.
    assert all(len(np.unique(data.x_train[:, j])) == 2 for j in (6, 7, 8))
    np.testing.assert_array_equal(demo.load_auto_mpg(seed=0).x_test, data.x_test)
    assert not np.array_equal(demo.load_auto_mpg(seed=1).y_test, data.y_test)


def test_init_params_are_keras_dense_layout_he_and_lecun_scaled():
    w1, b1, w2, b2 = demo.init_params(0)
    assert [a.shape for a in (w1, b1, w2, b2)] == [(9, 64), (64,), (64, 1), (1,)]
    assert all(a.dtype == np.float32 for a in (w1, b1, w2, b2))
    assert not b1.any() and not b2.any()
    assert 0.8 * np.sqrt(2 / 9) < w1.std() < 1.2 * np.sqrt(2 / 9)
    assert 0.7 * np.sqrt(1 / 64) < w2.std() < 1.3 * np.sqrt(1 / 64)
    np.testing.assert_array_equal(demo.init_params(0)[0], w1)
    assert not np.array_equal(demo.init_params(1)[0], w1)


def test_reference_file_records_the_demo_setup():
    ref = _reference()
    assert demo.REFERENCE.stat().st_size < 16_000  # a few KB
    meta = json.loads(str(ref["meta"]))
    assert meta["optimizer"] == "tf_keras.optimizers.legacy.RMSprop"
    assert meta["kwargs"] == {"learning_rate": 2.5e-4, "rho": 0.95, "epsilon": 0.01}
    assert (demo.LEARNING_RATE, demo.RHO, demo.EPSILON) == (2.5e-4, 0.95, 0.01)
    assert meta["steps"] == demo.STEPS == len(ref["loss"]) and meta["seed"] == demo.SEED
    # The recorded run started from the demo's own NumPy init and its own data.
    for i, a in enumerate(demo.init_params(demo.SEED)):
        np.testing.assert_array_equal(ref[f"init_{i}"], a)
        assert ref[f"final_{i}"].shape == a.shape
    np.testing.assert_allclose(ref["data_check"], demo._data_check(demo.load_auto_mpg()), 1e-6)
    # Training happened: from MSE ~1.4 (unfitted) down to ~0.09, monotonically (full batch).
    loss = ref["loss"]
    assert 1.2 < loss[0] < 1.6 and 0.08 < loss[-1] < 0.11
    assert np.all(np.diff(loss) < 0)


def test_jrmsprop_follows_tf_keras_and_optax_does_not(default_run):
    tf_run, jr, ox = default_run.runs
    assert default_run.reference and default_run.note is None
    assert tf_run.name.startswith("tf_keras") and jr.name.startswith("jrmsprop.rmsprop")
    assert ox.name.startswith("optax.rmsprop")
    ref = _reference()
    np.testing.assert_array_equal(tf_run.loss, ref["loss"])
    assert len(jr.loss) == len(ox.loss) == 1000

    # jrmsprop: on the tf_keras curve at every step, and the same final weights.
    np.testing.assert_allclose(jr.loss, ref["loss"], rtol=JRMSPROP_LOSS_GAP, atol=0)
    assert jr.loss_gap == pytest.approx(np.max(np.abs(jr.loss / ref["loss"] - 1)))
    assert jr.loss_gap < JRMSPROP_LOSS_GAP and jr.param_gap < JRMSPROP_PARAM_GAP
    for i, p in enumerate(jr.params):
        np.testing.assert_allclose(p, ref[f"final_{i}"], rtol=0, atol=JRMSPROP_PARAM_GAP)

    # optax with "the same" settings: visibly off (slower, ~26 % higher loss at the end).
    assert ox.loss_gap > OPTAX_MIN_LOSS_GAP and ox.param_gap > OPTAX_MIN_PARAM_GAP
    assert ox.loss[-1] > 1.15 * ref["loss"][-1]
    assert ox.loss[0] == pytest.approx(ref["loss"][0], rel=1e-6)  # same start, same model
    assert np.all(ox.loss[100:] > ref["loss"][100:])


@pytest.mark.slow
def test_table_and_png_from_the_default_run(default_run, tmp_path):
    table = demo.format_table(default_run)
    rows = _parse_table(table)
    assert set(rows) == {"tf_keras", "jrmsprop.rmsprop", "optax.rmsprop"}, table
    assert rows["tf_keras"]["loss"] == rows["jrmsprop.rmsprop"]["loss"] == "0.0931"
    assert rows["tf_keras"]["mae"] == rows["jrmsprop.rmsprop"]["mae"]
    assert float(rows["jrmsprop.rmsprop"]["loss_gap"]) < JRMSPROP_LOSS_GAP
    assert float(rows["jrmsprop.rmsprop"]["param_gap"]) < JRMSPROP_PARAM_GAP
    assert float(rows["optax.rmsprop"]["loss_gap"]) > OPTAX_MIN_LOSS_GAP
    assert float(rows["optax.rmsprop"]["param_gap"]) > OPTAX_MIN_PARAM_GAP
    assert float(rows["optax.rmsprop"]["loss"]) > 0.11
    assert "loss @ step 1000" in table and "78 held-out cars" in table
    assert "off by 6.79 mpg" in table  # the predict-the-mean baseline
    # The fitted model beats predicting the mean by far on held-out cars.
    assert float(rows["jrmsprop.rmsprop"]["mae"].split()[0]) < 3.0

    out = demo.plot(default_run, tmp_path / "sub" / "curves.png")
    width, height = _png_size(out)
    assert width >= 1000 and height >= 400
    assert out.stat().st_size > 30_000  # two panels of curves, not an empty canvas


@pytest.mark.slow
def test_fewer_steps_compare_with_a_prefix_of_the_recording(capsys, tmp_path):
    out = tmp_path / "nested" / "curves.png"
    assert demo.main(["--steps", "200", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "jrmsprop demo" in captured.err and "step" in captured.err  # tqdm on stderr
    assert "%|" not in captured.out
    _png_size(out)
    rows = _parse_table(captured.out)
    assert "compared with the first 200 of the 1000 recorded tf_keras steps" in captured.out
    assert float(rows["jrmsprop.rmsprop"]["loss_gap"]) < JRMSPROP_LOSS_GAP
    assert float(rows["optax.rmsprop"]["loss_gap"]) > OPTAX_MIN_LOSS_GAP
    assert rows["jrmsprop.rmsprop"]["param_gap"] == "-"  # final weights only after 1000
    assert rows["tf_keras"]["mae"] == "-"


@pytest.mark.parametrize(
    ("steps", "lr", "seed"), [(1000, 1e-3, 0), (1000, 2.5e-4, 1), (1001, 2.5e-4, 0)]
)
def test_reference_applies_only_to_the_recorded_flags(steps, lr, seed):
    ref, note = demo._reference(steps, lr, seed, demo.load_auto_mpg(seed))
    assert ref is None
    assert note == (
        "no tf_keras reference for these flags: it was recorded for --seed 0 --lr 0.00025, "
        "up to --steps 1000"
    )


def test_reference_checks_the_data():
    data = demo.load_auto_mpg()
    ref, note = demo._reference(1000, 2.5e-4, 0, data)
    assert ref is not None and note is None
    shifted = data._replace(y_train=data.y_train + np.float32(1e-3))  # e.g. another cars.json
    ref, note = demo._reference(1000, 2.5e-4, 0, shifted)
    assert ref is None and "differs from the recorded one" in note


def test_missing_reference_file_is_said_not_fatal(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "REFERENCE", tmp_path / "demo_reference.npz")
    result = demo.run(steps=5, progress=False)
    assert not result.reference and [r.name.split("(")[0] for r in result.runs] == [
        "jrmsprop.rmsprop",
        "optax.rmsprop",
    ]
    assert result.note == "no tf_keras reference: demo_reference.npz is not installed"
    assert "demo_reference.npz is not installed" in demo.format_table(result)


@pytest.mark.slow
def test_other_flags_say_the_reference_does_not_apply(capsys, tmp_path):
    flags = ["--seed", "2", "--steps", "60", "--no-progress", "--out", str(tmp_path / "c.png")]
    assert demo.main(flags) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --no-progress
    assert "no tf_keras reference for these flags" in captured.out
    rows = _parse_table(captured.out)
    assert set(rows) == {"jrmsprop.rmsprop", "optax.rmsprop"}
    assert all(r["loss_gap"] == r["param_gap"] == "-" for r in rows.values())
    assert all(float(r["loss"]) < 1.0 for r in rows.values())  # it still trains
    _png_size(tmp_path / "c.png")


@pytest.mark.slow
def test_cli_default_run_end_to_end(tmp_path):
    """``python -m jrmsprop demo`` with the default flags, PNG in the working directory."""
    proc = subprocess.run(
        [sys.executable, "-m", "jrmsprop", "demo", "--no-progress"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "%|" not in proc.stderr
    rows = _parse_table(proc.stdout)
    assert float(rows["jrmsprop.rmsprop"]["loss_gap"]) < JRMSPROP_LOSS_GAP
    assert float(rows["optax.rmsprop"]["loss_gap"]) > OPTAX_MIN_LOSS_GAP
    assert "loss curves written to jrmsprop-demo.png" in proc.stdout
    _png_size(tmp_path / "jrmsprop-demo.png")


def test_missing_extra_names_the_install_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError
    rc = demo.main(["--steps", "5", "--no-progress", "--out", str(tmp_path / "x.png")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "pip install 'jrmsprop[demo]'" in err and "tqdm" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "--steps"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr must be positive and finite, got inf"),
        (["--lr=-inf"], "--lr must be positive and finite, got -inf"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--out", "/proc/jrmsprop-demo.png"], "--out /proc/jrmsprop-demo.png: cannot write"),
        (["--out", "/"], "--out /: / is a directory"),
    ],
)
def test_demo_rejects_bad_flags(flags, message, capsys):
    """Refused before training (an unwritable --out used to fail after it, with a traceback)."""
    assert demo.main(flags) == 2
    assert message in capsys.readouterr().err


def test_python_m_jrmsprop_demo_bad_flags_are_clean_errors(tmp_path):
    for flags, message in ((["--lr", "inf"], "--lr"), (["--seed", "-1"], "--seed")):
        proc = subprocess.run(
            [sys.executable, "-m", "jrmsprop", "demo", *flags, "--out", str(tmp_path / "x.png")],
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_dispatch_and_errors(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(demo, "main", lambda argv: calls.append(list(argv)) or 0)
    assert cli.main(["demo", "--steps", "3", "--help-me"]) == 0
    assert calls == [["--steps", "3", "--help-me"]]

    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2

    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_console_script_help():
    proc = subprocess.run(
        [sys.executable, "-m", "jrmsprop", "demo", "--help"],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0
    for flag in ("--steps", "--seed", "--out", "--lr", "--no-progress"):
        assert flag in proc.stdout
