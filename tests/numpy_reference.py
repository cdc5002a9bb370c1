"""The one NumPy re-derivation of RMSprop used by the tests and by the golden-file generator.

It shares no code with jrmsprop. Four update rules, each in the float evaluation order of its
framework (so that, in float32, the Keras 2 and TF1 rules agree with the real frameworks bit
for bit; the others to float32 rounding), with ``t`` the number of updates already applied:

``keras2`` (TF 2.x ``tf_keras.optimizers.legacy.RMSprop``)
    ``lr = lr(t) / (1 + decay·t)``. Without a momentum slot (``momentum == 0``), TF's Python
    ops: ``rms = ρ·rms + (1−ρ)·g²``, ``mg = ρ·mg + (1−ρ)·g``, ``p −= lr·g / (√(rms − mg²) + ε)``
    (ε *outside* the root). With one, TF's fused ``ApplyRMSProp`` kernels:
    ``rms += (g² − rms)·(1−ρ)``, ``mg += (g − mg)·(1−ρ)``,
    ``mom = mom·μ + g·lr / √(rms − mg² + ε)``, ``p −= mom`` (ε *inside*, lr inside the buffer).
    ``1 − ρ`` is formed in the compute dtype.
``keras3`` (``keras.optimizers.RMSprop``)
    ``1 − ρ`` formed in double precision, then rounded. Op by op: ``rms = ρ·rms + (1−ρ)·g²``,
    ``inc = lr·g / √(rms − mg² + ε)`` (ε always inside); ``mom = μ·mom + inc``, ``p −= mom`` (or
    ``p −= inc``). Decoupled weight decay ``p −= (p·wd)·lr`` is its own rounded step first.
``torch`` (``torch.optim.RMSprop``)
    ``g = −g`` (maximize), ``g += wd·p`` (coupled L2), ``1 − α`` in double, ``sq = sq·α +
    ((1−α)·g)·g``, ``ga`` by ``lerp`` (``ga + (1−α)·(g − ga)``, or ``g − (g − ga)·α`` for
    ``α <= 0.5``), ``avg = √(sq − ga²) + ε`` (ε outside), ``buf = buf·μ + g/avg``,
    ``p −= lr·buf`` (lr *outside* the buffer), or without a buffer ``p −= (lr·g)/avg``
    (``addcdiv``'s order).
``tf1`` (``tf.compat.v1.train.RMSPropOptimizer``)
    Always the fused kernels of ``keras2`` with a momentum slot, and ``rms`` starts at 1.

Sparse gradients (``keras2`` and ``tf1``): duplicate indices are summed first (in the order they
appear); with a momentum slot only the named rows of every slot and of the parameter change, in
the order of TF's ``SparseApply(Centered)RMSProp`` kernels (``rms = rms·ρ + g²·(1−ρ)``,
``mom = mom·μ + ((1/√(rms + ε − mg²))·lr)·g``); without one, ``rms`` and ``mg`` decay on every row
and the named rows then gain ``(1−ρ)·g²`` (``(1−ρ)·g``), while only the named rows of ``p`` move.

Precision: arithmetic is done in ``dtype`` (``float32`` or ``float64``; hyperparameters are
rounded to it); parameters are stored in ``storage`` and slots in ``slot_storage`` (both default
to ``dtype``). With a ``bfloat16``/``float16`` storage and a float32 ``dtype`` this models
jrmsprop's low-precision rule: every step is computed in float32 from the stored values, the
slots are rounded to their storage dtype, and the parameter gets ``p + storage(−step)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RULES = ("keras2", "keras3", "torch", "tf1")

# Each framework's own argument names -> the names used here.
_NATIVE_NAMES = {
    "keras2": {},
    "keras3": {},
    "torch": {"lr": "learning_rate", "alpha": "rho", "eps": "epsilon"},
    "tf1": {"decay": "rho"},
}

Grad = Any  # np.ndarray (dense) or a (values, indices) pair (sparse rows)


def summed_rows(values: Any, indices: Sequence[int], dtype: Any) -> dict[int, np.ndarray]:
    """TF's ``unique`` + ``unsorted_segment_sum``: each row (in first-seen order) with its
    values added one by one in input order, starting from 0, in ``dtype``."""
    summed: dict[int, np.ndarray] = {}
    for k, v in zip(indices, values, strict=True):
        row = int(k)
        start = summed.get(row, np.zeros(np.shape(v), dtype))
        summed[row] = start + np.asarray(v).astype(dtype)
    return summed


@dataclass
class Reference:
    """One RMSprop optimizer of framework ``rule``, on NumPy arrays.

    Call :meth:`apply` once per step with the gradients of every parameter (in a fixed order);
    the slots live in :attr:`slots` under ``(name, i)`` with ``name`` in ``rms``, ``momentum``,
    ``mg``.
    """

    rule: str = "keras2"
    learning_rate: float | Callable[[int], float] = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False
    decay: float = 0.0  # keras2 only: inverse-time decay of the learning rate
    weight_decay: float = 0.0  # keras3: decoupled; torch: coupled (L2)
    maximize: bool = False  # torch only
    dtype: Any = np.float32
    storage: Any = None  # dtype of the parameters; default: ``dtype``
    slot_storage: Any = None  # dtype of the slots; default: ``storage``
    iterations: int = 0
    slots: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.rule in RULES, self.rule
        self.dtype = np.dtype(self.dtype)
        self.storage = self.dtype if self.storage is None else np.dtype(self.storage)
        self.slot_storage = np.dtype(
            self.storage if self.slot_storage is None else self.slot_storage
        )
        assert self.decay == 0.0 or self.rule == "keras2", "only Keras 2 has `decay`"
        assert not self.maximize or self.rule == "torch", "only torch has `maximize`"
        assert not self.weight_decay or self.rule in ("keras3", "torch")

    @classmethod
    def from_kwargs(cls, framework: str, kwargs: dict[str, Any], **options: Any) -> Reference:
        """Build from a framework constructor's keyword arguments (its own names)."""
        names = _NATIVE_NAMES[framework]
        mapped = {names.get(k, k): v for k, v in kwargs.items()}
        return cls(rule=framework, **mapped, **options)

    # ---------------------------------------------------------------- rule properties

    @property
    def has_momentum_slot(self) -> bool:
        """Keras 2 / Keras 3 / torch keep a buffer only for ``momentum > 0``; TF1 always."""
        return self.rule == "tf1" or self.momentum > 0

    @property
    def fused_kernel(self) -> bool:
        """Whether dense steps take TF's fused ``ApplyRMSProp`` evaluation order."""
        return self.rule == "tf1" or (self.rule == "keras2" and self.momentum > 0)

    def _c(self, x: Any) -> Any:
        """A scalar or array in the compute dtype."""
        return np.asarray(x).astype(self.dtype)[()]

    # TF keeps these hyperparameters in float32 tensors before casting them to the variable's
    # dtype, so on float64 variables they act float32-rounded (checked against tf_keras 2.21).
    _FLOAT32_HYPERPARAMETERS = {  # noqa: RUF012
        "keras2": ("learning_rate", "rho", "momentum", "decay"),
        "tf1": ("learning_rate", "rho", "momentum", "epsilon"),
    }

    def _h(self, name: str, value: Any = None) -> Any:
        """Hyperparameter ``name`` (or its ``value``) in the compute dtype, with TF's rounding."""
        value = getattr(self, name) if value is None else value
        if name in self._FLOAT32_HYPERPARAMETERS.get(self.rule, ()):
            value = np.float32(value)
        return self._c(value)

    def _lr(self) -> Any:
        lr = self.learning_rate
        lr = self._h("learning_rate", lr(self.iterations) if callable(lr) else lr)
        if self.rule == "keras2":
            return lr / (self._c(1) + self._h("decay") * self._c(self.iterations))
        return lr

    def _one_minus_rho(self) -> Any:
        if self.rule in ("keras3", "torch"):  # formed in Python (double), then rounded
            return self._c(1.0 - float(self.rho))
        return self._c(1) - self._h("rho")

    def _slot(self, name: str, i: int, like: np.ndarray) -> np.ndarray:
        start = 1.0 if (name == "rms" and self.rule == "tf1") else 0.0
        return self.slots.setdefault((name, i), np.full(np.shape(like), start, self.slot_storage))

    def _store(self, name: str, i: int, value: np.ndarray) -> None:
        self.slots[(name, i)] = np.asarray(value).astype(self.slot_storage)

    # ---------------------------------------------------------------- steps

    def apply(self, grads: Sequence[Grad], params: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One step on every parameter; returns the new parameters (``storage`` dtype).

        A gradient is an array, a ``(values, indices)`` pair of rows (sparse), or None (that
        parameter and its slots are left alone).
        """
        out = []
        for i, (g, p) in enumerate(zip(grads, params, strict=True)):
            p = np.asarray(p).astype(self.storage)
            if g is None:
                out.append(p)
            elif isinstance(g, tuple):
                out.append(self._sparse(i, *g, p))
            else:
                out.append(self._dense(i, np.asarray(g), p))
        self.iterations += 1
        return out

    def apply_dense(self, grads: Sequence[np.ndarray], params: Sequence[np.ndarray]) -> list:
        """:meth:`apply` with dense gradients only."""
        return self.apply(grads, params)

    def _dense(self, i: int, grad: np.ndarray, p_stored: np.ndarray) -> np.ndarray:
        c = self._c
        lr, rho, mu, eps, omr = (
            self._lr(),
            self._h("rho"),
            self._h("momentum"),
            self._h("epsilon"),
            None,
        )
        omr = self._one_minus_rho()
        g = grad.astype(self.storage).astype(self.dtype)
        p = p_stored.astype(self.dtype)
        rms = self._slot("rms", i, p).astype(self.dtype)
        mg = self._slot("mg", i, p).astype(self.dtype) if self.centered else None
        mom = self._slot("momentum", i, p).astype(self.dtype) if self.has_momentum_slot else None
        if self.rule == "torch":
            if self.maximize:
                g = -g
            if self.weight_decay:
                g = g + c(self.weight_decay) * p
            rms = rms * rho + (omr * g) * g
            if mg is not None:  # torch.lerp(ga, g, w), in its two branches
                mg = mg + omr * (g - mg) if omr < 0.5 else g - (g - mg) * (c(1) - omr)
            avg = np.sqrt(rms - mg * mg if mg is not None else rms) + eps
            if mom is not None:
                mom = mom * mu + g / avg
                step = lr * mom
            else:  # p.addcdiv_(g, avg, value=−lr): (−lr·g)/avg
                step = (lr * g) / avg
        elif self.fused_kernel:  # keras2 with momentum, tf1
            rms = rms + (g * g - rms) * omr
            if mg is not None:
                mg = mg + (g - mg) * omr
            mom = mom * mu + (g * lr) / np.sqrt((rms - mg * mg if mg is not None else rms) + eps)
            step = mom
        else:  # keras2 without momentum, keras3: op by op
            rms = rho * rms + omr * (g * g)
            if mg is not None:
                mg = rho * mg + omr * g
            variance = rms - mg * mg if mg is not None else rms
            if self.rule == "keras3":
                step = (lr * g) / np.sqrt(variance + eps)
                if mom is not None:
                    mom = mu * mom + step
                    step = mom
            else:
                step = (lr * g) / (np.sqrt(variance) + eps)
        self._store("rms", i, rms)
        if mg is not None:
            self._store("mg", i, mg)
        if mom is not None:
            self._store("momentum", i, mom)
        if self.rule == "keras3" and self.weight_decay:
            p = p - (p * c(self.weight_decay)) * lr  # its own rounded assignment
            return (p - step).astype(self.storage)
        if self.storage == self.dtype:
            return (p - step).astype(self.storage)
        return (p_stored + (-step).astype(self.storage)).astype(self.storage)

    def _sparse(
        self, i: int, values: np.ndarray, indices: np.ndarray, p_stored: np.ndarray
    ) -> np.ndarray:
        assert self.rule in ("keras2", "tf1"), "sparse rows: Keras 2 and TF1 only"
        assert self.storage == self.dtype, "sparse rows: no low-precision storage"
        c = self._c
        lr, rho, mu, eps, omr = (
            self._lr(),
            self._h("rho"),
            self._h("momentum"),
            self._h("epsilon"),
            self._one_minus_rho(),
        )
        summed = summed_rows(values, indices, self.dtype)
        rows = list(summed)  # tf.unique: first-seen order
        rms = self._slot("rms", i, p_stored).copy()
        mg = self._slot("mg", i, p_stored).copy() if self.centered else None
        p = p_stored.copy()
        if self.has_momentum_slot:  # lazy rows: only the named rows of every slot change
            mom = self._slot("momentum", i, p_stored).copy()
            for k in rows:
                g = summed[k]
                rms[k] = rms[k] * rho + (g * g) * omr
                inner = rms[k] + eps
                if mg is not None:
                    mg[k] = mg[k] * rho + g * omr
                    inner = inner - mg[k] * mg[k]
                mom[k] = mom[k] * mu + ((c(1) / np.sqrt(inner)) * lr) * g
                p[k] = p[k] - mom[k]
            self._store("momentum", i, mom)
        else:  # rms/mg decay on every row; only the named rows of p move
            rms = rms * rho
            if mg is not None:
                mg = mg * rho
            for k in rows:
                g = summed[k]
                rms[k] = rms[k] + (g * g) * omr
                variance = rms[k]
                if mg is not None:
                    mg[k] = mg[k] + g * omr
                    variance = rms[k] - mg[k] * mg[k]
                p[k] = p[k] - (lr * g) / (np.sqrt(variance) + eps)
        self._store("rms", i, rms)
        if mg is not None:
            self._store("mg", i, mg)
        return p.astype(self.storage)


def run(
    ref: Reference, params: Sequence[np.ndarray], grads: Sequence[Sequence[Grad]]
) -> list[list[np.ndarray]]:
    """Apply ``grads[t]`` for every step ``t``; return the parameters after each step."""
    trajectory = []
    for g in grads:
        params = ref.apply(g, params)
        trajectory.append(params)
    return trajectory


def assert_same_trajectory(
    got: Sequence[Sequence[Any]], want: Sequence[Sequence[np.ndarray]]
) -> None:
    """Assert bit-for-bit equality of two parameter trajectories (as ``run`` returns them)."""
    assert len(got) == len(want), f"{len(got)} steps, expected {len(want)}"
    for t, (got_t, want_t) in enumerate(zip(got, want, strict=True)):
        for i, (g, w) in enumerate(zip(got_t, want_t, strict=True)):
            np.testing.assert_array_equal(np.asarray(g), w, err_msg=f"step {t + 1}, leaf {i}")
