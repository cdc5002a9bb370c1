"""Print, as a Markdown table, how far jrmsprop is from every golden framework trajectory.

Run from the repository root (no framework needed)::

    python tests/golden/deviation_table.py

Columns: the framework, the configuration (constructor arguments in the framework's own names),
the number of steps, the largest absolute deviation of the parameters over the whole trajectory,
that deviation divided by the largest parameter magnitude of the trajectory ("/ scale"; one
float32 ulp at the scale is 6e-8 to 1.2e-7 of it), the largest element-wise relative deviation
(|Δ| / |p| over all elements, blown up by elements that pass near 0), the worst element measured
in units of the framework's test tolerance (``|Δ| / (atol_for(framework)·scale + RTOL·|p|)``,
<= 1 passes), and the largest
deviation of the final slots divided by each slot's scale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _config(case: Any) -> str:
    parts = []
    for key, val in case.kwargs.items():
        if isinstance(val, dict):
            val = val["class_name"]
        parts.append(f"{key}={val}")
    if any(case.meta["sparse"]):
        parts.append("**sparse** (IndexedSlices, repeated indices)")
    if case.transfer_at is not None:
        parts.append(f"**state transfer** at step {case.transfer_at}")
    return ", ".join(parts)


def rows() -> list[list[str]]:
    """One row per golden file (plus one per state-transfer continuation)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import golden_io as gio
    import jax.numpy as jnp

    import jrmsprop

    out = []
    for path in gio.golden_files():
        case = gio.load_case(path)
        atol = gio.atol_for(case.framework)
        traj, state = gio.replay(case)
        dev = gio.traj_deviation(case.traj, traj, atol)
        ours = gio.state_slots(state)
        slot_dev = gio.ZERO
        for name, theirs in case.slots.items():
            if ours[name] is not None:
                slot_dev = slot_dev.merge(gio.traj_deviation(theirs, ours[name], atol))
        out.append(_row(case, _config(case), case.steps, dev, slot_dev))
        k = case.transfer_at
        if k is None:
            continue
        params = [jnp.asarray(t[k - 1]) for t in case.traj]
        if case.framework == "torch":
            st = jrmsprop.compat.state_from_torch(case.torch_state_dict(), params)
            how = "continued from `compat.state_from_torch`"
        else:
            kw = case.kwargs
            st = jrmsprop.compat.state_from_keras2(
                case.tfw, params, momentum=kw["momentum"] > 0, centered=kw["centered"]
            )
            how = "continued from `compat.state_from_keras2`"
        traj, state = gio.replay(case, start=k, params=params, state=st)
        dev = gio.traj_deviation([t[k:] for t in case.traj], traj, atol)
        ours = gio.state_slots(state)
        slot_dev = gio.ZERO
        for name, theirs in case.slots.items():
            slot_dev = slot_dev.merge(gio.traj_deviation(theirs, ours[name], atol))
        out.append(_row(case, f"{_config(case)}; {how}", case.steps - k, dev, slot_dev))
    return out


def _row(case: Any, config: str, steps: int, dev: Any, slot_dev: Any) -> list[str]:
    return [
        case.framework,
        config,
        str(steps),
        f"{dev.max_abs:.2e}",
        f"{dev.max_rel_scale:.2e}",
        f"{dev.max_rel:.2e}",
        f"{dev.worst_ratio:.2f}",
        f"{slot_dev.max_rel_scale:.2e}",
    ]


HEADER = [
    "framework",
    "configuration",
    "steps",
    "max abs dev",
    "max abs dev / scale",
    "max rel dev",
    "worst / tolerance",
    "slots max dev / scale",
]


def main() -> None:
    """Print the table."""
    table = rows()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join("---" for _ in HEADER) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    worst = max(float(r[4]) for r in table)
    print(f"\nworst max abs dev / scale over {len(table)} rows: {worst:.2e}")


if __name__ == "__main__":
    main()
