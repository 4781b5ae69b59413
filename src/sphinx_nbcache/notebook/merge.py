"""Pure: source notebook + stored result -> the notebook myst-nb renders."""

from __future__ import annotations

import nbformat

from sphinx_nbcache.model import ExecutionResult
from sphinx_nbcache.notebook.cells import code_cell_indices


def merge_outputs(
    notebook: nbformat.NotebookNode, result: ExecutionResult
) -> nbformat.NotebookNode:
    """``notebook`` with ``result``'s outputs in its code cells.

    Prose, cell metadata and tags come from the source, so render-only edits show up
    without executing anything. The key guarantees the code cells line up one to one.
    The notebook, its metadata and its code cells are new; everything else is shared
    with ``notebook`` (a deep copy cost more than the rest of a cache hit), so callers
    replace values rather than change them in place.
    """
    code_count = len(code_cell_indices(notebook.cells))
    if code_count != len(result.outputs):
        raise ValueError(f"result has {len(result.outputs)} code cells, notebook has {code_count}")
    executed = zip(result.outputs, result.execution_counts, strict=True)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            outputs, count = next(executed)
            cell = nbformat.NotebookNode(
                cell,
                outputs=[nbformat.from_dict(output) for output in outputs],
                execution_count=count,
            )
        cells.append(cell)
    metadata = nbformat.NotebookNode(
        notebook.metadata,
        **{name: nbformat.from_dict(value) for name, value in result.metadata.items()},
    )
    return nbformat.NotebookNode(notebook, metadata=metadata, cells=cells)
