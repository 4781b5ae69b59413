"""Kernel state inheritance in a build: which notebook a page inherits from, planned
before it (its key is part of the child's), and the line on the child's page that says
so. How the state travels is :mod:`sphinx_nbcache.run.state`'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from docutils import nodes

from sphinx_nbcache.extension.instances import doc_link, insert_under_title
from sphinx_nbcache.notebook.read import NotebookReadError, SourceNotebook

if TYPE_CHECKING:
    from sphinx.environment import BuildEnvironment


def declared_parent(notebook: SourceNotebook) -> str | None:
    """The path in the notebook's ``nbcache: {inherit: ...}``, as written."""
    own = notebook.notebook.metadata.get("nbcache", {})
    value = own.get("inherit") if isinstance(own, dict) else None
    return value if isinstance(value, str) else None


def parent_docname(env: BuildEnvironment, docname: str, declared: str) -> str:
    """The document ``declared`` names, relative to the folder of ``docname``'s file.

    :raises NotebookReadError: if it names no document of the project.
    """
    folder = Path(env.doc2path(docname)).parent
    target = os.path.normpath(folder / declared)
    parent = env.path2doc(target) if Path(target).is_file() else None
    if parent is None or parent not in env.found_docs:
        raise NotebookReadError(
            f"nbcache.inherit: {declared!r} is not a notebook of the project "
            f"(looked for {Path(os.path.relpath(target, env.srcdir)).as_posix()})"
        )
    return parent


def cycle_error(chain: list[str], parent: str) -> NotebookReadError:
    loop = [*chain[chain.index(parent) :], parent]
    return NotebookReadError(
        "nbcache.inherit: the notebooks inherit in a cycle: " + " -> ".join(loop)
    )


def note_inherited(document: nodes.document, docname: str, parent: str) -> None:
    """Say under the page's title which notebook's final state it starts from."""
    about = nodes.paragraph(classes=["nbcache-inherits"])
    about += nodes.Text("Starts from the final kernel state of ")
    about += doc_link(parent, docname)
    about += nodes.Text(".")
    insert_under_title(document, about)
