"""Pure: a notebook and a parameter set -> the notebook an instance executes, by papermill's
conventions, so the executed instance is a papermill output that scrapbook and people
recognise: defaults in the first cell tagged ``parameters``, the instance's values in a
new cell tagged ``injected-parameters`` right after it (at the top without one, in place
of an existing injected cell), the values in the metadata as ``papermill.parameters``."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from typing import Any

import nbformat

from sphinx_nbcache.cache.key import INJECTED_TAG

PARAMETERS_TAG = "parameters"


class ParameterError(ValueError):
    """Parameters that cannot be written for the notebook's kernel language."""


@dataclasses.dataclass(frozen=True)
class Injected:
    notebook: nbformat.NotebookNode
    """A new notebook; cells and metadata other than the injected ones are shared."""
    index: int
    """Where the injected cell is."""
    inserted: bool
    """False when it replaced an injected cell the notebook had."""
    defaults: int | None
    """Where the cell tagged ``parameters`` is; None without one."""
    unknown: tuple[str, ...]
    """Parameters the ``parameters`` cell does not define (papermill warns of them)."""


def inject(notebook: nbformat.NotebookNode, parameters: dict[str, Any]) -> Injected:
    """``notebook`` with ``parameters`` injected as papermill injects them.

    :raises ParameterError: for a kernel language other than Python when papermill (whose
        translators write the other languages) is not installed or has no translator.
    """
    kernelspec = notebook.metadata.get("kernelspec", {})
    language = str(  # papermill's order
        notebook.metadata.get("language_info", {}).get("name") or kernelspec.get("language") or ""
    )
    kernel = str(kernelspec.get("name", ""))
    source, defined = _translate(kernel, language, parameters, _defaults_cell(notebook))
    cells = list(notebook.cells)
    injected = _first_tagged(cells, INJECTED_TAG)
    defaults = _first_tagged(cells, PARAMETERS_TAG)
    cell = nbformat.v4.new_code_cell(source=source)
    cell.metadata["tags"] = [INJECTED_TAG]
    if all("id" in other for other in cells):
        cell.id = INJECTED_TAG  # stable, so the same instance gives the same notebook
    else:
        del cell["id"]
    if injected is not None:
        index = injected
        cells[index] = cell
    else:
        index = 0 if defaults is None else defaults + 1
        cells.insert(index, cell)
    metadata = nbformat.NotebookNode(notebook.metadata)
    metadata["papermill"] = nbformat.from_dict(
        {**notebook.metadata.get("papermill", {}), "parameters": parameters}
    )
    source_map = notebook.metadata.get("source_map")
    if source_map and injected is None:
        # the injected cell points at the line of the cell it follows (MyST notebooks)
        at = source_map[defaults] if defaults is not None else source_map[0]
        metadata["source_map"] = [*source_map[:index], at, *source_map[index:]]
    unknown = tuple(name for name in parameters if defined is not None and name not in defined)
    merged = nbformat.NotebookNode(notebook, cells=cells, metadata=metadata)
    return Injected(merged, index, injected is None, defaults, unknown)


def shift_lines(cell_lines: dict[int, int], injected: Injected) -> dict[int, int]:
    """A text notebook's cell lines once the injected cell is in."""
    if not injected.inserted:
        return dict(cell_lines)
    return {index + (index >= injected.index): line for index, line in cell_lines.items()}


def _first_tagged(cells: list[Any], tag: str) -> int | None:
    """The first cell with ``tag``, of any type, as papermill finds it."""
    for index, cell in enumerate(cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def _defaults_cell(notebook: nbformat.NotebookNode) -> str | None:
    index = _first_tagged(list(notebook.cells), PARAMETERS_TAG)
    if index is None or notebook.cells[index].cell_type != "code":
        return None
    return str(notebook.cells[index].source)


def _translate(
    kernel: str, language: str, parameters: dict[str, Any], defaults: str | None
) -> tuple[str, set[str] | None]:
    """The injected cell's source, and the names the defaults cell defines (None when it
    cannot be told: no such cell, or code that does not parse)."""
    unnamed_python = not language and (not kernel or kernel.startswith("python"))
    if language.lower() == "python" or unnamed_python:
        lines = ["# Parameters", *(f"{name} = {value!r}" for name, value in parameters.items())]
        return "\n".join(lines) + "\n", _python_names(defaults)
    try:
        translators = importlib.import_module("papermill.translators")
    except ImportError:
        raise ParameterError(
            f"parameters for a {language or kernel} kernel are written by papermill's "
            "translators: "
            "pip install papermill"
        ) from None
    try:
        translator = translators.papermill_translators.find_translator(kernel, language)
    except Exception as exc:  # papermill raises its own exception type
        raise ParameterError(str(exc)) from None
    source = str(translator.codify(parameters))
    if defaults is None:
        return source, None
    try:
        found = translator.inspect(nbformat.v4.new_code_cell(source=defaults))
    except NotImplementedError:
        return source, None
    return source, {parameter.name for parameter in found}


def _python_names(defaults: str | None) -> set[str] | None:
    if defaults is None:
        return None
    try:
        tree = ast.parse(defaults)
    except SyntaxError:  # IPython magics, say
        return None
    names = set()
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    names.add(name.id)
    return names
