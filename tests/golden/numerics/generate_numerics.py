"""Writes tests/golden/numerics/torch_complex.npz and keras2_float64.npz from the real frameworks.

Run with TensorFlow/tf_keras and torch installed (`pip install '.[frameworks]'`):

    python tests/golden/numerics/generate_numerics.py

* torch_complex.npz: ``torch.optim.RMSprop`` on a complex64 parameter (PyTorch steps the real and
  imaginary parts as two real parameters), 20 steps, for four configurations.
* keras2_float64.npz: ``tf_keras.optimizers.legacy.RMSprop`` on a float64 variable (TF stores
  learning_rate, rho and momentum as float32 hyperparameter variables), 20 steps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TORCH_CONFIGS = {
    "plain": dict(),
    "momentum": dict(momentum=0.9),
    "centered": dict(centered=True),
    "centered_momentum_wd": dict(centered=True, momentum=0.5, weight_decay=0.1),
}
KERAS_CONFIGS = {
    "plain": dict(learning_rate=0.1, rho=0.9),
    "momentum_centered": dict(learning_rate=0.1, rho=0.9, momentum=0.9, centered=True),
    "decay_eps": dict(learning_rate=0.1, rho=0.9, momentum=0.3, decay=0.1, epsilon=0.1),
}


def torch_complex() -> None:
    import torch

    rng = np.random.default_rng(0)
    p0 = (rng.normal(size=5) + 1j * rng.normal(size=5)).astype(np.complex64)
    grads = (rng.normal(size=(20, 5)) + 1j * rng.normal(size=(20, 5))).astype(np.complex64)
    out = {"p0": p0, "grads": grads}
    for name, kw in TORCH_CONFIGS.items():
        param = torch.nn.Parameter(torch.tensor(p0))
        opt = torch.optim.RMSprop([param], lr=0.01, **kw)
        traj = []
        for g in grads:
            param.grad = torch.tensor(g)
            opt.step()
            traj.append(param.detach().numpy().copy())
        out[f"{name}/traj"] = np.stack(traj)
        out[f"{name}/square_avg"] = opt.state[param]["square_avg"].numpy()
    np.savez(HERE / "torch_complex.npz", **out)


def keras2_float64() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=7)
    grads = rng.normal(size=(20, 7))
    out = {"p0": p0, "grads": grads}
    for name, kw in KERAS_CONFIGS.items():
        var = tf.Variable(p0, dtype=tf.float64)
        opt = tf_keras.optimizers.legacy.RMSprop(**kw)
        traj = []
        for g in grads:
            opt.apply_gradients([(tf.constant(g, tf.float64), var)])
            traj.append(var.numpy().copy())
        out[f"{name}/traj"] = np.stack(traj)
    np.savez(HERE / "keras2_float64.npz", **out)


if __name__ == "__main__":
    torch_complex()
    keras2_float64()
