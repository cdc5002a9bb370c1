"""Run the jrmsprop benchmark: ``python benchmarks/run.py [options]``.

The same as ``python -m jrmsprop bench`` (:mod:`benchmarks.harness`), except that the JSON report
goes to ``benchmarks/results/latest.json`` unless ``--json`` is given. See ``benchmarks/README.md``
for the workloads, the targets and how the numbers are measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--json" or a.startswith("--json=") for a in argv):
        argv += ["--json", str(ROOT / "benchmarks" / "results" / "latest.json")]
    sys.exit(main(argv))
