"""``python -m jrmsprop`` / ``jrmsprop``: the command-line entry point.

Subcommands:

* ``demo``  -- port a Keras 2 RMSprop recipe to JAX: jrmsprop vs optax vs the recorded tf_keras
  loss curve on Auto MPG; a table and a PNG (the ``demo`` extra); see ``jrmsprop demo --help``.
* ``bench`` -- the optimizer benchmarks (needs ``pip install 'jrmsprop[bench]'``); see
  ``jrmsprop bench --help``. The benchmark ships with the source checkout (its ``benchmarks/``
  folder), not with the wheel: this only finds and runs it.

Everything after the subcommand is handed to that subcommand's own parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["build_parser", "load_benchmark", "main"]

_COMMANDS: dict[str, str] = {
    "demo": "port a Keras 2 RMSprop recipe: jrmsprop vs optax vs the tf_keras curve; table + PNG",
    "bench": "run the optimizer benchmarks (from a source checkout)",
}

#: the checkout that holds this package, when it is one (a wheel install has no benchmarks/ there)
_CHECKOUT = Path(__file__).resolve().parent.parent

NOT_IN_WHEEL = (
    "jrmsprop bench: the benchmark ships with the source checkout, not the wheel. "
    "Clone the repository and run `python -m jrmsprop bench` (or `python benchmarks/run.py`) "
    "from it, with jrmsprop installed from that checkout (`pip install -e '.[bench]'`); "
    "looked for {path}."
)


def _version() -> str:
    """The installed jrmsprop version (``unknown`` when running from an uninstalled tree)."""
    from importlib import metadata

    try:
        return metadata.version("jrmsprop")
    except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (used for ``--help``, ``--version`` and unknown commands)."""
    parser = argparse.ArgumentParser(
        prog="jrmsprop",
        description="jrmsprop: RMSprop for JAX that reproduces Keras, PyTorch and TF1 exactly.",
        epilog="Run `jrmsprop <command> --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, help_text in _COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def load_benchmark(checkout: Path = _CHECKOUT) -> ModuleType:
    """The benchmark harness (``benchmarks.harness``) of the source checkout ``checkout``.

    Args:
      checkout: the repository root (default: the folder above this package).

    Returns:
      The imported ``benchmarks.harness`` module (its ``main(argv)`` runs the benchmark).

    Raises:
      SystemExit: with a message saying so, when ``checkout`` has no ``benchmarks/harness.py``
        (jrmsprop installed from a wheel) or its ``benchmarks`` cannot be imported.
    """
    harness = checkout / "benchmarks" / "harness.py"
    if not harness.is_file():
        raise SystemExit(NOT_IN_WHEEL.format(path=harness))
    root = str(checkout)
    if root not in sys.path:
        sys.path.insert(0, root)
    package = sys.modules.get("benchmarks")
    if (
        package is not None
        and Path(getattr(package, "__file__", "") or "").parent != harness.parent
    ):
        raise SystemExit(
            f"jrmsprop bench: another module named 'benchmarks' is already imported "
            f"({package!r}); run from a fresh interpreter"
        )
    return importlib.import_module("benchmarks.harness")


def _load(command: str) -> Callable[[Sequence[str]], int | None]:
    """Import the subcommand's module lazily (so ``--help`` never imports JAX)."""
    if command == "demo":
        from jrmsprop._src import demo

        return demo.main
    return load_benchmark().main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _COMMANDS:
        rc = _load(args[0])(args[1:])
        return 0 if rc is None else int(rc)
    build_parser().parse_args(args)  # prints help/version or an error, and exits
    return 2  # pragma: no cover - parse_args always exits here (a command is required)


if __name__ == "__main__":
    sys.exit(main())
