"""A TF 2.x Keras RMSprop recipe ported to JAX, with optax and with jrmsprop.

    python benchmarks/demo.py [--steps N] [--lr LR] [--seed S] [--out PATH] [--no-progress]

The recipe, ``tf.keras.optimizers.RMSprop(learning_rate=2.5e-4, rho=0.95, epsilon=0.01)`` (the
large ε of many Keras DQN ports), trains a 9-64-1 ReLU MLP on Auto MPG (from ``vega_datasets``)
full batch. Keras divides by ``sqrt(rms) + ε``, ``optax.rmsprop(lr, decay=rho, eps=ε)`` by
``sqrt(rms + ε)``: at ε = 0.01 ten times the damping where ``rms`` is small. Both runs start from
the same NumPy weights and are compared with the real ``tf_keras`` run: recorded in
``demo_reference.npz`` (default ``--seed`` and ``--lr``, up to its length; no TensorFlow
needed), else run live where ``tf_keras`` is installed. A table, and a PNG of the curves
(default ``out/jrmsprop-demo.png`` in the checkout); ``--record`` rewrites the recording.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jrmsprop  # noqa: E402
from benchmarks.run import unwritable_reason  # noqa: E402

LEARNING_RATE, RHO, EPSILON = 2.5e-4, 0.95, 0.01  # the Keras 2 recipe
STEPS, SEED, HIDDEN = 1000, 0, 64
REFERENCE = Path(__file__).with_name("demo_reference.npz")
OUT = ROOT / "out" / "jrmsprop-demo.png"
FEATURES = ("Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration", "Year")
ORIGINS = ("USA", "Europe", "Japan")


class MissingExtraError(ImportError):
    """A package of the ``demo`` extra is not installed."""


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"the demo needs the optional package {module!r}, which is not installed. "
            "Install the demo extra: pip install -e '.[demo]'"
        ) from err


class Data(NamedTuple):
    """Standardised Auto MPG split (float32); ``y_std`` turns target units back into mpg."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_std: float


def load_auto_mpg(seed: int = SEED, cars_json: str | Path | None = None) -> Data:
    """Auto MPG: the 392 complete rows, a seeded 80/20 split, standardised with the training
    statistics. Inputs: the six numeric columns (model year as a number) and a one-hot
    ``Origin``; target: miles per gallon. ``cars_json``: default, ``vega_datasets``' copy."""
    if cars_json is None:
        cars_json = _require("vega_datasets").local_data.cars.filepath
    rows = []
    for rec in json.loads(Path(cars_json).read_text(encoding="utf-8")):
        values = [rec.get(k) for k in ("Miles_per_Gallon", *FEATURES)]
        if any(v is None for v in values) or rec.get("Origin") not in ORIGINS:
            continue
        values[-1] = int(str(values[-1])[:4])  # "1970-01-01" -> 1970
        rows.append([float(v) for v in values] + [float(rec["Origin"] == o) for o in ORIGINS])
    table = np.asarray(rows, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(table))
    n_test = round(0.2 * len(table))
    test, train = table[perm[:n_test]], table[perm[n_test:]]
    mean, std = train.mean(axis=0), train.std(axis=0)

    def prep(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = ((block - mean) / std).astype(np.float32)
        return z[:, 1:], z[:, 0]

    return Data(*prep(train), *prep(test), float(std[0]))


def init_params(seed: int = SEED, n_in: int = 9, hidden: int = HIDDEN) -> list[np.ndarray]:
    """He-normal hidden layer, LeCun-normal output layer, zero biases, drawn with NumPy, as
    ``[kernel1, bias1, kernel2, bias2]``: Keras ``Dense`` weights (``model.set_weights``)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)
    w2 = rng.standard_normal((hidden, 1)) * np.sqrt(1.0 / hidden)
    return [a.astype(np.float32) for a in (w1, np.zeros(hidden), w2, np.zeros(1))]


def mlp(params: Sequence[jax.Array], x: jax.Array) -> jax.Array:
    """The ReLU MLP, one prediction per row."""
    w1, b1, w2, b2 = params
    return (jax.nn.relu(x @ w1 + b1[None, :]) @ w2 + b2[None, :])[:, 0]


def _mse(params: Sequence[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(mlp(params, x) - y))


def _data_check(data: Data) -> np.ndarray:
    """Statistics that identify the training set (the recording stores them)."""
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    return np.concatenate([[len(y), y.sum(), (y * y).sum()], x.sum(0), (x * x).sum(0), x.T @ y])


def _train(tx, params, data: Data, steps: int, on_progress, chunk: int = 100):
    """Full-batch training in jitted ``lax.scan`` chunks; returns (losses, params, seconds)."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(_mse)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    scan = jax.jit(lambda c, n: jax.lax.scan(step, c, None, length=n), static_argnums=1)
    params = [jnp.asarray(a) for a in params]
    carry, losses, start = (params, tx.init(params)), [], time.perf_counter()
    for done in range(0, steps, chunk):
        carry, loss = scan(carry, min(chunk, steps - done))
        losses.append(np.asarray(loss))
        on_progress(min(chunk, steps - done))
    return np.concatenate(losses), [np.asarray(a) for a in carry[0]], time.perf_counter() - start


def tf_keras_run(data: Data, init: list[np.ndarray], steps: int, learning_rate: float) -> dict:
    """The recipe with the real ``tf_keras`` (single-threaded, reproducible): the model as a
    ``tf_keras.Sequential`` from ``init``, ``model.fit`` full batch, no shuffling. Returns the
    loss before each step (as ``fit`` logs it) and the final weights."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already started in this process: its thread pools stay
        pass
    dense = tf_keras.layers.Dense
    inputs = tf_keras.Input((data.x_train.shape[1],))
    model = tf_keras.Sequential([inputs, dense(HIDDEN, activation="relu"), dense(1)])
    model.set_weights(init)
    opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=learning_rate, rho=RHO, epsilon=EPSILON)
    model.compile(optimizer=opt, loss="mse")
    history = model.fit(data.x_train, data.y_train[:, None], batch_size=len(data.y_train),
                        epochs=steps, shuffle=False, verbose=0)  # fmt: skip
    assert int(opt.iterations.numpy()) == steps
    final = {f"final_{i}": np.asarray(a, np.float32) for i, a in enumerate(model.get_weights())}
    versions = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}
    loss = np.asarray(history.history["loss"], dtype=np.float32)
    return {"loss": loss, **{f"init_{i}": a for i, a in enumerate(init)}, **final, **versions}


def record(out: Path = REFERENCE) -> Path:
    """Rewrites the recording: the default flags, run with tf_keras."""
    data = load_auto_mpg(SEED)
    ref = tf_keras_run(data, init_params(SEED), STEPS, LEARNING_RATE)
    versions = {k: ref.pop(k) for k in ("tensorflow", "tf_keras")}
    meta = {"optimizer": "tf_keras.optimizers.legacy.RMSprop", "steps": STEPS, "seed": SEED,
            "kwargs": {"learning_rate": LEARNING_RATE, "rho": RHO, "epsilon": EPSILON},
            "hidden": HIDDEN, "versions": versions}  # fmt: skip
    np.savez_compressed(out, data_check=_data_check(data), meta=np.asarray(json.dumps(meta)), **ref)
    return out


@dataclasses.dataclass
class Run:
    """One optimizer's run: the loss before each step and, where known, the final weights."""

    name: str
    loss: np.ndarray
    params: list[np.ndarray] | None
    seconds: float | None = None
    loss_gap: float | None = None  # max over steps of |loss / loss(tf_keras) - 1|
    param_gap: float | None = None  # max |params - params(tf_keras)| after the last step


class Result(NamedTuple):
    """What :func:`run` returns; ``runs`` starts with tf_keras's when there is one."""

    data: Data
    learning_rate: float
    runs: list[Run]
    reference: bool
    note: str | None


def _recorded(steps: int, learning_rate: float, seed: int, data: Data):
    """The tf_keras recording, or ``(None, why not)`` when these flags leave it behind."""
    if not REFERENCE.is_file():
        return None, f"no tf_keras reference: {REFERENCE.name} is missing"
    with np.load(REFERENCE) as f:
        ref = dict(f)
    n_ref = len(ref["loss"])
    if seed != SEED or learning_rate != LEARNING_RATE or steps > n_ref:
        return None, (f"no tf_keras reference for these flags: it was recorded for --seed "
                      f"{SEED} --lr {LEARNING_RATE:g}, up to --steps {n_ref}")  # fmt: skip
    if not np.allclose(_data_check(data), ref["data_check"], rtol=1e-5, atol=1e-3):
        return None, "no tf_keras reference: this Auto MPG file differs from the recorded one"
    if steps < n_ref:
        return ref, f"compared with the first {steps} of the {n_ref} recorded tf_keras steps"
    return ref, None


def run(steps: int = STEPS, learning_rate: float = LEARNING_RATE, seed: int = SEED, *,
        progress: bool = True) -> Result:  # fmt: skip
    """Trains with ``jrmsprop.rmsprop`` and ``optax.rmsprop`` and compares both with tf_keras:
    the recording where it covers the flags, else a live tf_keras run where it is installed.
    The loss gaps are set when there is a tf_keras run, the weight gaps when it has the final
    weights (the recording: at its full length)."""
    tqdm = _require("tqdm").tqdm
    data = load_auto_mpg(seed)
    ref, note = _recorded(steps, learning_rate, seed, data)
    name = "tf_keras RMSprop (recorded)"
    if ref is None and importlib.util.find_spec("tf_keras") is not None:
        name, note = "tf_keras RMSprop (run live)", None
        ref = tf_keras_run(data, init_params(seed), steps, learning_rate)
    lr = f"{learning_rate:g}"
    txs = {
        f"jrmsprop.rmsprop({lr}, rho={RHO}, epsilon={EPSILON})": jrmsprop.rmsprop(
            learning_rate, rho=RHO, epsilon=EPSILON
        ),
        f"optax.rmsprop({lr}, decay={RHO}, eps={EPSILON})": optax.rmsprop(
            learning_rate, decay=RHO, eps=EPSILON
        ),
    }
    runs = []
    if ref is not None:
        final = [ref[f"final_{i}"] for i in range(4)] if steps == len(ref["loss"]) else None
        runs.append(Run(name, ref["loss"][:steps], final))
    init = [ref[f"init_{i}"] for i in range(4)] if ref is not None else init_params(seed)
    bar = tqdm(total=steps * len(txs), desc="jrmsprop demo", unit="step", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    with bar:
        for label, tx in txs.items():
            runs.append(Run(label, *_train(tx, init, data, steps, bar.update)))
            if ref is not None:
                runs[-1].loss_gap = float(np.max(np.abs(runs[-1].loss / runs[0].loss - 1)))
                if runs[0].params is not None:
                    pairs = zip(runs[-1].params, runs[0].params, strict=True)
                    runs[-1].param_gap = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    return Result(data, learning_rate, runs, ref is not None, note)


def format_table(result: Result) -> str:
    """The results table: last loss, test error, gaps to tf_keras, time."""
    data, steps = result.data, len(result.runs[0].loss)
    header = ("optimizer", f"loss @ step {steps}", "test MAE", "max loss gap", "max |Δparam|",
              "time incl. jit")  # fmt: skip
    rows = []
    for r in result.runs:
        mae = None
        if r.params is not None:
            mae = float(np.mean(np.abs(mlp(r.params, data.x_test) - data.y_test))) * data.y_std
        cells = (r.loss[-1], mae, r.loss_gap, r.param_gap, r.seconds)
        fmts = ("{:.4f}", "{:.2f} mpg", "{:.1e}", "{:.1e}", "{:.2f} s")
        pairs = zip(cells, fmts, strict=True)
        rows.append((r.name, *("-" if c is None else f.format(c) for c, f in pairs)))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *cells])

    lines = [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)]
    baseline = float(np.mean(np.abs(data.y_test))) * data.y_std
    lines.append(
        f"loss: training MSE of the standardised mpg (the mean predicts 1.0); test MAE on "
        f"{len(data.y_test)} held-out cars (the mean is off by {baseline:.2f} mpg)"
    )
    if result.reference:
        lines.append("gaps vs tf_keras: max over steps of |loss / loss(tf_keras) - 1|; "
                     "max |Δ| of the final weights")  # fmt: skip
    return "\n".join(lines + ([result.note] if result.note else []))


def plot(result: Result, out: str | Path) -> Path:
    """Writes the loss curves and their relative gaps to the first run as a PNG."""
    matplotlib = _require("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = importlib.import_module("matplotlib.pyplot")
    ref = result.runs[0]  # tf_keras when there is a run of it, else jrmsprop
    ref_short = ref.name.split()[0]
    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    styles = {"tf_keras": ("black", "-", 5, 0.3), "jrmsprop": ("C0", "--", 1.6, 1),
              "optax": ("C3", "-", 1.6, 1)}  # fmt: skip
    for r in result.runs:
        color, ls, lw, alpha = styles[r.name.split(".")[0].split(" ")[0]]
        kw = {"color": color, "linestyle": ls, "linewidth": lw, "alpha": alpha, "label": r.name}
        steps = np.arange(1, len(r.loss) + 1)
        ax.plot(steps, r.loss, **kw)
        if r is not ref:
            gap = np.maximum(np.abs(r.loss / ref.loss - 1), 1e-9)
            gap_ax.plot(steps, gap, **{**kw, "linewidth": 0.8, "linestyle": "-"})
    gap_ax.axhline(2.0**-23, color="grey", linestyle=":", label="float32 spacing at 1 (2⁻²³)")
    title = f"Keras 2 RMSprop(lr={result.learning_rate:g}, rho={RHO}, epsilon={EPSILON})"
    ax.set(yscale="log", xlabel="step", ylabel="training MSE (standardised mpg)", title=title)
    gap_ax.set(yscale="log", xlabel="step", ylabel=f"|loss / loss({ref_short}) − 1|",
               title=f"Relative loss gap to {ref_short} (equal: drawn at 1e-9)")  # fmt: skip
    for a in (ax, gap_ax):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    if result.note:
        fig.suptitle(result.note, fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/demo.py [options]``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/demo.py",
        description="Port a Keras 2 RMSprop recipe (rho=0.95, epsilon=0.01) to JAX with optax and "
        "with jrmsprop, and compare both with tf_keras's loss curve (recorded for the default "
        "--lr and --seed, up to 1000 steps; other flags: run live when tf_keras is installed).",
    )
    p.add_argument("--steps", type=int, default=STEPS, help=f"full-batch steps ({STEPS})")
    p.add_argument("--lr", type=float, default=LEARNING_RATE, help=f"step size ({LEARNING_RATE:g})")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of the split and init ({SEED})")
    p.add_argument("--out", default=str(OUT), help="the PNG (default: out/ in the checkout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--record", action="store_true", help=f"rewrite {REFERENCE.name} (tf_keras)")
    args = p.parse_args(argv)
    if args.record:
        print(f"wrote {record()}")
        return 0
    for bad, message in (
        (args.steps < 1, "--steps must be at least 1"),
        (not 0 < args.lr < math.inf, f"--lr must be positive and finite, got {args.lr}"),
        (args.seed < 0, f"--seed must be >= 0, got {args.seed}"),
        (why := unwritable_reason(args.out), f"--out {args.out}: {why}"),
    ):
        if bad:
            print(f"demo.py: {message}", file=sys.stderr)
            return 2
    try:
        for module in ("matplotlib", "tqdm", "vega_datasets"):
            _require(module)
        result = run(args.steps, args.lr, args.seed, progress=not args.no_progress)
        out = plot(result, args.out)
    except MissingExtraError as err:
        print(f"demo.py: {err}", file=sys.stderr)
        return 1
    print(format_table(result))
    print(f"loss curves written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
