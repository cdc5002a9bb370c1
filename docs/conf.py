"""Sphinx configuration of the jrmsprop documentation.

Build (warnings are errors):

    python3 -m venv .venv && .venv/bin/pip install -e '.[docs]'
    .venv/bin/sphinx-build -W -b html docs out/docs

Pages are MyST markdown; the notebooks of ``notebooks/`` (``docs/notebooks`` links to them) are
rendered from their stored outputs, never executed; the API reference is autodoc from the
docstrings (Google style, napoleon); ``docs/_ext/jrmsprop_tables.py`` generates the tables that
come from the code and from ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package from this checkout, and benchmarks/
sys.path.insert(0, str(DOCS / "_ext"))
# jrmsprop.keras (documented by autodoc) needs Keras 3 on its JAX backend.
os.environ.setdefault("KERAS_BACKEND", "jax")

import jrmsprop  # noqa: E402

project = "jrmsprop"
author = "jrmsprop developers"
copyright = "jrmsprop developers; Apache-2.0"  # noqa: A001
release = version = jrmsprop.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "jrmsprop_tables",
]

exclude_patterns = ["_build", "_generated", "_ext", "**.ipynb_checkpoints", "README.md"]
# index.md lists the notebooks in reading order, then `notebooks/*` for any new one: that glob
# may match nothing, which is fine (only that warning is silenced).
suppress_warnings = ["toc.empty_glob"]

# ---- MyST and the notebooks ----------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "substitution"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the stored outputs, as tests/test_notebooks.py checked them
nb_output_stderr = "show"

# ---- autodoc ---------------------------------------------------------------------------------

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# ---- HTML ------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = f"jrmsprop {release}"
html_theme_options = {
    "repository_url": "https://github.com/jrmsprop/jrmsprop",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_source_button": True,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
