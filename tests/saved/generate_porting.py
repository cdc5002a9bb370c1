"""Write the porting test files (model weights + optimizer state) with the REAL frameworks.

Run by hand (not part of CI), from the repository root, with TensorFlow, ``tf_keras``, Keras 3,
PyTorch and safetensors installed::

    python tests/saved/generate_porting.py

The model, in each framework: a 3x3 ``Conv2D`` named ``conv`` (1 -> 2 channels, tanh) on a 6x6
image, flattened, then a ``Dense`` / ``Linear`` named ``fc`` (32 -> 3). Trained ``FIT_STEPS``
full-batch steps with RMSprop(lr=0.01, momentum=0.9, centered=True), then saved:

* ``porting/keras2.h5``: ``tf_keras`` (``TF_USE_LEGACY_KERAS=1``), legacy RMSprop, ``model.save``;
* ``porting/keras3.keras``: Keras 3 (TensorFlow backend), ``model.save``;
* ``porting/torch.npz`` and ``porting/torch.safetensors``: ``torch.nn`` model and
  ``torch.optim.RMSprop`` state_dicts, in the convention of ``jrmsprop.compat.read_torch``:
  ``model/<name>`` (``model.state_dict()``), ``optimizer/<parameter name>/<slot>`` (the
  optimizer's ``state_dict()["state"]``, parameter indices replaced by names) and the param
  groups as JSON (npz: key ``optimizer/param_groups``; safetensors: that metadata entry).

Beside each, ``porting/<framework>_next.npz`` holds, for the ``M`` steps that followed, by the
framework's own names: ``g{j}/<name>``, the gradient of step ``j``, and ``p{j}/<name>``, the
parameters after it; plus ``meta`` (JSON: optimizer kwargs, versions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "porting"
FIT_STEPS, M = 3, 3
KW = dict(learning_rate=0.01, momentum=0.9, centered=True)


def _data(seed: int, channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(8, 6, 6, 1)), rng.normal(size=(8, 3))
    x = x if channels_last else x.transpose(0, 3, 1, 2)
    return x.astype(np.float32), y.astype(np.float32)


def _next(name: str, grads: list, traj: list, meta: dict) -> None:
    out = {f"g{j}/{k}": v for j, g in enumerate(grads) for k, v in g.items()}
    out |= {f"p{j}/{k}": v for j, p in enumerate(traj) for k, v in p.items()}
    np.savez(OUT / f"{name}_next.npz", meta=np.array(json.dumps(meta)), **out)


def keras(which: str) -> None:
    import tensorflow as tf

    if which == "keras2":
        import tf_keras as K

        opt = K.optimizers.legacy.RMSprop(**KW)
        name = lambda v: v.name.split(":")[0]  # noqa: E731
    else:
        import keras as K

        opt = K.optimizers.RMSprop(**KW)
        name = lambda v: v.path  # noqa: E731
    K.utils.set_random_seed(1)
    model = K.Sequential(
        [
            K.layers.Input((6, 6, 1)),
            K.layers.Conv2D(2, 3, activation="tanh", name="conv"),
            K.layers.Flatten(name="flat"),
            K.layers.Dense(3, name="fc"),
        ]
    )
    model.compile(
        optimizer=opt, loss="mse", **({} if which == "keras2" else {"jit_compile": False})
    )
    x, y = _data(0, True)
    model.fit(x, y, batch_size=len(x), epochs=FIT_STEPS, verbose=0, shuffle=False)
    model.save(OUT / ("keras2.h5" if which == "keras2" else "keras3.keras"))
    variables = model.trainable_variables
    grads, traj = [], []
    for j in range(M):
        xj, yj = _data(100 + j, True)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xj) - yj))
        g = tape.gradient(loss, [v.value if which == "keras3" else v for v in variables])
        grads.append({name(v): gi.numpy() for v, gi in zip(variables, g, strict=True)})
        opt.apply_gradients(zip(g, variables, strict=True))
        traj.append({name(v): v.numpy() for v in variables})
    _next(
        which, grads, traj, dict(kwargs=KW, versions={which: K.__version__, "tf": tf.__version__})
    )


def torch_() -> None:
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(1)
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(1, 2, 3))
    model.add_module("act", torch.nn.Tanh())
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(32, 3))
    kw = dict(lr=KW["learning_rate"], momentum=KW["momentum"], centered=KW["centered"])
    opt = torch.optim.RMSprop(model.parameters(), **kw)

    def step(x, y):
        opt.zero_grad()
        torch.mean((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).backward()
        g = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
        opt.step()
        return g

    x, y = _data(0, False)
    for _ in range(FIT_STEPS):
        step(x, y)
    # The file convention of jrmsprop.compat.read_torch:
    names = [k for k, _ in model.named_parameters()]
    sd = opt.state_dict()
    arrays = {f"model/{k}": v.numpy() for k, v in model.state_dict().items()}
    for i, slots in sd["state"].items():
        arrays |= {f"optimizer/{names[i]}/{s}": v.numpy() for s, v in slots.items()}
    groups = json.dumps(sd["param_groups"])
    np.savez(OUT / "torch.npz", **arrays, **{"optimizer/param_groups": np.array(groups)})
    save_file(arrays, OUT / "torch.safetensors", metadata={"optimizer/param_groups": groups})
    grads, traj = [], []
    for j in range(M):
        grads.append(step(*_data(100 + j, False)))
        traj.append({k: p.detach().numpy().copy() for k, p in model.named_parameters()})
    _next("torch", grads, traj, dict(kwargs=kw, versions={"torch": torch.__version__}))


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    OUT.mkdir(exist_ok=True)
    if which == "all":  # tf_keras and Keras 3 cannot share a process
        for part in ("keras2", "keras3", "torch"):
            subprocess.run([sys.executable, __file__, part], check=True)
    elif which == "keras2":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        keras("keras2")
    elif which == "keras3":
        os.environ["KERAS_BACKEND"] = "tensorflow"
        keras("keras3")
    elif which == "torch":
        torch_()
    else:
        raise SystemExit(f"usage: generate_porting.py [all|keras2|keras3|torch], got {which!r}")
    print("wrote", which)


if __name__ == "__main__":
    main()
