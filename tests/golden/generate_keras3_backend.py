"""Golden files for ``jrmsprop.keras.RMSprop``, recorded from the real TF 2.x Keras optimizer.

Run by hand (not part of CI), from the repository root, in an environment with
``tensorflow-cpu`` and ``tf_keras`` (``pip install '.[frameworks]'``)::

    python tests/golden/generate_keras3_backend.py

For a small fixed parameter set -- the kernel ``(4, 3)`` and bias ``(3,)`` of a dense layer and
one scalar -- and fixed gradients (seeded, stored in the file), it runs
``tf_keras.optimizers.legacy.RMSprop`` (the TF 2.0-2.10 ``tf.keras`` optimizer) eagerly with
``apply_gradients`` for ``STEPS`` steps and writes ``keras3_backend_<case>.npz`` next to this
script, in float32 unless stated:

``meta``
    JSON: name, the exact ``tf_keras`` constructor ``kwargs``, ``steps``, ``seed``, ``shapes``,
    ``grad_scales``, ``slots`` (the slot names present), framework ``versions``.
``p0_{i}``
    the initial value of parameter ``i``.
``g_{i}``
    the gradient fed at every step, ``(steps, *shape)``.
``p_{i}``
    the parameter after every step, ``(steps, *shape)``.
``rms_{i}``, ``momentum_{i}``, ``mg_{i}``
    TF's slots after the last step (``momentum`` only with momentum, ``mg`` only centered).
``iterations``
    int64, ``optimizer.iterations`` after the last step.

``tests/test_keras.py`` replays the gradients through the Keras 3 optimizer
``jrmsprop.keras.RMSprop`` (``apply_gradients`` and ``stateless_apply``) and through
``jrmsprop.rmsprop`` and asserts bit equality. Seeds are fixed: re-running reproduces the files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPES: tuple[tuple[int, ...], ...] = ((4, 3), (3,), ())
SCALES: tuple[float, ...] = (1.0, 0.1, 10.0)
STEPS = 30

# name -> tf_keras.optimizers.legacy.RMSprop keyword arguments
CASES: dict[str, dict[str, Any]] = {
    "mom0_c0": dict(learning_rate=0.01, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False),
    "mom0.9_c0": dict(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1e-7, centered=False),
    "mom0_c1": dict(learning_rate=0.01, rho=0.9, momentum=0.0, epsilon=1e-7, centered=True),
    "mom0.9_c1": dict(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1e-7, centered=True),
    "decay_mom0": dict(
        learning_rate=0.05, rho=0.8, momentum=0.0, epsilon=1e-7, centered=False, decay=0.05
    ),
    "decay_mom0.9_c1": dict(
        learning_rate=0.05, rho=0.9, momentum=0.9, epsilon=1e-7, centered=True, decay=0.05
    ),
    "eps1_mom0": dict(learning_rate=0.1, rho=0.9, momentum=0.0, epsilon=1.0, centered=False),
    "eps1_mom0.9": dict(learning_rate=0.1, rho=0.9, momentum=0.9, epsilon=1.0, centered=False),
}


def problem(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Initial parameters and the ``(steps, *shape)`` gradients of one case."""
    rng = np.random.default_rng(seed)
    p0 = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    grads = [
        (scale * rng.normal(size=(STEPS, *shape))).astype(np.float32)
        for shape, scale in zip(SHAPES, SCALES, strict=True)
    ]
    return p0, grads


def run_tf_keras(kwargs: dict[str, Any], p0, grads) -> dict[str, np.ndarray]:
    """Runs ``tf_keras.optimizers.legacy.RMSprop`` eagerly; returns the arrays to store."""
    import tensorflow as tf
    import tf_keras

    variables = [tf.Variable(p) for p in p0]
    opt = tf_keras.optimizers.legacy.RMSprop(**kwargs)
    traj = [[] for _ in variables]
    for step in range(STEPS):
        opt.apply_gradients(
            [(tf.constant(g[step]), v) for g, v in zip(grads, variables, strict=True)]
        )
        for i, v in enumerate(variables):
            traj[i].append(v.numpy())
    out = {f"p_{i}": np.stack(t) for i, t in enumerate(traj)}
    slots = opt.get_slot_names()
    for name in ("rms", "momentum", "mg"):
        if name in slots:
            for i, v in enumerate(variables):
                out[f"{name}_{i}"] = opt.get_slot(v, name).numpy()
    out["iterations"] = np.asarray(opt.iterations.numpy(), np.int64)
    return out


def check_anchor() -> None:
    """TF 2.x's documented behaviour on this machine: p = 10, loss p²/2, lr 0.1 -> 9.683772."""
    import tensorflow as tf
    import tf_keras

    v = tf.Variable(10.0)
    tf_keras.optimizers.legacy.RMSprop(0.1).apply_gradients([(tf.constant(10.0), v)])
    if f"{v.numpy():.6f}" != "9.683772":
        raise SystemExit(f"tf_keras anchor failed: got {v.numpy()!r}")


def main(argv: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    check_anchor()
    versions = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}
    only = argv[1:] or None
    for k, (name, kwargs) in enumerate(CASES.items()):
        if only and not any(o in name for o in only):
            continue
        seed = 4242 + 17 * k
        p0, grads = problem(seed)
        arrays = run_tf_keras(kwargs, p0, grads)
        meta = {
            "name": name,
            "optimizer": "tf_keras.optimizers.legacy.RMSprop",
            "kwargs": kwargs,
            "steps": STEPS,
            "seed": seed,
            "shapes": [list(s) for s in SHAPES],
            "grad_scales": list(SCALES),
            "slots": [s for s in ("rms", "momentum", "mg") if f"{s}_0" in arrays],
            "versions": versions,
        }
        payload = {"meta": np.asarray(json.dumps(meta))}
        for i, (p, g) in enumerate(zip(p0, grads, strict=True)):
            payload[f"p0_{i}"] = p
            payload[f"g_{i}"] = g
        payload.update(arrays)
        path = HERE / f"keras3_backend_{name}.npz"
        np.savez_compressed(path, **payload)
        print(f"wrote {path.name} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
