"""Sphinx configuration of the sphinx-nbcache documentation, built with the extension itself."""

from sphinx_nbcache import __version__

project = "sphinx-nbcache"
author = "sphinx-nbcache developers"
copyright = "sphinx-nbcache developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = ["sphinx_nbcache"]  # loads myst_nb (and through it myst_parser)

# The docs eat their own cooking: notebook pages go through sphinx-nbcache's cache.
nb_execution_mode = "cache"
nb_execution_timeout = 60
nb_execution_raise_on_error = True  # a broken example notebook fails the docs build

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "jupyter_execute", ".nbcache", "**/.ipynb_checkpoints"]

# The theme of Jupyter Book 1 and most myst-nb books: notebook outputs (DataFrames,
# tracebacks) look here as they will in yours.
html_theme = "sphinx_book_theme"
html_title = "sphinx-nbcache"
