"""Sphinx configuration of the skot documentation.

Build: ``python -m sphinx -b html -W docs docs/_build/html``. The gallery (sphinx-gallery over
``examples/``) runs every example; skip running them with the environment variable
``SKOT_DOCS_PLOT_GALLERY=0`` (the gallery pages are still generated, without outputs).
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
if (DOCS.parent / "skot" / "__init__.py").is_file():
    sys.path.insert(0, str(DOCS.parent))  # document the checkout, installed or not

import skot  # noqa: E402

project = "skot"
author = "the skot developers"
copyright = "2026, the skot developers"  # noqa: A001
version = release = skot.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.md5"]

# -- autodoc / autosummary / numpydoc -------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # document what ``__all__`` exports, nothing else
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# -- sphinx-gallery -------------------------------------------------------------------------
_plot_gallery = os.environ.get("SKOT_DOCS_PLOT_GALLERY", "1").lower() not in ("0", "false", "no")

sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "plot_gallery": _plot_gallery,
    "abort_on_example_error": True,
    "download_all_examples": False,
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "min_reported_time": 1,
}

# -- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skot {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False


def _skip_request_setters(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods scikit-learn generates for metadata routing."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_request_setters)
