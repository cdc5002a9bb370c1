"""The targets: one table of data (:data:`TARGETS`), judged by one loop (:func:`evaluate`).

A target's value is ``num / den`` on every report record it applies to, where each side is a
:class:`Ref`: a field of the record (``limit_s``, ``peak_ratio``) or a field of a mode's result
(``median_s``, ``first_call_s``), the best (smallest) over several modes. A missing side makes the
target ``SKIP``, never ``PASS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the "no slower than" thresholds: ``1 + --tolerance``
NO_SLOWER = "no_slower"


@dataclass(frozen=True)
class Ref:
    """A number from a report record: ``field`` of the record itself (no ``modes``), or of
    the best of ``modes``' results (the smallest value)."""

    field: str
    modes: tuple[str, ...] = ()

    def get(self, record: dict[str, Any]) -> tuple[float | None, str]:
        """The value and the mode it came from ('' for a record field)."""
        if not self.modes:
            value = record.get(self.field)
            return (float(value) if isinstance(value, (int, float)) else None), ""
        found = []
        for mode in self.modes:
            value = record.get("results", {}).get(mode, {}).get(self.field)
            if isinstance(value, (int, float)):
                found.append((float(value), mode))
        return min(found) if found else (None, "")


def median(*modes: str) -> Ref:
    return Ref("median_s", modes)


def first_call(*modes: str) -> Ref:
    return Ref("first_call_s", modes)


LIMIT = Ref("limit_s")


@dataclass(frozen=True)
class Target:
    """``num / den`` (``num`` alone without ``den``) compared with ``threshold`` by ``op``, on
    the records of ``kind`` whose shape is in ``shapes`` (empty: all) and whose variant is in
    ``variants`` (empty: all). ``note`` is shown next to a non-PASS and may use the record's
    fields (``{bytes_per_param}``)."""

    id: str
    description: str
    num: Ref
    den: Ref | None
    op: str
    threshold: float | str
    kind: str = "dense"
    shapes: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    note: str = ""

    def applies(self, record: dict[str, Any]) -> bool:
        return (
            record["kind"] == self.kind
            and (not self.shapes or record["shape"] in self.shapes)
            and (not self.variants or record["variant"] in self.variants)
        )


_DENSE16M = ("dense16m_1leaf", "dense16m_512leaves")
_MULTI_LEAF = ("dense16m_512leaves", "small4096x256")
_NO_MOMENTUM = ("plain", "centered")
_WITH_MOMENTUM = ("momentum", "centered_momentum")
_TF = ("tf_keras/eager", "tf_keras/tf_function")
_JIT = "jrmsprop/jit_donated"
_APPLY = "jrmsprop/apply_gradients"
_SPARSE = "jrmsprop/sparse_jit"
_STREAMS = (
    "TF semantics: without momentum rms (and mg) decay on every row, so the sparse step must "
    "stream the whole rms table; speed-up bounded by {bytes_per_param}/{sparse_bytes_per_param}"
    " bytes"
)

TARGETS: tuple[Target, ...] = (
    # dense workloads
    Target("jit_vs_limit", "jit+donated step / bandwidth limit", median(_JIT), LIMIT, "<=", 1.2,
           shapes=_DENSE16M),
    Target("jit_vs_optax", "jit+donated step / optax jit+donated", median(_JIT),
           median("optax/jit_donated"), "<=", NO_SLOWER),
    Target("compile_vs_optax", "first call (compilation) / optax's first call",
           first_call(_JIT), first_call("optax/jit_donated"), "<=", 1.0, shapes=_MULTI_LEAF),
    Target("leaves_vs_flat", "jit+donated step / the same parameters as one flat leaf",
           median(_JIT), median("jrmsprop/jit_flat"), "<=", 1.3, shapes=_MULTI_LEAF),
    Target("small_vs_torch", "jit+donated step / torch foreach", median(_JIT),
           median("torch/foreach"), "<=", NO_SLOWER, shapes=("small4096x256",)),
    Target("apply_vs_jit", "apply_gradients / jit+donated step", median(_APPLY), median(_JIT),
           "<=", 1.3),
    Target("apply_vs_torch", "apply_gradients / torch foreach", median(_APPLY),
           median("torch/foreach"), "<", 1.0),
    Target("apply_vs_tf_keras", "apply_gradients / tf_keras (faster mode)", median(_APPLY),
           median(*_TF), "<", 1.0),
    Target("eager_vs_optax", "eager update / optax eager update", median("jrmsprop/eager_update"),
           median("optax/eager_update"), "<=", 0.3),
    # options that other work adds (SKIP until they exist)
    Target("fused_vs_xla", "fused CPU kernel step / XLA step", median("jrmsprop/jit_fused"),
           median("jrmsprop/jit_xla"), "<", 1.0, shapes=_DENSE16M),
    Target("fused_vs_limit", "fused CPU kernel step / bandwidth limit",
           median("jrmsprop/jit_fused"), LIMIT, "<=", 1.2, shapes=_DENSE16M),
    Target("packed_vs_flat", "packed-slot step / the same parameters as one flat leaf",
           median("jrmsprop/jit_packed"), median("jrmsprop/jit_flat"), "<=", 1.3,
           shapes=_MULTI_LEAF),
    Target("packed_compile_vs_optax", "packed-slot first call / optax's first call",
           first_call("jrmsprop/jit_packed"), first_call("optax/jit_donated"), "<=", 1.0,
           shapes=_MULTI_LEAF),
    Target("packed_params_vs_flat", "packed-parameter step / the same parameters as one flat "
           "leaf", median("jrmsprop/jit_packed_params"), median("jrmsprop/jit_flat"), "<=", 1.3,
           shapes=_MULTI_LEAF),
    Target("packed_params_compile_vs_optax", "packed-parameter first call / optax's first call",
           first_call("jrmsprop/jit_packed_params"), first_call("optax/jit_donated"), "<=", 1.0,
           shapes=_MULTI_LEAF),
    Target("packed_fused_vs_limit", "fused CPU kernel on packed parameters / bandwidth limit",
           median("jrmsprop/jit_packed_fused"), LIMIT, "<=", 1.2, shapes=("dense16m_512leaves",)),
    # the embedding
    Target("sparse_vs_dense", "dense jit step / sparse jit step (speed-up)",
           median("jrmsprop/dense_jit"), median(_SPARSE), ">=", 50.0, kind="embedding",
           variants=_WITH_MOMENTUM),
    Target("sparse_vs_dense", "dense jit step / sparse jit step (speed-up)",
           median("jrmsprop/dense_jit"), median(_SPARSE), ">=", 50.0, kind="embedding",
           variants=_NO_MOMENTUM, note=_STREAMS),
    Target("sparse_vs_tf", "sparse jit step / TF sparse apply (faster mode)", median(_SPARSE),
           median(*_TF), "<", 1.0, kind="embedding"),
    Target("dense_vs_optax", "dense jit step / optax jit+donated", median("jrmsprop/dense_jit"),
           median("optax/dense_jit"), "<=", NO_SLOWER, kind="embedding"),
    Target("apply_vs_jit", "apply_gradients (sparse) / sparse jit step", median(_APPLY),
           median(_SPARSE), "<=", 1.3, kind="embedding"),
    Target("apply_vs_tf_keras", "apply_gradients (sparse) / TF sparse (faster mode)",
           median(_APPLY), median(*_TF), "<", 1.0, kind="embedding"),
    # peak memory (the not-donated case is the method check, not a target)
    Target("memory", "peak / (params + grads + state)", Ref("peak_ratio"), None, "<=", 1.1,
           kind="memory", shapes=("jrmsprop_jit_donated", "jrmsprop_apply_gradients",
                                  "optax_jit_donated")),
)  # fmt: skip


def memory_records(memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memory results as records the targets can apply to (shape = the case)."""
    return [
        {**m, "name": f"memory/{m['case']}/{m['variant']}", "kind": "memory", "shape": m["case"]}
        for m in memory
    ]


def judge(value: float | None, op: str, threshold: float) -> str:
    """PASS / MISS / SKIP (no value)."""
    if value is None or not math.isfinite(value):
        return "SKIP"
    passed = {"<=": value <= threshold, "<": value < threshold, ">=": value >= threshold}[op]
    return "PASS" if passed else "MISS"


def evaluate(
    records: list[dict[str, Any]], tolerance: float, targets: tuple[Target, ...] = TARGETS
) -> list[dict[str, Any]]:
    """Every target on every record it applies to, in record order then table order."""
    out = []
    for record in records:
        for t in targets:
            if not t.applies(record):
                continue
            num, num_mode = t.num.get(record)
            den, den_mode = t.den.get(record) if t.den is not None else (1.0, "")
            value = None if num is None or den is None or den <= 0 else num / den
            threshold = 1.0 + tolerance if t.threshold == NO_SLOWER else float(t.threshold)
            notes = [t.note.format(**record)] if t.note else []
            if t.threshold == NO_SLOWER:
                notes.append(f"'no slower' with {tolerance:.0%} noise tolerance")
            for ref, mode in ((t.num, num_mode), (t.den, den_mode)):
                if ref is not None and len(ref.modes) > 1 and mode:
                    notes.append(f"vs {mode}")
            if record.get("error"):
                notes.append(record["error"])
            out.append(
                {
                    "id": t.id,
                    "workload": record["name"],
                    "description": t.description,
                    "value": value,
                    "op": t.op,
                    "threshold": threshold,
                    "status": judge(value, t.op, threshold),
                    "note": "; ".join(notes),
                }
            )
    return out
