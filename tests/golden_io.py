"""Load the golden RMSprop trajectories of ``tests/golden/*.npz`` and replay them in jrmsprop.

The files are written by ``tests/golden/generate.py`` from the real frameworks (see
``tests/golden/README.md``).  This module holds everything the golden tests and
``tests/golden/deviation_table.py`` share: loading a case, building the matching
``jrmsprop.compat`` transform from the case's metadata, replaying the stored gradients step by
step through one jitted update, and measuring/asserting the deviation.

Tolerance: an element ``x`` of a jrmsprop trajectory (or final slot) passes against the
framework's ``ref`` when ``|x - ref| <= ATOL * scale + RTOL * |ref|``, where ``scale`` is the
largest ``|ref|`` of that parameter over the whole trajectory (or of that slot): float32
rounding, nothing more.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jrmsprop

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
RTOL = 2e-6
ATOL = 1e-7  # times the trajectory's (or slot's) largest magnitude
# PyTorch's CPU sqrt (MKL/SLEEF vector code) is not correctly rounded: about 20% of float32
# results are 1 ulp off, so torch trajectories can only be matched to a few ulp per step.
ATOL_BY_FRAMEWORK = {"torch": 4e-7}


def atol_for(framework: str) -> float:
    """The absolute tolerance (times the scale) for one framework's golden files."""
    return ATOL_BY_FRAMEWORK.get(framework, ATOL)


SLOTS = ("rms", "momentum", "mg")
TORCH_SLOTS = {"square_avg": "rms", "momentum_buffer": "momentum", "grad_avg": "mg"}

Grad = Any  # np.ndarray (steps, *shape) | tuple[values (steps, n, *row), indices (steps, n)]


@dataclasses.dataclass
class GoldenCase:
    """One golden file, as NumPy arrays."""

    path: Path
    meta: dict[str, Any]
    p0: list[np.ndarray]
    grads: list[Grad]
    traj: list[np.ndarray]
    slots: dict[str, list[np.ndarray]]
    tfw: list[np.ndarray] | None  # Keras 2 ``get_weights()`` at ``transfer_at``
    torch_state: dict[int, dict[str, np.ndarray]] | None  # torch ``state_dict()["state"]``

    def __repr__(self) -> str:
        return f"GoldenCase({self.name!r})"

    @property
    def name(self) -> str:
        """The case name (the file stem)."""
        return self.meta["name"]

    @property
    def framework(self) -> str:
        """``keras2``, ``keras3``, ``torch`` or ``tf1``."""
        return self.meta["framework"]

    @property
    def steps(self) -> int:
        """Number of optimizer steps stored."""
        return int(self.meta["steps"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """The framework constructor's keyword arguments (the framework's own names)."""
        return dict(self.meta["kwargs"])

    @property
    def transfer_at(self) -> int | None:
        """The step count at which the framework's state was saved (transfer cases)."""
        return self.meta.get("transfer_at")

    def torch_state_dict(self) -> dict[str, Any]:
        """A ``torch.optim.RMSprop.state_dict()`` look-alike (NumPy arrays instead of tensors)."""
        assert self.torch_state is not None, self.name
        return {"state": self.torch_state, "param_groups": self.meta["param_groups"]}


def golden_files() -> list[Path]:
    """All framework golden files written by ``generate.py``, sorted by name.

    Other recordings may share the folder (``keras3_backend_*.npz``, for the Keras 3 backend
    tests); they have no ``framework`` in their metadata and are left out.
    """
    out = []
    for path in sorted(GOLDEN_DIR.glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            if "framework" in json.loads(str(z["meta"])):
                out.append(path)
    return out


def load_case(path: str | Path) -> GoldenCase:
    """Read one ``.npz`` golden file."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta"]))
    n = len(meta["shapes"])
    p0 = [data[f"p0_{i}"] for i in range(n)]
    grads: list[Grad] = []
    for i in range(n):
        if f"g_{i}" in data:
            grads.append(data[f"g_{i}"])
        else:
            grads.append((data[f"gv_{i}"], data[f"gi_{i}"]))
    traj = [data[f"p_{i}"] for i in range(n)]
    slots = {s: [data[f"{s}_{i}"] for i in range(n)] for s in SLOTS if f"{s}_0" in data}
    tfw = None
    if "tfw_0" in data:
        tfw = [data[f"tfw_{j}"] for j in range(sum(k.startswith("tfw_") for k in data))]
    torch_state = None
    if any(k.startswith("ts_") for k in data):
        torch_state = {}
        for key, val in data.items():
            if key.startswith("ts_"):
                _, idx, name = key.split("_", 2)
                torch_state.setdefault(int(idx), {})[name] = val
    for i, shape in enumerate(meta["shapes"]):
        assert p0[i].shape == tuple(shape) and traj[i].shape == (meta["steps"], *shape), path
    return GoldenCase(path, meta, p0, grads, traj, slots, tfw, torch_state)


# --------------------------------------------------------------------------------------------
# Building the jrmsprop side
# --------------------------------------------------------------------------------------------


def schedule_from_config(cfg: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """A tf_keras ``LearningRateSchedule`` config, rebuilt as a JAX function of the step count.

    Follows tf_keras in float32, bit for bit (also under ``jit``): ``PiecewiseConstantDecay``
    takes ``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]``; ``ExponentialDecay`` is
    ``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored when ``staircase``).
    """
    kind, c = cfg["class_name"], cfg["config"]
    if kind == "PiecewiseConstantDecay":
        boundaries = np.asarray(c["boundaries"], np.int32)
        values = np.asarray(c["values"], np.float32)

        def piecewise(count: jax.Array) -> jax.Array:
            above = jnp.asarray(count, jnp.int32) > jnp.asarray(boundaries)
            return jnp.asarray(values)[jnp.sum(above.astype(jnp.int32))]

        return piecewise
    if kind == "ExponentialDecay":
        lr0 = np.float32(c["initial_learning_rate"])
        rate = np.float32(c["decay_rate"])
        steps = np.float32(c["decay_steps"])
        staircase = bool(c["staircase"])

        def exponential(count: jax.Array) -> jax.Array:
            # The barrier keeps XLA from rewriting `/ decay_steps` into `* (1 / decay_steps)`,
            # which rounds differently from TF's division.
            p = jnp.asarray(count).astype(jnp.float32) / lax.optimization_barrier(
                jnp.asarray(steps)
            )
            if staircase:
                p = jnp.floor(p)
            return lr0 * jnp.power(rate, p)

        return exponential
    raise ValueError(f"unknown schedule {kind}")


def transform_kwargs(case: GoldenCase) -> dict[str, Any]:
    """The case's constructor kwargs, with a schedule config replaced by a JAX schedule."""
    kw = case.kwargs
    if isinstance(kw.get("learning_rate"), dict):
        kw["learning_rate"] = schedule_from_config(kw["learning_rate"])
    return kw


def build_transform(case: GoldenCase) -> optax.GradientTransformationExtraArgs:
    """``jrmsprop.compat.<framework>(**kwargs)`` with the case's own constructor arguments."""
    factory = {
        "keras2": jrmsprop.rmsprop,
        "keras3": jrmsprop.compat.keras3,
        "torch": jrmsprop.compat.torch,
        "tf1": jrmsprop.compat.tf1,
    }[case.framework]
    return factory(**transform_kwargs(case))


def grads_at(case: GoldenCase, t: int) -> list[Any]:
    """The gradient leaves fed at step ``t`` (``jrmsprop.IndexedSlices`` for sparse ones)."""
    out = []
    for g, p in zip(case.grads, case.p0, strict=True):
        if isinstance(g, tuple):
            vals, idx = g
            out.append(jrmsprop.IndexedSlices(jnp.asarray(vals[t]), jnp.asarray(idx[t]), p.shape))
        else:
            out.append(jnp.asarray(g[t]))
    return out


def make_step(tx: optax.GradientTransformationExtraArgs, sparse: bool) -> Callable[..., Any]:
    """One jitted ``(params, state, grads) -> (params, state)`` step."""
    apply = optax.apply_updates if sparse else optax.apply_updates

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    return step


def replay(
    case: GoldenCase,
    tx: optax.GradientTransformationExtraArgs | None = None,
    *,
    start: int = 0,
    params: Sequence[Any] | None = None,
    state: Any = None,
) -> tuple[list[np.ndarray], Any]:
    """Feed the stored gradients of steps ``start..steps-1`` to jrmsprop.

    Returns the trajectory (one ``(steps - start, *shape)`` array per parameter) and the final
    state.  By default starts from the stored initial parameters and a fresh state.
    """
    tx = build_transform(case) if tx is None else tx
    params = [jnp.asarray(p) for p in (case.p0 if params is None else params)]
    state = tx.init(params) if state is None else state
    step = make_step(tx, any(case.meta["sparse"]))
    traj = [np.empty((case.steps - start, *p.shape), np.float32) for p in case.p0]
    for t in range(start, case.steps):
        params, state = step(params, state, grads_at(case, t))
        for i, p in enumerate(params):
            traj[i][t - start] = np.asarray(p)
    return traj, state


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Deviation:
    """How far ``got`` is from ``ref``."""

    max_abs: float  # max |got - ref|
    max_rel_scale: float  # max |got - ref| / max |ref|
    max_rel: float  # max |got - ref| / |ref| over elements with ref != 0
    worst_ratio: float  # max |got - ref| / (ATOL * scale + RTOL * |ref|); <= 1 passes

    def merge(self, other: Deviation) -> Deviation:
        """The element-wise max of two deviations."""
        return Deviation(
            *(
                max(a, b)
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )


ZERO = Deviation(0.0, 0.0, 0.0, 0.0)


def _ratio(ref: np.ndarray, err: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """``err / (atol * max|ref| + rtol * |ref|)`` (0/0 -> 0, x/0 -> inf)."""
    bound = atol * float(np.max(np.abs(ref))) + rtol * np.abs(ref)
    safe = np.where(bound > 0, bound, 1.0)
    return np.where(bound > 0, err / safe, np.where(err > 0, np.inf, 0.0))


def deviation(ref: Any, got: Any, *, rtol: float = RTOL, atol: float = ATOL) -> Deviation:
    """Measure ``got`` against ``ref`` (see the module docstring for the tolerance)."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    assert ref.shape == got.shape, (ref.shape, got.shape)
    if ref.size == 0:
        return ZERO
    if not np.all(np.isfinite(got)):
        return Deviation(np.inf, np.inf, np.inf, np.inf)
    err = np.abs(got - ref)
    scale = float(np.max(np.abs(ref)))
    nz = ref != 0
    return Deviation(
        max_abs=float(err.max()),
        max_rel_scale=float(err.max() / scale) if scale > 0 else float(err.max()),
        max_rel=float(np.max(err[nz] / np.abs(ref[nz]))) if nz.any() else 0.0,
        worst_ratio=float(_ratio(ref, err, rtol, atol).max()),
    )


def traj_deviation(
    refs: Sequence[np.ndarray], gots: Sequence[np.ndarray], atol: float = ATOL
) -> Deviation:
    """The worst deviation over a list of per-parameter arrays (each with its own scale)."""
    dev = ZERO
    for ref, got in zip(refs, gots, strict=True):
        dev = dev.merge(deviation(ref, got, atol=atol))
    return dev


def state_slots(state: Any) -> dict[str, list[np.ndarray] | None]:
    """The ``rms`` / ``momentum`` / ``mg`` leaves of a jrmsprop state as NumPy (or None)."""
    out: dict[str, list[np.ndarray] | None] = {}
    for name in SLOTS:
        tree = getattr(state, name)
        out[name] = None if tree is None else [np.asarray(x) for x in jax.tree.leaves(tree)]
    return out


def assert_close(
    refs: Sequence[np.ndarray], gots: Sequence[np.ndarray], what: str, *, atol: float = ATOL
) -> Deviation:
    """Assert every array of ``gots`` is within float32 rounding of ``refs``; return the dev."""
    __tracebackhide__ = True
    for i, (ref, got) in enumerate(zip(refs, gots, strict=True)):
        dev = deviation(ref, got, atol=atol)
        if not dev.worst_ratio <= 1.0:
            ref64 = np.asarray(ref, np.float64)
            err = np.abs(np.asarray(got, np.float64) - ref64)
            ratio = np.nan_to_num(_ratio(ref64, err, RTOL, atol), nan=np.inf)
            where = np.unravel_index(int(np.argmax(ratio)), err.shape) if err.ndim else ()
            raise AssertionError(
                f"{what}[{i}]: deviates beyond float32 rounding: max abs {dev.max_abs:.3g}, "
                f"max abs / scale {dev.max_rel_scale:.3g}, max rel {dev.max_rel:.3g}, "
                f"{dev.worst_ratio:.3g}x the tolerance (rtol={RTOL}, atol={atol}·scale); worst "
                f"at {tuple(int(w) for w in where)}: got {np.asarray(got)[where]!r}, framework "
                f"{np.asarray(ref)[where]!r}"
            )
    return traj_deviation(refs, gots)
