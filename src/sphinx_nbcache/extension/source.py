"""A page's notebook as myst-nb reads it, with the project's settings."""

from __future__ import annotations

from pathlib import Path

from sphinx.environment import BuildEnvironment

from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.notebook.read import SourceNotebook, read_notebook


def read_source(
    env: BuildEnvironment, path: Path, text: str, parsed: ParsedStore
) -> SourceNotebook | None:
    """myst-nb's reading of ``text`` with the project's Markdown and notebook settings.

    :raises NotebookReadError: if the notebook reader fails on the text.
    """
    return read_notebook(
        path,
        text,
        env.myst_config,  # type: ignore[attr-defined]
        env.mystnb_config,  # type: ignore[attr-defined]
        parsed,
        env.config.source_encoding,
    )
