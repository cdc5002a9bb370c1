"""The workloads: parameter layouts x RMSprop variants, with inputs drawn once and shared."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LEARNING_RATE = 1e-3
RHO = 0.9
EPSILON = 1e-7
MOMENTUM = 0.9

#: variant -> (momentum, centered)
VARIANTS: dict[str, tuple[float, bool]] = {
    "plain": (0.0, False),
    "momentum": (MOMENTUM, False),
    "centered": (0.0, True),
    "centered_momentum": (MOMENTUM, True),
}

#: float32 bytes a dense step must move per parameter: read p, g, rms (+mom, +mg); write p, rms
#: (+mom, +mg).
BYTES_PER_PARAM: dict[str, int] = {
    "plain": 20,
    "momentum": 28,
    "centered": 28,
    "centered_momentum": 36,
}


@dataclass(frozen=True)
class Shape:
    """A parameter layout: full-size and ``--quick`` leaf shapes, default variants."""

    name: str
    kind: str  # "dense" or "embedding"
    full: tuple[tuple[int, ...], ...]
    quick: tuple[tuple[int, ...], ...]
    variants: tuple[str, ...]
    description: str
    rows: int = 0  # embedding: rows touched per step (full)
    quick_rows: int = 0
    #: why the default run leaves out the other variants (``--all-variants`` adds them)
    variants_note: str = ""


SHAPES: tuple[Shape, ...] = (
    Shape(
        "dense16m_1leaf",
        "dense",
        ((4096, 4096),),
        ((256, 256),),
        tuple(VARIANTS),
        "16M float32 parameters as one leaf",
    ),
    Shape(
        "dense16m_512leaves",
        "dense",
        ((128, 256),) * 512,
        ((32, 64),) * 32,
        tuple(VARIANTS),
        "16M float32 parameters as 512 leaves of 32768",
    ),
    Shape(
        "small4096x256",
        "dense",
        ((256,),) * 4096,
        ((256,),) * 64,
        ("plain",),
        "4096 leaves of 256 float32 parameters (per-leaf overhead)",
        variants_note=(
            "only the plain variant by default: XLA:CPU needs 15-100 s to compile one 4096-leaf "
            "step (per implementation, mode and variant); --all-variants runs the other three"
        ),
    ),
    Shape(
        "embedding1m",
        "embedding",
        ((1_000_000, 64),),
        ((16384, 16),),
        ("plain", "momentum"),
        "1M x 64 embedding table, 1024 rows touched per step",
        rows=1024,
        quick_rows=64,
        variants_note=(
            "centered variants are left out by default (same sparse code paths as plain/momentum);"
            " --all-variants runs them"
        ),
    ),
)


@dataclass
class Workload:
    """One (shape, variant) pair, with its inputs generated once and shared by every mode."""

    shape: Shape
    variant: str
    leaf_shapes: tuple[tuple[int, ...], ...]
    rows: int = 0
    params: list[np.ndarray] = field(default_factory=list)
    grads: list[np.ndarray] = field(default_factory=list)
    indices: np.ndarray | None = None  # embedding
    values: np.ndarray | None = None  # embedding

    @property
    def name(self) -> str:
        return f"{self.shape.name}/{self.variant}"

    @property
    def kind(self) -> str:
        return self.shape.kind

    @property
    def n_params(self) -> int:
        return int(sum(math.prod(s) for s in self.leaf_shapes))

    @property
    def momentum(self) -> float:
        return VARIANTS[self.variant][0]

    @property
    def centered(self) -> bool:
        return VARIANTS[self.variant][1]

    def make_inputs(self, seed: int = 0) -> None:
        """Draws the parameters and gradients (float32, standard normal)."""
        rng = np.random.default_rng(seed)
        self.params = [rng.standard_normal(s, dtype=np.float32) for s in self.leaf_shapes]
        if self.kind == "embedding":
            num_rows, dim = self.leaf_shapes[0]
            # Random rows, duplicates allowed (TF sums them), as an embedding lookup produces.
            self.indices = rng.integers(0, num_rows, size=self.rows, dtype=np.int32)
            self.values = rng.standard_normal((self.rows, dim), dtype=np.float32)
            dense = np.zeros((num_rows, dim), np.float32)
            np.add.at(dense, self.indices, self.values)
            self.grads = [dense]
        else:
            self.grads = [rng.standard_normal(s, dtype=np.float32) for s in self.leaf_shapes]

    def free_inputs(self) -> None:
        self.params, self.grads, self.indices, self.values = [], [], None, None


def build_workloads(quick: bool, only: Sequence[str], all_variants: bool) -> list[Workload]:
    """The workloads selected by ``only`` (substrings of ``shape/variant``; empty: all)."""
    out = []
    for shape in SHAPES:
        for variant in tuple(VARIANTS) if all_variants else shape.variants:
            wl = Workload(
                shape,
                variant,
                shape.quick if quick else shape.full,
                rows=shape.quick_rows if quick else shape.rows,
            )
            if not only or any(sel in wl.name for sel in only):
                out.append(wl)
    return out
