"""Pure: source notebook + stored result -> the notebook myst-nb renders."""

from __future__ import annotations

import copy

import nbformat

from sphinx_nbcache.execute import ExecutionResult


def merge_outputs(
    notebook: nbformat.NotebookNode, result: ExecutionResult
) -> nbformat.NotebookNode:
    """A copy of ``notebook`` whose code cells carry ``result``'s outputs.

    Prose, cell metadata and tags come from the source, so render-only edits show up
    without executing anything. The key guarantees the code cells line up one to one.
    """
    merged = copy.deepcopy(notebook)
    code_cells = [cell for cell in merged.cells if cell.cell_type == "code"]
    if len(code_cells) != len(result.outputs):
        raise ValueError(
            f"result has {len(result.outputs)} code cells, notebook has {len(code_cells)}"
        )
    for cell, outputs, count in zip(
        code_cells, result.outputs, result.execution_counts, strict=True
    ):
        cell.outputs = [nbformat.from_dict(output) for output in outputs]
        cell.execution_count = count
    for name, value in result.metadata.items():
        merged.metadata[name] = nbformat.from_dict(value)
    return merged
