"""Optimizer-state checkpoints (see README.md). A package, so that pytest does not confuse
``generate.py`` here with ``tests/golden/generate.py``."""
