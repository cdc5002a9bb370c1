"""Generate the golden RMSprop trajectories from the REAL frameworks.

Run by hand (not part of CI), from the repository root::

    /work/venv/bin/python tests/golden/generate.py

It needs ``tensorflow-cpu``, ``tf_keras``, ``keras`` (3.x, run on its ``numpy`` backend so its
arithmetic is independent of XLA) and ``torch``.  Every case is one ``.npz`` file next to this
script holding, in float32 unless stated:

``meta``
    JSON: name, framework (``keras2`` / ``keras3`` / ``torch`` / ``tf1``), the optimizer class,
    the exact constructor ``kwargs`` in the framework's own names (a Keras learning-rate schedule
    appears there as ``{"class_name": ..., "config": ...}``), ``schedule`` (same, or null),
    ``steps``, ``seed``, ``shapes``, ``grad_scales``, ``sparse`` (one flag per parameter),
    ``transfer_at`` (or null), ``slots`` (canonical slot names stored), framework ``versions``.
``p0_{i}``
    initial value of parameter ``i``.
``g_{i}``
    dense gradients, shape ``(steps, *shape)``;  sparse parameters instead carry
    ``gv_{i}`` (values, ``(steps, n, *shape[1:])``) and ``gi_{i}`` (int32 indices, ``(steps, n)``,
    with repeats) fed as ``tf.IndexedSlices``.
``p_{i}``
    the parameter after every step, ``(steps, *shape)``.
``rms_{i}``, ``momentum_{i}``, ``mg_{i}``
    the framework's slots after the last step, under canonical names (only the slots that the
    framework has): Keras 2 ``rms/momentum/mg``, Keras 3 ``velocity/momentum/average_gradient``,
    torch ``square_avg/momentum_buffer/grad_avg``, TF1 ``rms/momentum/mg``.
``tfw_{j}`` (Keras 2 state-transfer case)
    ``optimizer.get_weights()`` after ``transfer_at`` steps (``tfw_0`` is the int64 iteration
    count).
``ts_{i}_{square_avg|momentum_buffer|grad_avg|step}`` (torch state-transfer case)
    ``optimizer.state_dict()["state"]`` after ``transfer_at`` steps; ``param_groups`` is in meta.

The framework runners here are also used by ``tests/test_live_frameworks.py``; importing this
module does not import any framework.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # tests/, for the shared NumPy reference
    sys.path.insert(0, str(HERE.parent))
import numpy_reference  # noqa: E402

DENSE_SHAPES: tuple[tuple[int, ...], ...] = ((), (7,), (3, 4), (2, 3, 5))
DENSE_SCALES: tuple[float, ...] = (1.0, 1e-3, 10.0, 0.1)
SPARSE_SHAPES: tuple[tuple[int, ...], ...] = ((10, 4), (), (12,), (3, 4), (5, 2, 3))
SPARSE_SCALES: tuple[float, ...] = (1.0, 0.5, 1e-3, 10.0, 0.1)
SPARSE_FLAGS: tuple[bool, ...] = (True, False, True, False, True)
N_INDICES = 6
STEPS = 100
TRANSFER_AT = 40

SLOT_NAMES = ("rms", "momentum", "mg")


# --------------------------------------------------------------------------------------------
# Case specifications
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    """One golden case: which optimizer, which hyper-parameters, which problem."""

    name: str
    framework: str
    kwargs: dict[str, Any]
    seed: int
    steps: int = STEPS
    shapes: tuple[tuple[int, ...], ...] = DENSE_SHAPES
    scales: tuple[float, ...] = DENSE_SCALES
    sparse: tuple[bool, ...] = (False, False, False, False)
    transfer_at: int | None = None

    @property
    def schedule(self) -> dict[str, Any] | None:
        """The Keras learning-rate schedule config, if the learning rate is one."""
        lr = self.kwargs.get("learning_rate")
        return lr if isinstance(lr, dict) else None


def _fmt(x: float) -> str:
    return f"{x:g}"


def golden_specs() -> list[Spec]:
    """All golden cases (names are unique and become the file names)."""
    specs: list[Spec] = []
    seed = iter(range(1000, 100000, 7))

    # ---- Keras 2 (tf_keras.optimizers.legacy.RMSprop) ----
    for mom in (0.0, 0.9):
        for centered in (False, True):
            for eps in (1e-7, 1e-3, 1.0):
                kw = dict(learning_rate=0.01, rho=0.9, momentum=mom, epsilon=eps, centered=centered)
                name = f"keras2_mom{_fmt(mom)}_c{int(centered)}_eps{_fmt(eps)}"
                specs.append(Spec(name, "keras2", kw, next(seed)))
    for mom, centered in ((0.0, False), (0.9, True)):
        kw = dict(learning_rate=0.01, rho=0.5, momentum=mom, epsilon=1e-7, centered=centered)
        specs.append(
            Spec(f"keras2_rho0.5_mom{_fmt(mom)}_c{int(centered)}", "keras2", kw, next(seed))
        )
    pcd = {
        "class_name": "PiecewiseConstantDecay",
        "config": {"boundaries": [20, 50, 80], "values": [0.02, 0.01, 0.005, 0.001]},
    }
    expd = {
        "class_name": "ExponentialDecay",
        "config": {
            "initial_learning_rate": 0.02,
            "decay_steps": 10,
            "decay_rate": 0.8,
            "staircase": False,
        },
    }
    specs.append(
        Spec(
            "keras2_sched_piecewise_mom0.9",
            "keras2",
            dict(learning_rate=pcd, rho=0.9, momentum=0.9, epsilon=1e-7, centered=False),
            next(seed),
        )
    )
    specs.append(
        Spec(
            "keras2_sched_piecewise_mom0",
            "keras2",
            dict(learning_rate=pcd, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False),
            next(seed),
        )
    )
    specs.append(
        Spec(
            "keras2_sched_exponential_mom0_c1",
            "keras2",
            dict(learning_rate=expd, rho=0.9, momentum=0.0, epsilon=1e-7, centered=True),
            next(seed),
        )
    )
    specs.append(
        Spec(
            "keras2_sched_exponential_mom0.9_c1",
            "keras2",
            dict(learning_rate=expd, rho=0.9, momentum=0.9, epsilon=1e-7, centered=True),
            next(seed),
        )
    )
    for mom in (0.0, 0.9):
        kw = dict(
            learning_rate=0.05, rho=0.9, momentum=mom, epsilon=1e-7, centered=False, decay=0.01
        )
        specs.append(Spec(f"keras2_decay0.01_mom{_fmt(mom)}", "keras2", kw, next(seed)))
    for mom in (0.0, 0.9):
        for centered in (False, True):
            kw = dict(learning_rate=0.01, rho=0.9, momentum=mom, epsilon=1e-7, centered=centered)
            specs.append(
                Spec(
                    f"keras2_sparse_mom{_fmt(mom)}_c{int(centered)}",
                    "keras2",
                    kw,
                    next(seed),
                    shapes=SPARSE_SHAPES,
                    scales=SPARSE_SCALES,
                    sparse=SPARSE_FLAGS,
                )
            )
    specs.append(
        Spec(
            "keras2_transfer_mom0.9_c1",
            "keras2",
            dict(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1e-7, centered=True),
            next(seed),
            transfer_at=TRANSFER_AT,
        )
    )

    # ---- Keras 3 (keras.optimizers.RMSprop) ----
    for mom in (0.0, 0.9):
        for centered in (False, True):
            for eps in (1e-7, 1.0):
                kw = dict(learning_rate=0.01, rho=0.9, momentum=mom, epsilon=eps, centered=centered)
                name = f"keras3_mom{_fmt(mom)}_c{int(centered)}_eps{_fmt(eps)}"
                specs.append(Spec(name, "keras3", kw, next(seed)))
    for wd in (0.01, 0.1):
        for mom in (0.0, 0.9):
            kw = dict(
                learning_rate=0.01,
                rho=0.9,
                momentum=mom,
                epsilon=1e-7,
                centered=mom > 0,
                weight_decay=wd,
            )
            specs.append(Spec(f"keras3_wd{_fmt(wd)}_mom{_fmt(mom)}", "keras3", kw, next(seed)))

    # ---- PyTorch (torch.optim.RMSprop) ----
    for mom in (0.0, 0.9):
        for centered in (False, True):
            for eps in (1e-8, 1e-3, 1.0):
                kw = dict(
                    lr=0.01,
                    alpha=0.99,
                    eps=eps,
                    weight_decay=0.0,
                    momentum=mom,
                    centered=centered,
                    maximize=False,
                )
                name = f"torch_mom{_fmt(mom)}_c{int(centered)}_eps{_fmt(eps)}"
                specs.append(Spec(name, "torch", kw, next(seed)))
    for wd in (0.01, 0.1):
        for mom in (0.0, 0.9):
            kw = dict(
                lr=0.01,
                alpha=0.9,
                eps=1e-8,
                weight_decay=wd,
                momentum=mom,
                centered=mom > 0,
                maximize=False,
            )
            specs.append(Spec(f"torch_wd{_fmt(wd)}_mom{_fmt(mom)}", "torch", kw, next(seed)))
    for mom, wd in ((0.0, 0.0), (0.9, 0.01)):
        kw = dict(
            lr=0.01,
            alpha=0.99,
            eps=1e-8,
            weight_decay=wd,
            momentum=mom,
            centered=mom > 0,
            maximize=True,
        )
        specs.append(Spec(f"torch_maximize_mom{_fmt(mom)}_wd{_fmt(wd)}", "torch", kw, next(seed)))
    specs.append(
        Spec(
            "torch_transfer_mom0.9_c1",
            "torch",
            dict(
                lr=0.01,
                alpha=0.99,
                eps=1e-8,
                weight_decay=0.01,
                momentum=0.9,
                centered=True,
                maximize=False,
            ),
            next(seed),
            transfer_at=TRANSFER_AT,
        )
    )

    # ---- TF1 (tf.compat.v1.train.RMSPropOptimizer) ----
    for mom in (0.0, 0.9):
        for centered in (False, True):
            for eps in (1e-10, 1e-3):
                kw = dict(
                    learning_rate=0.01, decay=0.9, momentum=mom, epsilon=eps, centered=centered
                )
                name = f"tf1_mom{_fmt(mom)}_c{int(centered)}_eps{_fmt(eps)}"
                specs.append(Spec(name, "tf1", kw, next(seed)))
    # TF1 always takes the (lazy-row) sparse kernel, momentum or not.
    for mom, centered in ((0.0, False), (0.9, True)):
        kw = dict(learning_rate=0.01, decay=0.9, momentum=mom, epsilon=1e-10, centered=centered)
        specs.append(
            Spec(
                f"tf1_sparse_mom{_fmt(mom)}_c{int(centered)}",
                "tf1",
                kw,
                next(seed),
                shapes=SPARSE_SHAPES,
                scales=SPARSE_SCALES,
                sparse=SPARSE_FLAGS,
            )
        )

    names = [s.name for s in specs]
    assert len(names) == len(set(names)), "duplicate case names"
    return specs


# --------------------------------------------------------------------------------------------
# Problems (initial parameters and gradients)
# --------------------------------------------------------------------------------------------

Grad = Any  # np.ndarray (steps, *shape) or tuple (values (steps, n, *row), indices (steps, n))


def make_problem(spec: Spec) -> tuple[list[np.ndarray], list[Grad]]:
    """Fixed-seed initial parameters and per-step gradients for ``spec``.

    Dense gradients are ``scale * (mean + noise)`` with a per-element mean in [-1, 1] (so the
    centered variants see a non-trivial mean) and about 5 % exact zeros.  Sparse gradients pick
    ``N_INDICES`` rows per step, with repeats, from a small active set of rows that changes every
    8 steps, so rows are touched and then left alone for a while.
    """
    rng = np.random.default_rng(spec.seed)
    p0: list[np.ndarray] = []
    grads: list[Grad] = []
    for shape, scale, is_sparse in zip(spec.shapes, spec.scales, spec.sparse, strict=True):
        p0.append(rng.standard_normal(shape).astype(np.float32))
        if not is_sparse:
            mean = rng.uniform(-1.0, 1.0, shape)
            g = scale * (mean + rng.standard_normal((spec.steps, *shape)))
            g[rng.random(g.shape) < 0.05] = 0.0
            grads.append(g.astype(np.float32))
        else:
            rows = shape[0]
            n_active = max(2, rows // 3)
            idx = np.empty((spec.steps, N_INDICES), np.int32)
            active = rng.choice(rows, n_active, replace=False)
            for t in range(spec.steps):
                if t % 8 == 0:
                    active = rng.choice(rows, n_active, replace=False)
                draw = rng.choice(active, N_INDICES)
                draw[1] = draw[0]  # always at least one repeated index
                idx[t] = draw
            vals = scale * (0.3 + rng.standard_normal((spec.steps, N_INDICES, *shape[1:])))
            grads.append((vals.astype(np.float32), idx))
    return p0, grads


# --------------------------------------------------------------------------------------------
# Frameworks
# --------------------------------------------------------------------------------------------


def import_frameworks() -> dict[str, Any]:
    """Import TensorFlow, tf_keras, Keras 3 (numpy backend unless already imported) and torch."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "numpy"
    import keras
    import tensorflow as tf
    import tf_keras
    import torch

    return {"tf": tf, "tf_keras": tf_keras, "keras": keras, "torch": torch}


def framework_versions() -> dict[str, str]:
    """Versions of everything that produced the numbers."""
    fw = import_frameworks()
    return {
        "tensorflow": fw["tf"].__version__,
        "tf_keras": fw["tf_keras"].__version__,
        "keras": fw["keras"].__version__,
        "keras_backend": fw["keras"].backend.backend(),
        "torch": fw["torch"].__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class Result(dict):
    """``traj`` (list of (steps, *shape)), ``slots`` {name: list}, ``extras`` {key: array}."""


def _tf_grad(tf: Any, g: Grad, t: int, shape: tuple[int, ...]) -> Any:
    if isinstance(g, tuple):
        vals, idx = g
        return tf.IndexedSlices(
            tf.constant(vals[t]), tf.constant(idx[t]), tf.constant(shape, dtype=tf.int64)
        )
    return tf.constant(g[t])


def _keras2_schedule(tf_keras: Any, cfg: dict[str, Any]) -> Any:
    return getattr(tf_keras.optimizers.schedules, cfg["class_name"])(**cfg["config"])


def run_keras2(spec: Spec, p0: Sequence[np.ndarray], grads: Sequence[Grad]) -> Result:
    """Run ``tf_keras.optimizers.legacy.RMSprop`` eagerly with ``apply_gradients``."""
    fw = import_frameworks()
    tf, tf_keras = fw["tf"], fw["tf_keras"]
    kw = dict(spec.kwargs)
    if spec.schedule is not None:
        kw["learning_rate"] = _keras2_schedule(tf_keras, spec.schedule)
    opt = tf_keras.optimizers.legacy.RMSprop(**kw)
    vs = [tf.Variable(p) for p in p0]
    traj = [np.empty((spec.steps, *p.shape), np.float32) for p in p0]
    extras: dict[str, np.ndarray] = {}
    for t in range(spec.steps):
        if spec.transfer_at is not None and t == spec.transfer_at:
            for j, w in enumerate(opt.get_weights()):
                extras[f"tfw_{j}"] = np.asarray(w)
        gs = [_tf_grad(tf, g, t, p.shape) for g, p in zip(grads, p0, strict=True)]
        opt.apply_gradients(zip(gs, vs, strict=True))
        for i, v in enumerate(vs):
            traj[i][t] = v.numpy()
    slots = {
        name: [opt.get_slot(v, name).numpy() for v in vs]
        for name in SLOT_NAMES
        if name in opt.get_slot_names()
    }
    assert int(opt.iterations.numpy()) == spec.steps
    return Result(traj=traj, slots=slots, extras=extras)


def run_keras3(spec: Spec, p0: Sequence[np.ndarray], grads: Sequence[Grad]) -> Result:
    """Run ``keras.optimizers.RMSprop`` (Keras 3) eagerly with ``optimizer.apply``."""
    keras = import_frameworks()["keras"]
    opt = keras.optimizers.RMSprop(**spec.kwargs)
    vs = [keras.Variable(p, dtype="float32") for p in p0]
    traj = [np.empty((spec.steps, *p.shape), np.float32) for p in p0]
    for t in range(spec.steps):
        opt.apply([g[t] for g in grads], vs)
        for i, v in enumerate(vs):
            traj[i][t] = np.asarray(keras.ops.convert_to_numpy(v.value))
    conv = keras.ops.convert_to_numpy
    slots = {"rms": [conv(x.value) for x in opt._velocities]}
    if getattr(opt, "_momentums", None):
        slots["momentum"] = [conv(x.value) for x in opt._momentums]
    if getattr(opt, "_average_gradients", None):
        slots["mg"] = [conv(x.value) for x in opt._average_gradients]
    assert int(conv(opt.iterations.value)) == spec.steps
    return Result(traj=traj, slots=slots, extras={})


def run_torch(spec: Spec, p0: Sequence[np.ndarray], grads: Sequence[Grad]) -> Result:
    """Run ``torch.optim.RMSprop`` (default CPU implementation) with ``optimizer.step()``."""
    torch = import_frameworks()["torch"]
    ps = [torch.tensor(p.copy(), requires_grad=True) for p in p0]
    opt = torch.optim.RMSprop(ps, **spec.kwargs)
    traj = [np.empty((spec.steps, *p.shape), np.float32) for p in p0]
    extras: dict[str, Any] = {}
    for t in range(spec.steps):
        if spec.transfer_at is not None and t == spec.transfer_at:
            sd = opt.state_dict()
            for i, st in sd["state"].items():
                for key, val in st.items():
                    extras[f"ts_{i}_{key}"] = val.detach().numpy().copy()
            extras["param_groups"] = sd["param_groups"]
        for p, g in zip(ps, grads, strict=True):
            p.grad = torch.from_numpy(np.array(g[t], np.float32))
        opt.step()
        for i, p in enumerate(ps):
            traj[i][t] = p.detach().numpy()
    names = {"rms": "square_avg", "momentum": "momentum_buffer", "mg": "grad_avg"}
    slots = {}
    for canon, tname in names.items():
        if tname in opt.state[ps[0]]:
            slots[canon] = [opt.state[p][tname].detach().numpy().copy() for p in ps]
    assert float(opt.state[ps[0]]["step"]) == spec.steps
    return Result(traj=traj, slots=slots, extras=extras)


def run_tf1(spec: Spec, p0: Sequence[np.ndarray], grads: Sequence[Grad]) -> Result:
    """Run ``tf.compat.v1.train.RMSPropOptimizer`` eagerly with ``apply_gradients``."""
    tf = import_frameworks()["tf"]
    opt = tf.compat.v1.train.RMSPropOptimizer(**spec.kwargs)
    vs = [tf.Variable(p) for p in p0]
    traj = [np.empty((spec.steps, *p.shape), np.float32) for p in p0]
    for t in range(spec.steps):
        gs = [_tf_grad(tf, g, t, p.shape) for g, p in zip(grads, p0, strict=True)]
        opt.apply_gradients(list(zip(gs, vs, strict=True)))
        for i, v in enumerate(vs):
            traj[i][t] = v.numpy()
    slots = {
        name: [opt.get_slot(v, name).numpy() for v in vs]
        for name in SLOT_NAMES
        if name in opt.get_slot_names()
    }
    return Result(traj=traj, slots=slots, extras={})


RUNNERS: dict[str, Callable[[Spec, Sequence[np.ndarray], Sequence[Grad]], Result]] = {
    "keras2": run_keras2,
    "keras3": run_keras3,
    "torch": run_torch,
    "tf1": run_tf1,
}
OPTIMIZER_CLASS = {
    "keras2": "tf_keras.optimizers.legacy.RMSprop",
    "keras3": "keras.optimizers.RMSprop",
    "torch": "torch.optim.RMSprop",
    "tf1": "tf.compat.v1.train.RMSPropOptimizer",
}


# --------------------------------------------------------------------------------------------
# Independent float64 check of every recording (tests/numpy_reference.py, in float64)
# --------------------------------------------------------------------------------------------


def _scheduled_lr(spec: Spec, t: int) -> float:
    """The learning rate of step ``t`` before Keras 2's ``decay`` (which the reference applies)."""
    sched = spec.schedule
    if sched is None:
        return spec.kwargs["lr" if spec.framework == "torch" else "learning_rate"]
    c = sched["config"]
    if sched["class_name"] == "PiecewiseConstantDecay":
        return c["values"][sum(t > b for b in c["boundaries"])]
    if sched["class_name"] == "ExponentialDecay":
        e = t / c["decay_steps"]
        return c["initial_learning_rate"] * c["decay_rate"] ** (
            np.floor(e) if c["staircase"] else e
        )
    raise ValueError(sched)  # pragma: no cover


def reference_f64(spec: Spec, p0: Sequence[np.ndarray], grads: Sequence[Grad]) -> list[np.ndarray]:
    """The trajectory of ``spec``'s update rule, evaluated in float64 (dense and sparse)."""
    kwargs = dict(spec.kwargs)
    lr_key = "lr" if spec.framework == "torch" else "learning_rate"
    kwargs[lr_key] = lambda t: _scheduled_lr(spec, t)
    ref = numpy_reference.Reference.from_kwargs(spec.framework, kwargs, dtype=np.float64)
    params = [np.asarray(p, np.float64) for p in p0]
    out = [np.empty((spec.steps, *p.shape)) for p in p0]
    for t in range(spec.steps):
        step = [(g[0][t], g[1][t]) if isinstance(g, tuple) else g[t] for g in grads]
        params = ref.apply(step, params)
        for i, p in enumerate(params):
            out[i][t] = p
    return out


# --------------------------------------------------------------------------------------------
# Anchor values (one hand-checkable step per framework), asserted on the installed frameworks
# --------------------------------------------------------------------------------------------


def check_anchors() -> None:
    """Assert one hand-checkable step of each framework (the rules jrmsprop documents)."""
    fw = import_frameworks()
    tf, tf_keras, keras, torch = fw["tf"], fw["tf_keras"], fw["keras"], fw["torch"]

    # Keras 2: p = 10, loss p^2/2 (g = 10), lr = 0.1, defaults otherwise -> 9.683772.
    opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=0.1)
    v = tf.Variable(10.0)
    opt.apply_gradients([(tf.constant(10.0), v)])
    np.testing.assert_allclose(v.numpy(), 9.683772, rtol=1e-6)
    # ... the same through minimize on the loss itself.
    v = tf.Variable(10.0)
    tf_keras.optimizers.legacy.RMSprop(learning_rate=0.1).minimize(lambda: v * v / 2, [v])
    np.testing.assert_allclose(v.numpy(), 9.683772, rtol=1e-6)
    # Keras 2 with momentum: epsilon moves inside the root, lr inside the buffer.
    opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=0.1, momentum=0.5, epsilon=1.0)
    v = tf.Variable(10.0)
    opt.apply_gradients([(tf.constant(10.0), v)])
    np.testing.assert_allclose(v.numpy(), 10 - 0.1 * 10 / np.sqrt(10 + 1.0), rtol=1e-6)
    np.testing.assert_allclose(
        opt.get_slot(v, "momentum").numpy(), 0.1 * 10 / np.sqrt(11.0), rtol=1e-6
    )

    # Keras 3: lr 0.5, g [1,6,7,2], p [1,2,3,4] -> [-0.5811, 0.4189, 1.4189, 2.4189].
    opt = keras.optimizers.RMSprop(learning_rate=0.5)
    kv = keras.Variable(np.array([1, 2, 3, 4], np.float32))
    opt.apply([np.array([1, 6, 7, 2], np.float32)], [kv])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kv.value), [-0.5811, 0.4189, 1.4189, 2.4189], atol=1e-4
    )

    # torch: lr OUTSIDE the buffer, eps outside the root.
    p = torch.tensor(10.0, requires_grad=True)
    topt = torch.optim.RMSprop([p], lr=0.1, momentum=0.5, eps=1.0)
    p.grad = torch.tensor(10.0)
    topt.step()
    sq = 0.01 * 100.0
    np.testing.assert_allclose(p.item(), 10 - 0.1 * 10 / (np.sqrt(sq) + 1.0), rtol=1e-6)
    np.testing.assert_allclose(
        topt.state[p]["momentum_buffer"].item(), 10 / (np.sqrt(sq) + 1.0), rtol=1e-6
    )

    # TF1: rms starts at 1.0, eps inside the root.
    opt1 = tf.compat.v1.train.RMSPropOptimizer(0.1)
    v = tf.Variable(10.0)
    opt1.apply_gradients([(tf.constant(10.0), v)])
    np.testing.assert_allclose(opt1.get_slot(v, "rms").numpy(), 0.9 * 1.0 + 0.1 * 100, rtol=1e-6)
    np.testing.assert_allclose(v.numpy(), 10 - 0.1 * 10 / np.sqrt(10.9 + 1e-10), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def build_arrays(spec: Spec, versions: dict[str, str]) -> tuple[dict[str, np.ndarray], float]:
    """Run ``spec`` on its framework; return the npz arrays and the float64-check deviation."""
    p0, grads = make_problem(spec)
    res = RUNNERS[spec.framework](spec, p0, grads)
    arrays: dict[str, np.ndarray] = {}
    for i, (p, g) in enumerate(zip(p0, grads, strict=True)):
        arrays[f"p0_{i}"] = p
        if isinstance(g, tuple):
            arrays[f"gv_{i}"], arrays[f"gi_{i}"] = g
        else:
            arrays[f"g_{i}"] = g
        arrays[f"p_{i}"] = res["traj"][i]
    for name, vals in res["slots"].items():
        for i, val in enumerate(vals):
            arrays[f"{name}_{i}"] = np.asarray(val, np.float32)
    extras = dict(res["extras"])
    param_groups = extras.pop("param_groups", None)
    arrays.update(extras)
    for key, val in arrays.items():
        assert np.all(np.isfinite(val)), (spec.name, key)
    meta = {
        "name": spec.name,
        "framework": spec.framework,
        "optimizer": OPTIMIZER_CLASS[spec.framework],
        "kwargs": spec.kwargs,
        "schedule": spec.schedule,
        "steps": spec.steps,
        "seed": spec.seed,
        "shapes": [list(s) for s in spec.shapes],
        "grad_scales": list(spec.scales),
        "sparse": list(spec.sparse),
        "transfer_at": spec.transfer_at,
        "slots": sorted(res["slots"]),
        "param_groups": param_groups,
        "versions": versions,
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    # Sanity: the framework agrees with the NumPy reference evaluated in float64.
    ref = reference_f64(spec, p0, grads)
    dev = max(
        float(np.max(np.abs(r - t)) / max(np.max(np.abs(r)), 1e-30))
        for r, t in zip(ref, res["traj"], strict=True)
    )
    assert dev < 1e-4, (spec.name, dev)
    return arrays, dev


def main(argv: Sequence[str] | None = None) -> None:
    """Generate every golden file (or only those whose name contains one of ``argv``)."""
    import warnings

    warnings.simplefilter("ignore")
    argv = list(sys.argv[1:] if argv is None else argv)
    versions = framework_versions()
    check_anchors()
    print("anchors OK;", json.dumps(versions))
    total = 0
    for spec in golden_specs():
        if argv and not any(a in spec.name for a in argv):
            continue
        arrays, dev = build_arrays(spec, versions)
        path = HERE / f"{spec.name}.npz"
        np.savez_compressed(path, **arrays)
        size = path.stat().st_size
        total += size
        print(f"{spec.name:40s} {size / 1024:7.1f} KiB  float64-reference dev {dev:.2e}")
    print(f"total {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
