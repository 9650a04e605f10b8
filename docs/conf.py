"""Sphinx configuration of the dualact documentation.

Build (warnings are errors):

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build/html

``catalog.md`` is generated from ``catalog/_registry.json`` by ``gen_catalog.py`` at every build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing the modules for autodoc never needs an accelerator

import gen_catalog  # noqa: E402

gen_catalog.write(HERE / "catalog.md")

import dualact  # noqa: E402

project = "dualact"
author = "the dualact authors"
copyright = "the dualact authors, Apache-2.0"  # noqa: A001
release = dualact.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"dualact {release}"
html_theme_options = {
    "description": "Infinite-width NNGP/NTK kernels for any activation",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}


def _skip_member(app, what, name, obj, skip, options):
    """Skip members documented elsewhere.

    * the exception types re-exported by ``dualact`` live on the page of :mod:`dualact.errors`;
    * methods that scikit-learn adds to every estimator (``set_fit_request``...) are scikit-learn's.
    """
    module = getattr(obj, "__module__", None) or ""
    if app.env.temp_data.get("autodoc:module") == "dualact" and module == "dualact.errors":
        return True
    if module.startswith("sklearn."):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
