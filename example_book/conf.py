"""Sphinx configuration of the example book: notebooks executed through sphinx-nbcache."""

project = "sphinx-nbcache example book"
author = "sphinx-nbcache developers"

extensions = ["sphinx_nbcache"]  # loads myst_nb, which loads myst_parser

# "cache": every notebook goes through sphinx-nbcache's on-disk cache (.nbcache/ here).
nb_execution_mode = "cache"
nb_execution_timeout = 60

# Kernels are forked from a process that imported ipykernel and these once, instead of
# each notebook importing them itself (see "nbcache_kernel_preload" in the docs).
nbcache_kernel_preload = ["numpy", "pandas", "matplotlib.pyplot"]

# Notebook instances: one template notebook, a page per parameter set, each executed and
# cached on its own (see "Notebook instances" in the docs).
nbcache_instances = {
    "notebooks/waves": {
        "slow": {"frequency": 0.5},
        "fast": {"frequency": 2.0},
        "damped": {"parameters": {"frequency": 1.0, "damping": 0.4}, "title": "A wave dying out"},
    },
}

# Jupytext "percent" scripts are notebooks too.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}

# With ".py" registered as a notebook format, conf.py itself would become a page.
exclude_patterns = [
    "_build",
    "jupyter_execute",
    ".nbcache",
    "**/.ipynb_checkpoints",
    "conf.py",
]

html_theme = "sphinx_book_theme"  # as Jupyter Book 1 and most myst-nb books use
html_title = project
