"""Import the executed notebooks of myst-nb's jupyter-cache, so that switching from myst-nb's
cache mode executes nothing.

A jupyter-cache folder is as untrusted as the cache itself (a CI cache that a pull
request's job wrote), so it is read as data and never written: its SQLite database through
a read-only connection, notebooks as JSON through nbformat, nothing unpickled, no file
opened outside the folder, every value checked before it is used. jupyter-cache's own
library is not used: opening a cache with it creates tables and files, and reading an
entry writes its access time.

An entry is imported for a notebook when its code cells (source and the tags that change
execution), kernel and language equal the notebook's now, and stored under the notebook's
current key. jupyter-cache recorded nothing else, so an imported entry has no discovered
dependencies (files read, modules and packages imported): they are learned the next time
the notebook executes, as for myst-nb, which never tracked them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from sphinx_nbcache.cache.disk import MAX_VALUE_BYTES, UnsafeRowError, inside
from sphinx_nbcache.cache.key import EXECUTION_TAGS
from sphinx_nbcache.cache.payload import DamagedEntryError, check_payload
from sphinx_nbcache.cache.store import Store
from sphinx_nbcache.model import NOTEBOOK_METADATA_FROM_EXECUTION, ExecutionResult
from sphinx_nbcache.plan import PlannedNotebook

JUPYTER_CACHE_DB = "global.db"
DEFAULT_FOLDER = ".jupyter_cache"
"""Where myst-nb keeps jupyter-cache without ``nb_execution_cache_path``: beside the output
folder (``_build/.jupyter_cache`` for ``_build/html``)."""
HASHKEY = re.compile(r"[0-9a-f]{32}")
"""jupyter-cache names each executed notebook's folder by an md5 hex digest."""
BUSY_TIMEOUT = 10.0


class JupyterCacheError(Exception):
    """The folder is not a jupyter-cache that can be read."""


@dataclasses.dataclass(frozen=True)
class ExecutedNotebook:
    """One notebook a jupyter-cache holds: its code cells with their outputs."""

    notebook: nbformat.NotebookNode
    runtime: float
    created: str
    """ISO 8601 UTC time jupyter-cache stored it."""


@dataclasses.dataclass
class Imported:
    """What an import did, notebook by notebook (project-relative sources)."""

    folder: Path
    imported: list[str] = dataclasses.field(default_factory=list)
    present: list[str] = dataclasses.field(default_factory=list)
    """Already in the cache: left as they are."""
    unmatched: list[str] = dataclasses.field(default_factory=list)
    """No executed notebook with the same code (edited since, or never executed)."""
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    """Matched, but not importable, with why."""
    unreadable: int = 0
    """Entries of the jupyter-cache that could not be read or failed a check."""


def jupyter_cache_folder(configured: Any, outdir: Path) -> Path:
    """Where myst-nb's cache mode keeps jupyter-cache: ``nb_execution_cache_path`` (a
    relative path from the current folder, as jupyter-cache opens it), else
    ``.jupyter_cache`` beside the output folder ``outdir``."""
    if isinstance(configured, str | os.PathLike) and str(configured):
        return (Path.cwd() / configured).resolve()
    return (outdir.parent / DEFAULT_FOLDER).resolve()


def holds_jupyter_cache(folder: Path) -> bool:
    return (folder / JUPYTER_CACHE_DB).is_file()


def match_key(notebook: nbformat.NotebookNode) -> str:
    """What must be equal for an executed notebook to be the notebook's outputs: kernel,
    language, and each code cell's source and execution tags (as in the cache key)."""
    kernelspec = notebook.metadata.get("kernelspec", {})
    cells = [
        [cell.source, sorted(EXECUTION_TAGS.intersection(cell.metadata.get("tags", [])))]
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    material = [kernelspec.get("name", ""), kernelspec.get("language", ""), cells]
    return json.dumps(material, sort_keys=True, ensure_ascii=False)


def import_executed(store: Store, notebooks: Iterable[PlannedNotebook], folder: Path) -> Imported:
    """Store, under its current key, the executed notebook of each of ``notebooks`` that the
    jupyter-cache at ``folder`` holds with the same code; the newest when it holds several.
    Notebooks already in ``store`` are left as they are.

    :raises JupyterCacheError: if ``folder`` is not a jupyter-cache that can be read.
    :raises StoreWriteError: if the cache cannot be written.
    """
    done = Imported(folder)
    wanted: dict[str, list[PlannedNotebook]] = {}
    for planned in notebooks:
        if planned.key in store:
            done.present.append(planned.source)
        else:
            wanted.setdefault(match_key(planned.notebook.notebook), []).append(planned)
    found: dict[str, ExecutedNotebook] = {}
    for hashkey, data, created in _records(folder):
        executed = _read_executed(folder, hashkey, data, created)
        if executed is None:
            done.unreadable += 1
            continue
        key = match_key(executed.notebook)
        if key in wanted and (key not in found or found[key].created < executed.created):
            found[key] = executed
    for key, planned_list in wanted.items():
        for planned in planned_list:
            executed = found.get(key)
            if executed is None:
                done.unmatched.append(planned.source)
                continue
            why = _not_importable(planned, executed)
            if why is not None:
                done.refused[planned.source] = why
                continue
            result = imported_result(planned, executed)
            try:
                check_payload(result.to_json())
            except DamagedEntryError as exc:
                done.refused[planned.source] = f"its entry {exc}"
                continue
            store.put(result, planned.material)
            done.imported.append(planned.source)
    for sources in (done.imported, done.present, done.unmatched):
        sources.sort()
    return done


def imported_result(planned: PlannedNotebook, executed: ExecutedNotebook) -> ExecutionResult:
    """The entry of ``planned`` made of ``executed``: outputs, execution counts, the
    metadata executing writes, runtime and date; no per-cell times, no discovered
    dependencies or packages (jupyter-cache recorded none)."""
    cells = executed.notebook.cells
    metadata = executed.notebook.metadata
    return ExecutionResult(
        key=planned.key,
        source=planned.source,
        succeeded=True,
        error=None,
        outputs=[json.loads(json.dumps(cell.get("outputs", []))) for cell in cells],
        execution_counts=[cell.get("execution_count") for cell in cells],
        metadata={
            name: json.loads(json.dumps(metadata[name]))
            for name in NOTEBOOK_METADATA_FROM_EXECUTION
            if name in metadata
        },
        runtime=executed.runtime,
        cell_times=[None] * len(cells),
        finished=executed.created,
    )


def _not_importable(planned: PlannedNotebook, executed: ExecutedNotebook) -> str | None:
    """Why the outputs cannot stand for the notebook's: an error output in a cell that may
    not raise now (myst-nb ran it allowing errors) would hide a failure."""
    if planned.notebook.options.allow_errors:
        return None
    for number, cell in enumerate(executed.notebook.cells, start=1):
        if "raises-exception" in cell.metadata.get("tags", []):
            continue
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return (
                f"code cell {number} has an error output, which the notebook does not allow "
                "now (it was executed allowing errors)"
            )
    return None


def _records(folder: Path) -> list[tuple[Any, Any, Any]]:
    """(hashkey, data, created) of every row of jupyter-cache's ``nbcache`` table, through
    a read-only connection (immutable when the folder cannot be written)."""
    if not holds_jupyter_cache(folder):
        raise JupyterCacheError(f"no jupyter-cache at {folder} (no {JUPYTER_CACHE_DB} there)")
    try:
        database = inside(folder, JUPYTER_CACHE_DB)
    except UnsafeRowError as exc:
        raise JupyterCacheError(f"{folder}: {JUPYTER_CACHE_DB} {exc}") from None
    uri = database.resolve().as_uri()
    problem = ""
    for options in ("mode=ro", "mode=ro&immutable=1"):
        try:
            with contextlib.closing(
                sqlite3.connect(f"{uri}?{options}", uri=True, timeout=BUSY_TIMEOUT)
            ) as db:
                return db.execute("SELECT hashkey, data, created FROM nbcache").fetchall()
        except sqlite3.Error as exc:
            problem = problem or str(exc)
    raise JupyterCacheError(
        f"{database} is not a jupyter-cache database that can be read: {problem}"
    )


def _read_executed(folder: Path, hashkey: Any, data: Any, created: Any) -> ExecutedNotebook | None:
    """The executed notebook of one row, or None when anything about it is not what
    jupyter-cache writes."""
    if not isinstance(hashkey, str) or not HASHKEY.fullmatch(hashkey):
        return None
    try:
        path = inside(folder, f"executed/{hashkey}/base.ipynb")
        if not path.is_file() or path.stat().st_size > MAX_VALUE_BYTES:
            return None
        notebook = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        nbformat.validate(notebook)
        when = _utc(created)
    except (UnsafeRowError, OSError, ValueError, nbformat.ValidationError):
        return None
    if when is None or any(cell.cell_type != "code" for cell in notebook.cells):
        return None
    return ExecutedNotebook(notebook, _runtime(data), when)


def _runtime(data: Any) -> float:
    """``execution_seconds`` that myst-nb records in the row's data; 0 when absent."""
    try:
        seconds = json.loads(data).get("execution_seconds") if isinstance(data, str) else None
    except (ValueError, AttributeError):
        return 0.0
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return 0.0
    if not math.isfinite(seconds) or seconds < 0:
        return 0.0
    return float(seconds)


def _utc(created: Any) -> str | None:
    """jupyter-cache's creation time (SQLite text, UTC without a zone) as ISO 8601 UTC."""
    if not isinstance(created, str):
        return None
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="seconds")
