"""Sphinx configuration of the maskloss site: MyST markdown, numpydoc API reference, offline MathJax.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the repository root.
Figures (``docs/figures/*.py``) and tables (``docs/tables/*.py``) are generated at build time into
``docs/_generated/`` by the local extension ``docs/_ext/maskloss_generated.py``; every course chapter
is turned into a Jupyter notebook and executed by ``docs/_ext/maskloss_notebooks.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's maskloss (and tests.bug_gallery), not an installed copy
sys.path.insert(0, str(DOCS / "_ext"))

import maskloss  # noqa: E402

project = "maskloss"
author = "the maskloss authors"
copyright = "the maskloss authors"
release = maskloss.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # bundles MathJax 3 into _static/mathjax: no CDN
    "maskloss_generated",
    "maskloss_notebooks",  # every course chapter as an executed notebook, linked under its title
]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}

# Course pages not yet moved into chapters (they are rewritten as course chapters).
exclude_patterns = [
    "_build",
    "_generated",
    "**/_*.md",
    "figures/README.md",
]

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# sphinx-book-theme (as jax and optax): a responsive column; _static/maskloss.css wraps code to the
# column and lets wide tables scroll inside themselves, so nothing is cut off at 1280 or 800 pixels.
html_theme = "sphinx_book_theme"
html_title = "maskloss: the ground truth for masked sequence losses"
html_static_path = ["_static"]
html_css_files = ["maskloss.css"]
html_favicon = "_static/favicon.svg"  # else the browser asks for /favicon.ico: a 404 in the console
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,  # the course chapters' own notebook links are the downloads
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}  # a fresh browser profile has no stored mode: no console error


def _link_every_image(app: object, doctree: object) -> None:
    """Give every image a scale, so Sphinx wraps it in a link to its full-size file (click to enlarge).

    Sphinx links only images with a width, height or scale (``html_scaled_image_link``); the CSS
    keeps each inside the column, so a figure shown smaller than it was drawn is one click away.
    """
    from docutils import nodes

    assert isinstance(doctree, nodes.Node)
    for image in doctree.findall(nodes.image):
        if not any(key in image for key in ("scale", "width", "height")):
            image["scale"] = 100


def setup(app: Sphinx) -> None:
    app.connect("doctree-read", _link_every_image)
