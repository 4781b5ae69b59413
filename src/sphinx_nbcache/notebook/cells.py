"""Is this notebook one the rest of the build can trust? Human answers, not tracebacks.

Readers (nbformat, myst-nb, jupytext) accept many shapes they later trip over, deep in
rendering or execution, where the error names an internal object (``'list' object has no
attribute 'get'``) and stops the whole build. Checking up front the fields the build and
myst-nb use turns those into one message that says what is wrong and where. Omissions
Jupyter itself tolerates (a code cell without ``outputs`` or ``execution_count``, a cell
without ``metadata``) are filled in instead, as nbformat does when it upgrades a notebook.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

CELL_TYPES = ("code", "markdown", "raw")
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")
FORMAT_VERSION = 4
"""The notebook format version readers return; older ones are converted by nbformat."""


def code_cell_number(cells: Sequence[Any], index: int | None) -> int | None:
    """How every message numbers the cell at ``index`` among ``cells`` (nbformat's index,
    from 0, over all cells): its place among the code cells, from 1. That is the ``[N]``
    Jupyter shows beside it once every cell has run, and the ``Cell In[N]`` of a traceback
    from it; markdown cells have no such number. None for no cell or a cell that is not
    code."""
    if index is None or not 0 <= index < len(cells) or not _is_code(cells[index]):
        return None
    return sum(_is_code(cell) for cell in cells[: index + 1])


def code_cell_indices(cells: Sequence[Any]) -> list[int]:
    """Where the code cells are among ``cells`` (nbformat's indices, from 0): how every
    layer lines code cells up with outputs, times and numbers."""
    return [index for index, cell in enumerate(cells) if _is_code(cell)]


def _is_code(cell: Any) -> bool:
    return isinstance(cell, Mapping) and cell.get("cell_type") == "code"


def cell_label(cells: Sequence[Any], index: int) -> str:
    """``code cell N`` (see :func:`code_cell_number`); another cell, which has no such
    number, by its place in the file, counting every cell from 1."""
    number = code_cell_number(cells, index)
    if number is not None:
        return f"code cell {number}"
    return f"cell {index + 1} of the file"


class NotebookProblem(ValueError):
    """What is wrong with a notebook, in words, and the cell it is in (if any): ``cell``
    is nbformat's index, the message says it as :func:`cell_label` does."""

    def __init__(self, message: str, cell: int | None = None, label: str = "") -> None:
        super().__init__(f"{label}: {message}" if label else message)
        self.cell = cell


def describe(value: Any) -> str:
    """A value's kind as a notebook author says it (JSON or YAML), with short scalars."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, datetime.date | datetime.datetime):
        return f"a date ({value.isoformat()})"
    return f"a {type(value).__name__} value"


def check_version(notebook: Any) -> int:
    """The notebook's format version, checked before any reader converts it.

    :raises NotebookProblem: if there is none, or one no reader here can convert.
    """
    if not isinstance(notebook, Mapping):
        raise NotebookProblem(f"the file holds {describe(notebook)}, not a notebook (a mapping)")
    if "nbformat" not in notebook:
        raise NotebookProblem("'nbformat' (the notebook format version, 4) is missing")
    version = notebook["nbformat"]
    if not _is_int(version):
        raise NotebookProblem(f"'nbformat' must be a whole number, not {describe(version)}")
    if not 1 <= version <= FORMAT_VERSION:
        raise NotebookProblem(f"notebook format version {version} is not supported (1 to 4 are)")
    minor = notebook.get("nbformat_minor", 0)
    if not _is_int(minor) or minor < 0:
        raise NotebookProblem(f"'nbformat_minor' must be a whole number, not {describe(minor)}")
    return int(version)


def check_notebook(
    notebook: MutableMapping[str, Any], metadata_key: str, cell_metadata_key: str
) -> None:
    """Check a version 4 notebook (as JSON decodes it, or as a reader returns it) and fill
    in the omissions Jupyter tolerates; ``metadata_key`` and ``cell_metadata_key`` are
    where myst-nb keeps its settings (``nb_metadata_key``, ``nb_cell_metadata_key``).

    :raises NotebookProblem: on the first field of a kind the build cannot use.
    """
    metadata = notebook.setdefault("metadata", {})
    _check_notebook_metadata(metadata, metadata_key)
    cells = notebook.get("cells")
    if cells is None:
        raise NotebookProblem("'cells' (the list of cells) is missing")
    if not isinstance(cells, list):
        raise NotebookProblem(f"'cells' must be a list, not {describe(cells)}")
    for index, cell in enumerate(cells):
        try:
            _check_cell(cell, cell_metadata_key)
        except NotebookProblem as problem:
            raise NotebookProblem(str(problem), index, cell_label(cells, index)) from None


def _check_notebook_metadata(metadata: Any, metadata_key: str) -> None:
    _expect_mapping(metadata, "the notebook's 'metadata'")
    kernelspec = metadata.get("kernelspec")
    if kernelspec is not None:
        where = "metadata.kernelspec"
        _expect_mapping(kernelspec, where, "with the kernel's 'name'")
        _expect_text(kernelspec.get("name"), f"{where}.name", optional=True)
        _expect_text(kernelspec.get("display_name"), f"{where}.display_name", optional=True)
        _expect_text(kernelspec.get("language"), f"{where}.language", optional=True)
    language_info = metadata.get("language_info")
    if language_info is not None:
        _expect_mapping(language_info, "metadata.language_info")
        _expect_text(language_info.get("name"), "metadata.language_info.name", optional=True)
    for key in (metadata_key, "execution", "nbcache"):
        if key in metadata:
            _expect_mapping(metadata[key], f"metadata.{key}")
    execution = metadata.get("execution", {})
    timeout = execution.get("timeout")
    if timeout is not None and not _is_int(timeout):
        raise NotebookProblem(
            f"metadata.execution.timeout must be a whole number of seconds, not {describe(timeout)}"
        )
    dependencies = metadata.get("nbcache", {}).get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise NotebookProblem(
            "metadata.nbcache.dependencies must be a list of file patterns (text), "
            f"not {describe(dependencies)}"
        )
    inherit = metadata.get("nbcache", {}).get("inherit")
    if inherit is not None and not (isinstance(inherit, str) and inherit):
        raise NotebookProblem(
            f"metadata.nbcache.inherit must be the path of a notebook, not {describe(inherit)}"
        )
    resume = metadata.get("nbcache", {}).get("resume", True)
    if not isinstance(resume, bool):
        raise NotebookProblem(
            f"metadata.nbcache.resume must be true or false, not {describe(resume)}"
        )
    _expect_json(metadata, "the notebook's metadata")


def _check_cell(cell: Any, cell_metadata_key: str) -> None:
    _expect_mapping(cell, "a cell", "with a 'cell_type' and a 'source'")
    cell_type = cell.get("cell_type")
    if cell_type not in CELL_TYPES:
        shown = "missing" if cell_type is None else describe(cell_type)
        raise NotebookProblem(f"'cell_type' must be 'code', 'markdown' or 'raw', not {shown}")
    if "source" not in cell:
        raise NotebookProblem("'source' is missing")
    _expect_multiline(cell["source"], "'source'")
    if isinstance(cell["source"], list):
        cell["source"] = "".join(cell["source"])
    if "id" in cell:
        _expect_text(cell["id"], "'id'")
    metadata = cell.setdefault("metadata", {})
    _expect_mapping(metadata, "the cell's 'metadata'")
    tags = metadata.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise NotebookProblem(f"metadata.tags must be a list of text, not {describe(tags)}")
    for key in (cell_metadata_key, "execution", "jupyter"):
        if key in metadata:
            _expect_mapping(metadata[key], f"metadata.{key}")
    _expect_json(metadata, "the cell's metadata")
    if "attachments" in cell:
        _expect_mapping(cell["attachments"], "'attachments'")
        for name, bundle in cell["attachments"].items():
            _check_mime_bundle(bundle, f"attachment {name!r}")
    if cell_type == "code":
        count = cell.setdefault("execution_count", None)
        _expect_count(count, "'execution_count'")
        outputs = cell.setdefault("outputs", [])
        if not isinstance(outputs, list):
            raise NotebookProblem(f"'outputs' must be a list, not {describe(outputs)}")
        for number, output in enumerate(outputs):
            _check_output(output, f"output {number}")


def _check_output(output: Any, where: str) -> None:
    _expect_mapping(output, where, "with an 'output_type'")
    kind = output.get("output_type")
    if kind not in OUTPUT_TYPES:
        shown = "missing" if kind is None else describe(kind)
        raise NotebookProblem(
            f"{where}: 'output_type' must be one of {', '.join(OUTPUT_TYPES)}, not {shown}"
        )
    if kind == "stream":
        _expect_text(output.get("name"), f"{where}: 'name'")
        _expect_multiline(output.get("text"), f"{where}: 'text'")
    elif kind == "error":
        _expect_text(output.get("ename"), f"{where}: 'ename'")
        _expect_text(output.get("evalue"), f"{where}: 'evalue'")
        traceback = output.get("traceback")
        if not isinstance(traceback, list) or not all(isinstance(t, str) for t in traceback):
            raise NotebookProblem(
                f"{where}: 'traceback' must be a list of text, not {describe(traceback)}"
            )
    else:
        _check_mime_bundle(output.get("data"), f"{where}: 'data'")
        _expect_mapping(output.setdefault("metadata", {}), f"{where}: 'metadata'")
        _expect_json(output["metadata"], f"{where}: 'metadata'")
        if kind == "execute_result":
            _expect_count(output.setdefault("execution_count", None), f"{where}: 'execution_count'")


def _check_mime_bundle(bundle: Any, where: str) -> None:
    """Text formats hold text (or lines of it); JSON formats hold any JSON."""
    _expect_mapping(bundle, where, "of formats (MIME types)")
    for mime, content in bundle.items():
        if not isinstance(mime, str):
            raise NotebookProblem(f"{where}: a format's name must be text, not {describe(mime)}")
        if mime == "application/json" or mime.endswith("+json"):
            _expect_json(content, f"{where}: {mime!r}")
        else:
            _expect_multiline(content, f"{where}: {mime!r}")


def _expect_mapping(value: Any, where: str, holding: str = "") -> None:
    if not isinstance(value, Mapping):
        holding = f" {holding}" if holding else ""
        raise NotebookProblem(f"{where} must be a mapping{holding}, not {describe(value)}")


def _expect_text(value: Any, where: str, optional: bool = False) -> None:
    if not isinstance(value, str) and not (optional and value is None):
        shown = "missing" if value is None else describe(value)
        raise NotebookProblem(f"{where} must be text, not {shown}")


def _expect_multiline(value: Any, where: str) -> None:
    """Text, or a list of lines of text, as nbformat writes long strings."""
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return
    shown = "missing" if value is None else describe(value)
    raise NotebookProblem(f"{where} must be text, not {shown}")


def _expect_count(value: Any, where: str) -> None:
    if value is not None and not (_is_int(value) and value >= 0):
        raise NotebookProblem(f"{where} must be a whole number or null, not {describe(value)}")


def _expect_json(value: Any, where: str) -> None:
    """Metadata goes back to JSON (the cache key, the kernel, myst-nb); YAML front matter
    can hold what JSON cannot, such as an unquoted date."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise NotebookProblem(
            f"{where} holds a value JSON cannot (a date or time? quote it as text)"
        ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
