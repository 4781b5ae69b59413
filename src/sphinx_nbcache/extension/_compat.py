"""What differs between the supported versions of Sphinx, myst-parser and myst-nb, in one
place: Sphinx 7.4 to 9, myst-parser 3 to 5, myst-nb 1.0 to 1.4."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, cast

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def env_app(env: BuildEnvironment) -> Sphinx:
    """The application of a build environment: ``env._app`` where it exists (``env.app``
    is gone in Sphinx 9), ``env.app`` in Sphinx 7.4."""
    return cast(Sphinx, getattr(env, "_app", None) or env.app)


NOTES_FOR_ANY_DOCUMENT = "docname" in inspect.signature(BuildEnvironment.note_dependency).parameters


def note_dependency(env: BuildEnvironment, path: Path, docname: str) -> None:
    """Sphinx reads ``docname`` again when the file at ``path`` changes. Sphinx 8 takes
    the document as an argument; Sphinx 7.4 only notes for the document being read, so
    its table of dependencies is filled directly (as its own method does)."""
    if NOTES_FOR_ANY_DOCUMENT:
        env.note_dependency(path, docname=docname)
    else:
        cast(dict[str, set[str]], env.dependencies)[docname].add(str(path))


def reading_document_with(
    formats: dict[str, tuple[str, dict[str, Any], bool]],
    path: Path,
    reader: tuple[str, dict[str, Any], bool],
) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """myst-nb's ``custom_formats`` with ``reader`` reading the document at ``path``.

    myst-nb applies a format to the paths that end with its key, longest key first, so
    the document's own path picks it out of every suffix; myst-nb 1.1 alone compares only
    the path's last suffix with each key, so that suffix is mapped too (in a copy of the
    settings used for this document only).
    """
    return {**formats, path.suffix: reader, str(path): reader}
