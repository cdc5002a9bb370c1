"""Record the ``jrmsprop demo`` reference from the REAL tf_keras (TF 2.x Keras) RMSprop.

Run by hand (not part of CI), from the repository root, with tensorflow-cpu and tf_keras
installed (``pip install -e '.[frameworks]'``)::

    python tests/golden/generate_demo_reference.py [--cars PATH/TO/cars.json] [--out FILE]

It builds the demo's model as a ``tf_keras.Sequential`` (Dense 64 ReLU, Dense 1), loads the
demo's NumPy initial weights with ``set_weights``, compiles it with
``tf_keras.optimizers.legacy.RMSprop(learning_rate=2.5e-4, rho=0.95, epsilon=0.01)`` and the
``"mse"`` loss, and trains it with ``model.fit`` full batch (batch = all 314 training cars, no
shuffling) for 1000 epochs, i.e. 1000 steps, on the data prepared by the demo's own loader. It
writes ``jrmsprop/_src/demo_reference.npz`` (float32 unless stated):

``loss``         training MSE before each step, as ``fit`` logs it, shape ``(1000,)``;
``init_{i}``     the initial weights ``[kernel1, bias1, kernel2, bias2]``;
``final_{i}``    the weights after the last step;
``data_check``   float64 statistics of the training set (count, sums, sums of squares, x·y),
                 so the demo can tell when a different ``cars.json`` leaves the recording behind;
``meta``         JSON string: recipe, steps, seed, versions.

TF runs single-threaded so the recording is reproducible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """Train with tf_keras and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cars", default=None, help="cars.json (default: vega_datasets' copy)")
    parser.add_argument("--out", default=None, help="output (default: the demo's reference)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf
    import tf_keras

    from jrmsprop._src import demo  # the same loader, init and constants as the demo

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    data = demo.load_auto_mpg(demo.SEED, cars_json=args.cars)
    init = demo.init_params(demo.SEED, data.x_train.shape[1], demo.HIDDEN)
    model = tf_keras.Sequential([
        tf_keras.Input((data.x_train.shape[1],)),
        tf_keras.layers.Dense(demo.HIDDEN, activation="relu"),
        tf_keras.layers.Dense(1),
    ])  # fmt: skip
    model.set_weights(init)
    opt = tf_keras.optimizers.legacy.RMSprop(
        learning_rate=demo.LEARNING_RATE, rho=demo.RHO, epsilon=demo.EPSILON
    )
    model.compile(optimizer=opt, loss="mse")
    history = model.fit(
        data.x_train,
        data.y_train[:, None],
        batch_size=len(data.y_train),
        epochs=demo.STEPS,
        shuffle=False,
        verbose=0,
    )
    loss = np.asarray(history.history["loss"], dtype=np.float32)
    final = model.get_weights()
    assert len(loss) == demo.STEPS and int(opt.iterations.numpy()) == demo.STEPS

    meta = {
        "optimizer": "tf_keras.optimizers.legacy.RMSprop",
        "kwargs": {"learning_rate": demo.LEARNING_RATE, "rho": demo.RHO, "epsilon": demo.EPSILON},
        "steps": demo.STEPS,
        "seed": demo.SEED,
        "hidden": demo.HIDDEN,
        "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__},
    }
    arrays = {f"init_{i}": a for i, a in enumerate(init)}
    arrays.update({f"final_{i}": np.asarray(a, np.float32) for i, a in enumerate(final)})
    out = Path(args.out or demo.REFERENCE)
    np.savez_compressed(
        out,
        loss=loss,
        data_check=demo._data_check(data),
        meta=np.asarray(json.dumps(meta)),
        **arrays,
    )
    print(f"wrote {out} ({out.stat().st_size} bytes): "
          f"loss {loss[0]:.4f} -> {loss[-1]:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
