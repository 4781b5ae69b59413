"""Source file -> notebook, through myst-nb's own reader so both see the same cells."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
import yaml
from myst_nb.core.config import NbParserConfig
from myst_nb.core.nb_to_tokens import nb_node_to_dict
from myst_nb.core.read import (
    MystMetadataParsingError,
    NbReader,
    create_nb_reader,
    standard_nb_read,
)
from myst_parser.config.main import MdParserConfig

from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.model import EXECUTING_MODES, ExecOptions
from sphinx_nbcache.notebook.cells import (
    FORMAT_VERSION,
    NotebookProblem,
    check_notebook,
    check_version,
    code_cell_indices,
)
from sphinx_nbcache.notebook.decoding import replace_undecodable, undecodable


@dataclasses.dataclass
class SourceNotebook:
    """A notebook as myst-nb will see it, with the settings that apply to it."""

    path: Path
    notebook: nbformat.NotebookNode
    options: ExecOptions
    excluded: bool
    commonmark_only: bool
    cell_lines: dict[int, int] = dataclasses.field(default_factory=dict)
    """1-based line where each code cell's source starts, for a text notebook whose reader
    keeps no source map (jupytext); empty for ``.ipynb`` and MyST notebooks."""

    @property
    def code_cells(self) -> list[nbformat.NotebookNode]:
        return [self.notebook.cells[index] for index in code_cell_indices(self.notebook.cells)]

    @property
    def needs_execution(self) -> bool:
        """False when myst-nb itself would not execute it (see its ``create_client``)."""
        if self.excluded or self.options.mode not in EXECUTING_MODES or not self.code_cells:
            return False
        if self.options.mode == "auto":
            # myst-nb's semantics: a code cell without outputs counts as unexecuted
            return any(len(cell.outputs) == 0 for cell in self.code_cells)
        return True


def read_merged_notebook(text: str) -> nbformat.NotebookNode:
    """Read back a notebook this extension serialised itself after validating its source,
    skipping nbformat's schema validation, which would cost more than the rest of a hit."""
    notebook: nbformat.NotebookNode = nbformat.from_dict(json.loads(text))
    return notebook


class NotebookReadError(Exception):
    """The source looks like a notebook but cannot be read, in words a person understands;
    ``line`` is where in the file, when known (a JSON syntax error, a text notebook's cell)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


MYST_READER = {"type": "plugin", "name": "myst_nb_md"}
"""How myst-nb marks its reader of MyST markdown notebooks."""
READER_DISTRIBUTIONS = ("myst-nb", "myst-parser", "markdown-it-py", "nbformat", "PyYAML")
"""What myst-nb's MyST reader is made of: another version may read the same text otherwise."""


def parse_key(path: Path, text: str, md_config: MdParserConfig, custom: Any) -> str | None:
    """What myst-nb's reading of a MyST markdown notebook depends on: its text, the
    Markdown settings and the reader's versions. None when the text is not one to keep:
    a format myst-nb reads by suffix, a file without front matter, or a notebook whose
    cells ``:load:`` other files."""
    if str(path).endswith((".ipynb", *custom)) or not text.startswith("---") or ":load:" in text:
        return None
    material = {
        "text": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        "markdown": dataclasses.asdict(md_config),
        "versions": _reader_versions(),
    }
    dumped = json.dumps(material, sort_keys=True, default=_stable_repr)
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()


def _stable_repr(value: Any) -> str:
    """Functions in Markdown settings by name; anything else by ``repr``, which may name a
    memory address: then the key changes every build, a miss rather than a wrong hit."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


@functools.cache
def _reader_versions() -> dict[str, str | None]:
    """The readers' versions loaded in this process: process state, not build state, since
    a process keeps running the code it imported even after an upgrade on disk."""
    found: dict[str, str | None] = {}
    for name in READER_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def read_notebook(
    path: Path,
    text: str,
    md_config: MdParserConfig,
    nb_config: NbParserConfig,
    parsed: ParsedStore | None = None,
    encoding: str = "utf-8",
) -> SourceNotebook | None:
    """Read ``text`` (the content of ``path``); None if myst-nb would not treat it as a
    notebook. A MyST notebook comes from ``parsed`` when it holds this text's reading:
    myst-nb's reader parses YAML and checks every cell against the nbformat schema, 1.5
    to 2 ms a notebook, three times what a warm build spends on an ``.ipynb``.

    :raises NotebookReadError: if the text is not a notebook the build can use: bytes that
        are not text in ``encoding`` (kept by :func:`decoding.escaping`), a reader's
        failure, a field of the wrong kind.
    """
    key = None if parsed is None else parse_key(path, text, md_config, nb_config.custom_formats)
    kept = None if parsed is None or key is None else parsed.get(path, key)
    notebook = None if kept is None else nbformat.from_dict(kept)
    commonmark_only = md_config.commonmark_only
    cell_lines: dict[int, int] = {}
    if notebook is None:
        bad_bytes = undecodable(text, encoding)
        # whether it is a notebook is told from the text as the page would show it, as
        # the source-read handler does: a bad byte in front matter hides nothing
        shown = text if bad_bytes is None else replace_undecodable(text)
        reader = create_nb_reader(str(path), md_config, nb_config, shown)
        if reader is None:
            return None
        if bad_bytes is not None:
            raise NotebookReadError(*bad_bytes)
        notebook = _read_checked(reader, text, nb_config)
        commonmark_only = reader.md_config.commonmark_only
        if reader.read_fmt is None and path.suffix != ".ipynb":
            cell_lines = code_cell_lines(notebook, text)
        if parsed is not None and key is not None and reader.read_fmt == MYST_READER:
            parsed.put(path, key, nb_node_to_dict(notebook))
    else:
        _check(notebook, nb_config, cell_lines)
    apply_kernel_alias(notebook, nb_config.kernel_rgx_aliases)
    effective = notebook_config(notebook, nb_config)
    return SourceNotebook(
        path=path,
        notebook=notebook,
        options=exec_options(notebook, effective),
        excluded=is_excluded(path, effective.execution_excludepatterns),
        commonmark_only=commonmark_only,
        cell_lines=cell_lines,
    )


def _read_checked(reader: NbReader, text: str, nb_config: NbParserConfig) -> nbformat.NotebookNode:
    """Read with myst-nb's reader, then check what it returned.

    A ``.ipynb`` notebook in the current format is checked (and its omissions filled in)
    before nbformat reads it, which would otherwise trip over a wrong type itself.

    :raises NotebookReadError: with what is wrong and where.
    """
    checked = None
    if _reads_ipynb(reader):
        checked = _checked_ipynb(text, nb_config)
    try:
        notebook: nbformat.NotebookNode = reader.read(checked or text)
    except Exception as exc:
        raise NotebookReadError(reader_failure(exc, reader, text, nb_config)) from exc
    if checked is None:  # checked already: nbformat's reading of checked JSON is sound
        _check(notebook, nb_config, {})
    return notebook


def _reads_ipynb(reader: NbReader) -> bool:
    """Whether ``reader`` is myst-nb's own ``.ipynb`` reader (``nbformat.reads``)."""
    return getattr(reader.read, "func", None) is standard_nb_read


def _checked_ipynb(text: str, nb_config: NbParserConfig) -> str | None:
    """``text`` checked as notebook JSON; the same JSON, omissions filled in, when it is in
    the current format; None for older ones, checked once nbformat has converted them.

    :raises NotebookReadError: if it is not JSON or not a notebook the build can use.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise NotebookReadError(message, exc.lineno) from None
    except RecursionError:
        raise NotebookReadError("not valid JSON: nested too deeply") from None
    try:
        if check_version(data) != FORMAT_VERSION:
            return None
        check_notebook(data, nb_config.metadata_key, nb_config.cell_metadata_key)
    except NotebookProblem as problem:
        raise NotebookReadError(str(problem)) from None
    return json.dumps(data)


def _check(
    notebook: nbformat.NotebookNode, nb_config: NbParserConfig, cell_lines: dict[int, int]
) -> None:
    """:raises NotebookReadError: if a reader returned a notebook the build cannot use."""
    try:
        check_notebook(notebook, nb_config.metadata_key, nb_config.cell_metadata_key)
    except NotebookProblem as problem:
        line = None if problem.cell is None else cell_line(notebook, cell_lines, problem.cell)
        raise NotebookReadError(str(problem), line) from None


def cell_line(
    notebook: nbformat.NotebookNode, cell_lines: dict[int, int], index: int
) -> int | None:
    """Source line of a cell in text notebooks (MyST's source map, else the line found in
    a jupytext file); None for ``.ipynb`` (no lines to point at)."""
    source_map = notebook.metadata.get("source_map")
    if not source_map:
        return cell_lines.get(index)
    return int(source_map[index]) + 1 if index < len(source_map) else None


def reader_failure(exc: Exception, reader: NbReader, text: str, nb_config: NbParserConfig) -> str:
    """What a reader's exception means, without the names of its internals: the messages
    of errors about the input itself; for a reader that tripped over a value of the wrong
    kind, what the checks find in the front matter, else what kind of file it was."""
    if isinstance(exc, NotebookProblem | yaml.YAMLError | MystMetadataParsingError):
        return str(exc)
    if isinstance(exc, nbformat.ValidationError):  # myst-nb's reader validates each cell
        where = ".".join(str(step) for step in getattr(exc, "absolute_path", ()))
        message = str(getattr(exc, "message", "")) or "it does not match the notebook format"
        message = message if len(message) <= 200 else message[:197] + "..."
        return f"{where}: {message}" if where else message
    if isinstance(exc, nbformat.reader.NotJSONError):
        return "not valid JSON"
    if isinstance(exc, RecursionError):
        return "the notebook is nested too deeply to read"
    if reader.read_fmt == MYST_READER:
        problem = _front_matter_problem(text, nb_config)
        if problem is not None:
            return f"front matter: {problem}"
        return "the MyST notebook has a field of a kind its reader cannot use"
    if _reads_ipynb(reader):
        version = json.loads(text).get("nbformat")  # checked before reading
        return (
            f"nbformat could not convert this version {version} notebook to version "
            f"{FORMAT_VERSION}: one of its fields is of a kind it cannot use"
        )
    return "the notebook reader found a field of a kind it cannot use"


def _front_matter_problem(text: str, nb_config: NbParserConfig) -> str | None:
    """What the checks find wrong in a MyST notebook's front matter, if anything."""
    head = text.split("\n---", 1)[0].removeprefix("---")
    try:
        metadata = yaml.safe_load(head)
        check_notebook({"metadata": metadata, "cells": []}, nb_config.metadata_key, "")
    except (yaml.YAMLError, NotebookProblem) as problem:
        return str(problem)
    return None


def code_cell_lines(notebook: nbformat.NotebookNode, text: str) -> dict[int, int]:
    """Where each code cell's source starts in ``text`` (1-based), by cell index.

    jupytext keeps no source map, but writes code cells unchanged apart from magics, which
    it comments out; so each cell is looked for as a whole block of lines, in order, after
    the previous one. A cell that is not found has no line, and the cells after it are
    still looked for.
    """
    lines = text.splitlines()
    found: dict[int, int] = {}
    start = 0
    for index, cell in enumerate(notebook.cells):
        block = cell.source.splitlines() if cell.cell_type == "code" else []
        at = _find_block(lines, block, start) if block else None
        if at is not None:
            found[index] = at + 1
            start = at + len(block)
    return found


def _find_block(lines: list[str], block: list[str], start: int) -> int | None:
    for at in range(start, len(lines) - len(block) + 1):
        if all(_written_as(lines[at + i], line) for i, line in enumerate(block)):
            return at
    return None


def _written_as(written: str, line: str) -> bool:
    """``line`` of a cell as jupytext writes it: unchanged, or a magic commented out."""
    return written == line or (line.startswith(("%", "!")) and written == f"# {line}")


def apply_kernel_alias(notebook: nbformat.NotebookNode, aliases: dict[str, str]) -> None:
    """Rename the kernel as myst-nb does (first full regex match wins)."""
    kernelspec = notebook.metadata.get("kernelspec", {})
    name = kernelspec.get("name")
    if name is None:
        return
    for pattern, alias in aliases.items():
        if re.fullmatch(pattern, name):
            kernelspec["name"] = alias
            return


def notebook_config(notebook: nbformat.NotebookNode, nb_config: NbParserConfig) -> NbParserConfig:
    """Apply the notebook's ``mystnb`` metadata overrides; myst-nb warns about bad ones."""
    overrides = notebook.metadata.get(nb_config.metadata_key)
    if not overrides:
        return nb_config
    changes = dict(nb_node_to_dict(overrides))
    changes.pop("output_folder", None)
    try:
        return nb_config.copy(**changes)
    except Exception:
        return nb_config


def exec_options(notebook: nbformat.NotebookNode, nb_config: NbParserConfig) -> ExecOptions:
    """Settings for one notebook; ``execution`` metadata wins, as in myst-nb's executors."""
    timeout: int | None = nb_config.execution_timeout
    allow_errors = nb_config.execution_allow_errors
    execution: dict[str, Any] = notebook.metadata.get("execution", {})
    if "timeout" in execution:
        timeout = execution["timeout"]
    if "allow_errors" in execution:
        allow_errors = bool(execution["allow_errors"])
    return ExecOptions(
        mode=nb_config.execution_mode,
        timeout=timeout,
        allow_errors=allow_errors,
        raise_on_error=nb_config.execution_raise_on_error,
        show_tb=nb_config.execution_show_tb,
        in_temp=nb_config.execution_in_temp,
        cell_metadata_key=nb_config.cell_metadata_key,
    )


def is_excluded(path: Path, patterns: Any) -> bool:
    posix = PurePosixPath(path.as_posix())
    return any(posix.match(pattern) for pattern in patterns or ())
