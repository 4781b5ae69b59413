"""Concurrent notebook execution with an on-disk output cache, for Sphinx and myst-nb."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sphinx.application import Sphinx


def setup(app: Sphinx) -> dict[str, Any]:
    """Sphinx entry point; the wiring is imported lazily, so that ``nbcache`` commands that
    need no project configuration do not import Sphinx."""
    from sphinx_nbcache.run.early import start_early

    early = start_early(app)  # first, so that the server imports while myst-nb loads
    from sphinx_nbcache.extension.setup import setup_extension

    return setup_extension(app, early)
