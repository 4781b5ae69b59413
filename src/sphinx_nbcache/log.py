"""Warning subtypes, so users can silence each kind with ``suppress_warnings``."""

from __future__ import annotations

import enum
from typing import Any

from sphinx.util import logging

WARNING_TYPE = "nbcache"
LOGGER = logging.getLogger("sphinx_nbcache")


class Subtype(enum.Enum):
    """Each member is usable as ``nbcache.<value>`` in ``suppress_warnings``."""

    config = "config"
    """A ``nbcache_*`` configuration value is invalid."""
    read = "read"
    """A notebook could not be read, so it was neither executed nor cached."""
    cell = "cell"
    """A cell raised an exception the notebook does not allow."""
    timeout = "timeout"
    """A cell, or the whole notebook, ran past its time limit."""
    kernel = "kernel"
    """The kernel died, could not start, or is not installed."""
    internal = "internal"
    """sphinx-nbcache itself failed while a notebook executed (a bug to report): an error
    with its traceback; nothing is stored, and the next build executes the notebook again."""
    cache = "cache"
    """A cache entry could not be read or validated and was treated as a miss."""
    store = "store"
    """A result could not be written to the cache."""
    executor = "executor"
    """The executor cannot run anything (a Dask scheduler out of reach): an error, and the
    build stops."""
    import_ = "import"
    """myst-nb's jupyter-cache could not be imported on a first build (unreadable, or the
    cache not writable); the notebooks execute instead."""
    parameters = "parameters"
    """A notebook instance passes parameters its notebook does not define, or the notebook
    has no cell tagged ``parameters`` (papermill's warnings)."""
    instances = "instances"
    """An instances table names a glue key an instance did not glue, or a template with
    no instances."""
    inherit = "inherit"
    """A notebook was not executed because the one it inherits from failed, or its final
    state could not be restored; or a notebook others inherit from leaves names out of
    its final state (they cannot be pickled)."""
    resume = "resume"
    """A notebook planned to resume from a checkpoint could not (the kept state is gone,
    damaged or signed elsewhere, or did not load) and executed from its first cell."""
    preload = "preload"
    """Kernels could not be forked as ``nbcache_kernel_preload`` asks, or a module to
    preload could not be imported; kernels then start normally."""


def warn(msg: str, subtype: Subtype, location: Any = None) -> None:
    """Log a located warning; Sphinx appends ``[nbcache.<subtype>]`` itself."""
    LOGGER.warning(msg, type=WARNING_TYPE, subtype=subtype.value, location=location)


def report_error(msg: str, subtype: Subtype, location: Any = None) -> None:
    """Log a located error (``nb_execution_raise_on_error``)."""
    LOGGER.error(msg, type=WARNING_TYPE, subtype=subtype.value, location=location)
