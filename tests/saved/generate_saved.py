"""Write the saved-model golden files with the REAL frameworks.

Run by hand (not part of CI), from the repository root, with TensorFlow, ``tf_keras`` and Keras 3
installed (``pip install 'jrmsprop[frameworks]'``)::

    python tests/saved/generate_saved.py

Each case builds a small model (``Dense(3, tanh)`` on 4 inputs, then ``Dense(2)``: trainable
variables ``kernel (4, 3), bias (3,), kernel (3, 2), bias (2,)`` in that order), trains it with
``fit`` for ``FIT_STEPS`` full-batch steps, saves it with the optimizer, then runs ``M`` more
optimizer steps eagerly on fixed inputs and records, next to the saved file, ``<name>.npz``:

``meta``
    JSON: name, framework (``keras2`` / ``keras3``), optimizer class, constructor ``kwargs`` (the
    framework's own names), ``fit_steps``, ``m``, the saved file's name, framework versions.
``p0_{i}``
    trainable variable ``i`` at the time of saving (the parameters the loaded state belongs to).
``g_{i}``
    the gradient of variable ``i`` fed to the optimizer at each of the ``M`` later steps,
    shape ``(M, *shape)``.
``p_{i}``
    variable ``i`` after each of those steps, ``(M, *shape)``.
``slot_{name}_{i}``
    the framework's optimizer slots after the last step, canonical names ``rms``, ``momentum``,
    ``mg`` (Keras 3: ``velocity``, ``momentum``, ``average_gradient``).
``iterations``
    the optimizer's step counter after the last step.

Files:

* ``keras2_*.h5``: ``tf_keras`` (TF 2.x Keras, run with ``TF_USE_LEGACY_KERAS=1``), optimizer
  ``tf_keras.optimizers.legacy.RMSprop``, ``model.save(path)`` (HDF5, optimizer included).
* ``keras3_*.keras``: Keras 3 (TensorFlow backend, ``jit_compile=False``), ``model.save(path)``.
* ``keras2_adam.h5`` / ``keras3_adam.keras``: the same model trained with Adam (no ``.npz``; for
  the "another optimizer's state" errors). ``keras2_no_optimizer.h5``: saved with
  ``include_optimizer=False``; ``keras2_new_optimizer.h5``: trained with the TF >= 2.11
  ``tf_keras.optimizers.RMSprop`` (not the legacy one).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIT_STEPS = 5
M = 8
LR = 0.01

KERAS2_CASES = {
    "keras2_mom0": dict(learning_rate=LR, momentum=0.0, centered=False),
    "keras2_mom0.9": dict(learning_rate=LR, momentum=0.9, centered=False),
    "keras2_mom0_centered": dict(learning_rate=LR, momentum=0.0, centered=True),
    "keras2_mom0.9_centered": dict(learning_rate=LR, momentum=0.9, centered=True),
}
KERAS3_CASES = {
    "keras3_plain": dict(learning_rate=LR),
    "keras3_mom0.9_centered": dict(learning_rate=LR, momentum=0.9, centered=True),
}


def _data(seed: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


def _record(
    name, framework, opt_class, kwargs, saved, p0, grads, traj, slots, iterations, versions
):
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(p0):
        out[f"p0_{i}"] = np.asarray(p, np.float32)
        out[f"g_{i}"] = np.stack([g[i] for g in grads]).astype(np.float32)
        out[f"p_{i}"] = np.stack([t[i] for t in traj]).astype(np.float32)
    for slot, values in slots.items():
        for i, v in enumerate(values):
            out[f"slot_{slot}_{i}"] = np.asarray(v)
    out["iterations"] = np.asarray(iterations, np.int64)
    meta = dict(
        name=name,
        framework=framework,
        optimizer=opt_class,
        kwargs=kwargs,
        fit_steps=FIT_STEPS,
        m=M,
        saved=saved,
        versions=versions,
    )
    out["meta"] = np.array(json.dumps(meta))
    np.savez(HERE / f"{name}.npz", **out)


def keras2(
    name: str, kwargs: dict | None, optimizer: str = "RMSprop", legacy: bool = True, **save_kw
) -> None:
    """``tf_keras`` with the legacy (TF <= 2.10) optimizer: fit, ``model.save(.h5)``, M steps."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input((4,)),
            tf_keras.layers.Dense(3, activation="tanh"),
            tf_keras.layers.Dense(2),
        ]
    )
    opt_cls = getattr(tf_keras.optimizers.legacy if legacy else tf_keras.optimizers, optimizer)
    opt = opt_cls(**(kwargs or {}))
    model.compile(optimizer=opt, loss="mse")
    x, y = _data(0)
    model.fit(x, y, batch_size=len(x), epochs=FIT_STEPS, verbose=0, shuffle=False)
    path = HERE / f"{name}.h5"
    model.save(path, **save_kw)
    if kwargs is None or optimizer != "RMSprop" or not legacy or save_kw:
        return
    variables = model.trainable_variables
    p0 = [v.numpy() for v in variables]
    grads, traj = [], []
    for j in range(M):
        xj, yj = _data(100 + j)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xj) - yj))
        g = tape.gradient(loss, variables)
        grads.append([gi.numpy() for gi in g])
        opt.apply_gradients(zip(g, variables, strict=True))
        traj.append([v.numpy() for v in variables])
    slots = {s: [opt.get_slot(v, s).numpy() for v in variables] for s in opt.get_slot_names()}
    versions = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}
    _record(
        name,
        "keras2",
        "tf_keras.optimizers.legacy.RMSprop",
        kwargs,
        path.name,
        p0,
        grads,
        traj,
        slots,
        opt.iterations.numpy(),
        versions,
    )


def keras3(name: str, kwargs: dict, optimizer: str = "RMSprop") -> None:
    """Keras 3 (TensorFlow backend): fit, ``model.save(.keras)``, M eager steps."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.layers.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(2)]
    )
    opt = getattr(keras.optimizers, optimizer)(**kwargs)
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    x, y = _data(0)
    model.fit(x, y, batch_size=len(x), epochs=FIT_STEPS, verbose=0, shuffle=False)
    path = HERE / f"{name}.keras"
    model.save(path)
    if optimizer != "RMSprop":
        return
    variables = model.trainable_variables
    p0 = [v.numpy() for v in variables]
    grads, traj = [], []
    for j in range(M):
        xj, yj = _data(100 + j)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xj) - yj))
        g = tape.gradient(loss, [v.value for v in variables])
        grads.append([gi.numpy() for gi in g])
        opt.apply_gradients(zip(g, variables, strict=True))
        traj.append([v.numpy() for v in variables])
    slots = {"velocity": [v.numpy() for v in opt._velocities]}
    if opt._momentums:
        slots["momentum"] = [v.numpy() for v in opt._momentums]
    if opt._average_gradients:
        slots["average_gradient"] = [v.numpy() for v in opt._average_gradients]
    versions = {"keras": keras.__version__, "tensorflow": tf.__version__, "backend": "tensorflow"}
    _record(
        name,
        "keras3",
        "keras.optimizers.RMSprop",
        kwargs,
        path.name,
        p0,
        grads,
        traj,
        slots,
        opt.iterations.numpy(),
        versions,
    )


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    print(f"python {platform.python_version()}, writing to {HERE}")
    # tf_keras and Keras 3 cannot share a process (TF_USE_LEGACY_KERAS is read at import), so
    # each half runs in its own interpreter.
    if which == "all":
        import subprocess

        for part in ("keras2", "keras3"):
            subprocess.run([sys.executable, __file__, part], check=True)
        return
    if which == "keras2":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        for name, kw in KERAS2_CASES.items():
            keras2(name, kw)
            print("wrote", name)
        keras2("keras2_adam", {"learning_rate": LR}, optimizer="Adam")
        keras2("keras2_no_optimizer", KERAS2_CASES["keras2_mom0"], include_optimizer=False)
        # The TF >= 2.11 tf.keras optimizer (Keras 3 arithmetic), for the "not legacy" error.
        keras2("keras2_new_optimizer", KERAS2_CASES["keras2_mom0"], legacy=False)
    elif which == "keras3":
        os.environ["KERAS_BACKEND"] = "tensorflow"
        for name, kw in KERAS3_CASES.items():
            keras3(name, kw)
            print("wrote", name)
        keras3("keras3_adam", {"learning_rate": LR}, optimizer="Adam")
    else:
        raise SystemExit(f"usage: generate.py [all|keras2|keras3], got {which!r}")


if __name__ == "__main__":
    main()
