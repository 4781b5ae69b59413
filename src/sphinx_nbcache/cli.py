"""The ``nbcache`` command: see, execute, merge and manage the cache outside a Sphinx build.

Commands that need the project's settings load its ``conf.py`` through a real (never
built) Sphinx application, so they see exactly the notebooks, settings and cache that
``sphinx-build`` sees; the lookups and executions go through the same pipeline and store.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from sphinx_nbcache import __version__
from sphinx_nbcache.execute import ExecutionResult, ExecutorError
from sphinx_nbcache.key import explain_difference
from sphinx_nbcache.merge import merge_outputs
from sphinx_nbcache.pipeline import Pipeline, PlannedNotebook
from sphinx_nbcache.progress import Progress, colour_allowed, on_terminal
from sphinx_nbcache.read import EXECUTING_MODES, NotebookReadError, SourceNotebook
from sphinx_nbcache.report import plain_text
from sphinx_nbcache.store import (
    DATABASE,
    STORE_SCHEMA,
    DamagedEntryError,
    ParsedStore,
    Store,
    StoreWriteError,
)
from sphinx_nbcache.validate import code_cell_number

if TYPE_CHECKING:
    from sphinx.application import Sphinx

USAGE_ERROR = 2
"""Exit status for bad input: no project, a path that is not a notebook, a bad value."""

STATES = {
    "fresh": "cached, up to date",
    "failed": "cached failure",
    "stale": "cached, out of date",
    "new": "never executed",
    "damaged": "damaged cache entry",
    "excluded": "not executed (nb_execution_excludepatterns)",
    "off": "not executed (execution off)",
    "outputs": "not executed (auto mode, outputs stored in the file)",
    "inline": "executed by myst-nb on every build, not cached (inline mode)",
    "no-code": "nothing to execute (no code cells)",
    "unreadable": "cannot be read",
}
"""Each notebook's state, as ``status`` shows it."""


class CliError(Exception):
    """Bad input: one line for the user, exit status 2."""


@dataclasses.dataclass
class Notebook:
    """One notebook of the project, as a build would see it now."""

    docname: str
    source: str
    state: str
    notebook: SourceNotebook | None
    planned: PlannedNotebook | None
    result: ExecutionResult | None
    why: str | None = None
    """For a stale notebook, what changed since the last entry of its source; for one a
    build executes despite its entry, why."""
    executes: bool = False
    """Whether a build would execute it now, as the build's own pipeline decides."""


@dataclasses.dataclass
class Project:
    app: Sphinx
    pipeline: Pipeline
    _by_source: dict[str, list[tuple[str, ExecutionResult]]] | None = None

    @property
    def store(self) -> Store:
        return self.pipeline.store

    @property
    def parsed(self) -> ParsedStore:
        from sphinx_nbcache.sphinx_ext import build_state

        return build_state(self.app).parsed

    def notebooks(self, paths: Sequence[str] = ()) -> list[Notebook]:
        """Every notebook of the project, or those at ``paths``, with its state."""
        env = self.app.env
        docnames = sorted(env.found_docs)
        if paths:
            docnames = [self._docname(path) for path in paths]
        found = [self._notebook(docname) for docname in docnames]
        if paths:
            for path, notebook in zip(paths, found, strict=True):
                if notebook is None:
                    raise CliError(f"{path}: not a notebook")
        return [notebook for notebook in found if notebook is not None]

    def _docname(self, path: str) -> str:
        """The document ``path`` names: a file from the current folder or from the source
        folder (as ``status`` lists it), with or without its suffix (a docname). Paths are
        taken as written, not resolved, so that a folder the source tree links to keeps
        the name the project gives it; the file a link points to is accepted too."""
        env = self.app.env
        srcdir = Path(self.app.srcdir)
        found: dict[str, list[str]] = {}
        for base in dict.fromkeys((Path.cwd(), srcdir)):
            written = Path(os.path.normpath(base / path))
            for docname, files in self._documents_at(written).items():
                found.setdefault(docname, []).extend(files)
        if not found:
            real = Path(path).resolve()
            for docname in sorted(env.found_docs):
                if Path(env.doc2path(docname)).resolve() == real:
                    found[docname] = [str(env.doc2path(docname, False))]
        if not found:
            raise CliError(f"{path}: not a document of the project in {srcdir}")
        files = sorted({file for names in found.values() for file in names})
        if len(found) > 1 or len(files) > 1:
            raise CliError(f"{path} is ambiguous: it could be {' or '.join(files)}; say which")
        return next(iter(found))

    def _documents_at(self, written: Path) -> dict[str, list[str]]:
        """Documents at the absolute path ``written``, a file or a docname: docname -> the
        source files it could be (two for ``x`` beside ``x.ipynb`` and ``x.md``)."""
        env = self.app.env
        docname = env.path2doc(str(written))
        if docname in env.found_docs:
            # of x.ipynb and x.md, only the file Sphinx reads is the document x
            same = Path(env.doc2path(docname)) == written
            return {docname: [str(env.doc2path(docname, False))]} if same else {}
        srcdir = Path(self.app.srcdir)
        if not written.is_relative_to(srcdir):
            return {}
        stem = written.relative_to(srcdir).as_posix()
        if stem not in env.found_docs:
            return {}
        suffixes = env.config.source_suffix
        files = [f"{stem}{suffix}" for suffix in suffixes if (srcdir / f"{stem}{suffix}").is_file()]
        return {stem: files or [str(env.doc2path(stem, False))]}

    def _notebook(self, docname: str) -> Notebook | None:
        from sphinx_nbcache.sphinx_ext import plan_document, read_source

        env = self.app.env
        path = Path(env.doc2path(docname))
        source = str(env.doc2path(docname, False))
        try:
            text = path.read_text(encoding=env.config.source_encoding)
            notebook = read_source(env, path, text, self.parsed)
        except (NotebookReadError, OSError, UnicodeDecodeError):
            return Notebook(docname, source, "unreadable", None, None, None)
        if notebook is None:
            return None
        if not notebook.needs_execution:
            return Notebook(docname, source, _not_executed(notebook), notebook, None, None)
        planned = plan_document(env, docname, notebook)
        checked = self.pipeline.check(planned)
        executes = checked.reusable is None
        if checked.damaged:
            return Notebook(docname, source, "damaged", notebook, planned, None, executes=executes)
        result = checked.entry
        if result is not None:
            if checked.changed is not None:
                return Notebook(
                    docname, source, "stale", notebook, planned, result, checked.changed, executes
                )
            state = "fresh" if result.succeeded else "failed"
            return Notebook(
                docname, source, state, notebook, planned, result, checked.again, executes
            )
        previous = self.by_source().get(source)
        if not previous:
            return Notebook(docname, source, "new", notebook, planned, None, executes=executes)
        key, _ = max(previous, key=lambda entry: entry[1].finished)
        old = self.store.material(key)
        new = planned.material
        why = "unknown" if old is None else explain_difference(old, new)
        return Notebook(docname, source, "stale", notebook, planned, None, why, executes)

    def by_source(self) -> dict[str, list[tuple[str, ExecutionResult]]]:
        """Every readable entry, by the source it was executed from: a notebook whose own
        key is missing but whose source has entries was executed with other code or
        settings before."""
        if self._by_source is None:
            self._by_source = {}
            for key, result in entries(self.store):
                if result is not None:
                    self._by_source.setdefault(result.source, []).append((key, result))
        return self._by_source


def _not_executed(notebook: SourceNotebook) -> str:
    """Why a build does not execute a notebook through the cache, as a :data:`STATES` key:
    the same tests as :attr:`SourceNotebook.needs_execution`, each told apart."""
    if notebook.excluded:
        return "excluded"
    if not notebook.code_cells:
        return "no-code"
    if notebook.options.mode == "inline":
        return "inline"
    if notebook.options.mode not in EXECUTING_MODES:
        return "off"
    return "outputs"


def entries(store: Store) -> Iterator[tuple[str, ExecutionResult | None]]:
    """(key, result) of every entry; result None for an entry that cannot be read."""
    for key in store.all_keys():
        try:
            result = store.get(key)
        except DamagedEntryError:
            yield key, None
            continue
        if result is not None:
            yield key, result


def find_confdir(project: str | None) -> Path:
    """The folder with ``conf.py``: ``--project``, else the current folder or a parent."""
    if project is not None:
        folder = Path(project).resolve()
        if not (folder / "conf.py").is_file():
            raise CliError(f"{project}: no conf.py in this folder")
        return folder
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "conf.py").is_file():
            return folder
    raise CliError(f"no conf.py in {here} or its parents; use --project DIR")


@contextmanager
def open_project(args: argparse.Namespace, overrides: dict[str, Any]) -> Iterator[Project]:
    """Load the project's configuration as ``sphinx-build`` would, without building."""
    from sphinx.application import Sphinx
    from sphinx.errors import SphinxError

    from sphinx_nbcache.sphinx_ext import build_state

    confdir = find_confdir(args.project)
    warnings = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="nbcache-cli-") as tmp:
        try:
            app = Sphinx(
                str(confdir),
                str(confdir),
                str(Path(tmp, "out")),
                str(Path(tmp, "doctrees")),
                "dummy",
                confoverrides=overrides,
                status=None,
                warning=warnings,
                freshenv=True,
            )
            app.env.find_files(app.config, app.builder)
        except SphinxError as exc:
            problems = [line for line in warnings.getvalue().splitlines() if line.strip()]
            raise CliError("; ".join([*problems, str(exc)])) from None
        state = build_state(app)
        store = state.pipeline.store
        try:
            len(store)
        except sqlite3.Error as exc:
            raise CliError(
                f"the cache at {store.directory} cannot be opened ({exc}); "
                "delete that folder to start afresh"
            ) from None
        try:
            yield Project(app, state.pipeline)
        except StoreWriteError as exc:
            raise CliError(f"cannot write to the cache at {store.directory} ({exc})") from None
        except sqlite3.Error as exc:
            raise CliError(
                f"the cache at {store.directory} failed ({exc}); "
                "if it persists, delete that folder to start afresh"
            ) from None
        finally:
            _close(state.pipeline.store)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [[str(c).ljust(w) for c, w in zip(row, widths, strict=True)] for row in [header, *rows]]
    return "\n".join("  ".join(line).rstrip() for line in lines)


@dataclasses.dataclass(frozen=True)
class Usage:
    """A folder's size as ``du -s`` (on disk: allocated blocks) and ``du -s --apparent-size``
    (bytes of data) count it: the folder and everything in it, each file once however many
    links it has, symbolic links not followed."""

    disk: int
    apparent: int

    def __str__(self) -> str:
        return f"{human_size(self.disk)} on disk ({human_size(self.apparent)} apparent)"


def usage(folder: Path) -> Usage:
    seen: set[tuple[int, int]] = set()
    disk = apparent = 0
    for current, folders, files in os.walk(folder):
        links = [name for name in folders if Path(current, name).is_symlink()]
        for path in [Path(current), *(Path(current, name) for name in [*files, *links])]:
            try:
                found = path.lstat()
            except OSError:
                continue  # gone meanwhile
            if (found.st_dev, found.st_ino) in seen:
                continue
            seen.add((found.st_dev, found.st_ino))
            disk += getattr(found, "st_blocks", 0) * 512 or found.st_size
            apparent += found.st_size
    return Usage(disk, apparent)


def _close(store: Store) -> None:
    """Close the store and leave the folder as ``du`` should find it between commands:
    SQLite keeps a write-ahead log and a shared-memory index (32 KiB) beside an open
    database, and a read-only connection, the last to close, leaves them behind; one that
    may write takes them away as it closes (unless a build still has the database open)."""
    store.close()
    database = store.directory / DATABASE
    if database.is_file():
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(database, timeout=1)) as db,
        ):
            db.execute("PRAGMA schema_version").fetchone()


def _measured(store: Store) -> Usage:
    """The cache folder's size, as ``du`` finds it once the command has finished."""
    _close(store)
    return usage(store.directory)


def _removed(count: int, before: Usage, after: Usage) -> str:
    """What ``clear`` or ``prune`` did, and only that: the size before and after only when
    it changed (compacting the database may free space even when nothing was removed)."""
    noun = "entry" if count == 1 else "entries"
    removed = f"removed {count} {noun}" if count else "removed nothing"
    if after.disk == before.disk:
        return f"{removed}; {after}"
    return f"{removed}; {human_size(before.disk)} -> {after}"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def cmd_info(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        store = project.store
        entries = len(store)
        size = _measured(store)
        data = {
            "cache": str(store.directory),
            "entries": entries,
            "size": size.disk,
            "apparent_size": size.apparent,
            "schema": STORE_SCHEMA,
            "version": __version__,
        }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"cache:   {data['cache']}")
        print(f"entries: {data['entries']}")
        print(f"size:    {size}")
        print(f"schema:  {data['schema']} (sphinx-nbcache {__version__})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        notebooks = project.notebooks(args.paths)
    would = [n for n in notebooks if n.executes]
    if args.json:
        print(json.dumps([_status_json(n) for n in notebooks], indent=2))
    else:
        rows = [
            (
                n.source,
                STATES[n.state],
                f"{n.result.runtime:.2f}" if n.result else "",
                _remark(n),
            )
            for n in notebooks
        ]
        print(table(rows, ("notebook", "state", "runtime (s)", "error or change")))
        print(f"\n{len(would)} of {len(notebooks)} notebook(s) would execute")
    return 1 if would else 0


def _remark(notebook: Notebook) -> str:
    """The error of a cached failure, and why a build would execute the notebook."""
    result = notebook.result
    error = result.error.name if result and result.error and notebook.state == "failed" else ""
    return "; ".join(part for part in (error, notebook.why) if part)


def _status_json(notebook: Notebook) -> dict[str, Any]:
    result = notebook.result
    return {
        "docname": notebook.docname,
        "source": notebook.source,
        "state": notebook.state,
        "key": notebook.planned.key if notebook.planned else None,
        "runtime": result.runtime if result else None,
        "finished": result.finished if result else None,
        "error": result.error.name if result and result.error else None,
        "why": notebook.why,
        "executes": notebook.executes,
    }


def cmd_execute(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.workers is not None:
        overrides["nbcache_workers"] = args.workers
    if args.timeout is not None:
        overrides["nb_execution_timeout"] = args.timeout
    if args.executor is not None:
        overrides["nbcache_executor"] = args.executor
    if args.scheduler is not None:
        overrides["nbcache_dask_scheduler"] = args.scheduler
    with open_project(args, overrides) as project:
        notebooks = project.notebooks(args.paths)
        todo = [
            n.planned for n in notebooks if n.planned is not None and (args.force or n.executes)
        ]
        if not todo:
            print(f"nothing to execute: {len(notebooks)} notebook(s) up to date")
            return 0
        progress = Progress(len(todo), live=on_terminal())
        try:
            executor = project.pipeline.executor()
            print(f"executing {len(todo)} notebook(s), {executor.describe()}", flush=True)
            _show_progress(project.app)
            results = project.pipeline.execute(todo, progress, executor)
        except KeyboardInterrupt:
            progress.log_interrupted()
            raise
        except ExecutorError as exc:
            raise CliError(str(exc)) from None
    ours = {k: r for k, r in results.items() if r.error is not None and r.error.kind == "internal"}
    for result in ours.values():
        assert result.error is not None
        print(
            f"nbcache: error of sphinx-nbcache while executing {result.source}, through no "
            "fault of the notebook (please report this bug); nothing was cached, the next "
            f"run executes it again:\n{result.error.traceback}",
            file=sys.stderr,
        )
    failed = [r for k, r in results.items() if not r.succeeded and k not in ours]
    errors = f", {len(ours)} error(s) of sphinx-nbcache" if ours else ""
    print(f"{len(results) - len(failed) - len(ours)} succeeded, {len(failed)} failed{errors}")
    return 1 if failed or ours else 0


def _show_progress(app: Sphinx) -> None:
    """The project was loaded silently; from here on, progress lines go to stdout, in
    colour only where :func:`colour_allowed` (as ``sphinx-build`` decides for its own)."""
    from sphinx.util import console
    from sphinx.util import logging as sphinx_logging

    if not colour_allowed(sys.stdout):
        console.nocolor()
    sphinx_logging.setup(app, sys.stdout, sys.stderr)


def _one(project: Project, path: str) -> Notebook:
    (notebook,) = project.notebooks([path])
    return notebook


def cmd_show(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        notebook = _one(project, args.path)
    result = notebook.result
    data = {
        **_status_json(notebook),
        "cells": [] if result is None else _cells(notebook, result),
        "traceback": result.error.traceback if result and result.error else None,
        "error_cell": _error_cell(notebook),
        "worker": result.worker if result is not None else "",
        "dependencies": _dependencies(notebook),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"notebook: {notebook.source}")
    print(f"state:    {STATES[notebook.state]}")
    if data["key"]:
        print(f"key:      {data['key']}")
    if result is not None:
        where = f" on {result.worker}" if result.worker else ""
        print(f"executed: {result.finished}, {result.runtime:.2f} s{where}")
        rows = [
            (str(c["cell"]), "" if c["seconds"] is None else f"{c['seconds']:.2f}")
            for c in data["cells"]
        ]
        print("\n" + table(rows, ("code cell", "seconds")))
        dependencies = _dependency_rows(data["dependencies"])
        if dependencies:
            print("\n" + table(dependencies, ("depends on", "name", "recorded")))
        if result.error is not None:
            tb = (
                result.error.traceback
                if colour_allowed(sys.stdout)
                else plain_text(result.error.traceback)
            )
            where = "" if data["error_cell"] is None else f" (in code cell {data['error_cell']})"
            print(f"\n{result.error.name}: {result.error.value}{where}\n\n{tb}")
    return 0


def _error_cell(notebook: Notebook) -> int | None:
    """The failed code cell's number, as every message gives it."""
    result, source = notebook.result, notebook.notebook
    if result is None or result.error is None or source is None:
        return None
    return code_cell_number(source.notebook.cells, result.error.cell_index)


def _dependencies(notebook: Notebook) -> dict[str, Any] | None:
    """What the entry's outputs depend on besides the code: files read while executing and
    files declared (sha256 by project-relative path), declared environment variables, and
    the kernel's Python and the packages the notebook imported. The declarations are the
    planned ones, which are part of the key and so the same as the entry's."""
    if notebook.result is None or notebook.planned is None:
        return None
    declared = notebook.planned.declared
    environment = notebook.result.environment
    return {
        "files": notebook.result.dependencies,
        "declared_files": declared.get("files", {}),
        "env_vars": declared.get("env", {}),
        "python": environment.get("python"),
        "packages": environment.get("packages", {}),
    }


def _dependency_rows(dependencies: dict[str, Any]) -> list[tuple[str, str, str]]:
    files = [("file", dependencies["files"]), ("declared file", dependencies["declared_files"])]
    rows = [
        (kind, path, f"sha256 {digest[:12]}")
        for kind, found in files
        for path, digest in found.items()
    ]
    rows += [
        ("env var", name, "unset" if value is None else f"set, salted sha256 {value[:12]}")
        for name, value in dependencies["env_vars"].items()
    ]
    if dependencies["python"]:
        rows.append(("python", "", dependencies["python"]))
    rows += [("package", name, version) for name, version in dependencies["packages"].items()]
    return rows


def _cells(notebook: Notebook, result: ExecutionResult) -> list[dict[str, Any]]:
    """Each code cell's time: ``cell`` numbers it as every message does (code cells from
    1), ``index`` is nbformat's, among all cells from 0."""
    assert notebook.notebook is not None
    indices = [i for i, c in enumerate(notebook.notebook.notebook.cells) if c.cell_type == "code"]
    return [
        {"cell": number, "index": index, "seconds": seconds}
        for number, (index, seconds) in enumerate(
            zip(indices, result.cell_times, strict=False), start=1
        )
    ]


def cmd_merge(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        notebook = _one(project, args.path)
    if notebook.result is None or notebook.notebook is None:
        raise CliError(f"{args.path}: no cached outputs ({STATES[notebook.state]})")
    merged = merge_outputs(notebook.notebook.notebook, notebook.result)
    merged.metadata.pop("source_map", None)
    nbformat.validator.normalize(merged)
    text = nbformat.writes(merged)
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        store = project.store
        before = _measured(store)
        if args.paths:
            notebooks = project.notebooks(args.paths)
            sources = {n.source for n in notebooks}
            # a damaged entry tells no source: the notebook's own key finds it
            present = set(store.all_keys())
            keys = sorted(
                {n.planned.key for n in notebooks if n.planned and n.planned.key in present}
                | {key for key, result in entries(store) if result and result.source in sources}
            )
            removed = 0
        else:
            keys = store.all_keys()
            shutil.rmtree(project.parsed.folder, ignore_errors=True)
            removed = store.remove_unsafe()
        store.delete(keys)
        store.compact()
        after = _measured(store)
    print(_removed(len(keys) + removed, before, after))
    return 0


SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``800k`` or bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500M or 2G")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h or 2w")
    return float(match[1]) * AGE_UNITS[match[2]]


def cmd_prune(args: argparse.Namespace) -> int:
    """Unused entries go first, then the oldest, so that what the project uses now stays
    as long as possible."""
    if args.max_size is None and args.older_than is None and not args.unused:
        raise CliError("prune needs --max-size, --older-than or --unused")
    with open_project(args, {}) as project:
        store = project.store
        before = _measured(store)
        current = {n.planned.key for n in project.notebooks() if n.planned is not None}
        found = list(entries(store))
        doomed: set[str] = set()
        readings = 0
        if args.unused:
            doomed |= {key for key, _ in found if key not in current}
            env = project.app.env
            readings = project.parsed.prune(Path(env.doc2path(name)) for name in env.found_docs)
        if args.older_than is not None:
            limit = datetime.now(UTC) - timedelta(seconds=args.older_than)
            doomed |= {
                key
                for key, result in found
                if result is None or datetime.fromisoformat(result.finished) < limit
            }
        if args.max_size is not None:
            kept = [(key, result) for key, result in found if key not in doomed]
            kept.sort(key=lambda e: (e[0] in current, e[1].finished if e[1] else ""))
            sizes = {key: store.size_of(key) for key, _ in kept}
            total = sum(sizes.values())
            for key, _ in kept:
                if total <= args.max_size:
                    break
                doomed.add(key)
                total -= sizes[key]
        store.delete(sorted(doomed))
        removed = len(doomed) + store.remove_unsafe()
        store.compact()
        after = _measured(store)
    print(_removed(removed, before, after))
    if readings:
        print(f"removed the kept readings of {readings} notebook(s) no longer in the project")
    return 0


def cmd_import_jupyter_cache(args: argparse.Namespace) -> int:
    """Take the executed notebooks of myst-nb's jupyter-cache whose code is unchanged."""
    from sphinx_nbcache import migrate

    with open_project(args, {}) as project:
        config = project.app.config
        folder = (
            Path(args.path).resolve()
            if args.path is not None
            # the folder myst-nb used for `sphinx-build . _build/html` (`make html`)
            else migrate.jupyter_cache_folder(
                config.nb_execution_cache_path, Path(project.app.confdir, "_build", "html")
            )
        )
        planned = [n.planned for n in project.notebooks() if n.planned is not None]
        try:
            done = migrate.import_executed(project.store, planned, folder)
        except migrate.JupyterCacheError as exc:
            raise CliError(f"{exc}; give the folder of myst-nb's jupyter-cache as PATH") from None
    print(f"imported {len(done.imported)} of {len(planned)} notebook(s) from {folder}")
    left = [(source, "already in the cache") for source in done.present]
    left += [
        (source, "no executed notebook with the same code (edited since, or never executed)")
        for source in done.unmatched
    ]
    left += sorted(done.refused.items())
    if left:
        print("\n" + table(sorted(left), ("not imported", "why")))
    if done.unreadable:
        print(f"\nskipped {done.unreadable} entry(ies) of the jupyter-cache that could not be read")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbcache",
        description="See, execute, merge and manage sphinx-nbcache's cache outside a build.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    project_help = (
        "folder with conf.py (default: the current folder or the nearest parent with one)"
    )
    parser.add_argument("--project", metavar="DIR", help=project_help)
    # the same option after the command; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS, help=project_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common])
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    info = command("info", "Where the cache is, how many entries it holds and its size.", True)
    info.set_defaults(run=cmd_info)
    status = command(
        "status",
        "Each notebook's state; exit status 1 if a build would execute any of them.",
        True,
    )
    status.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    status.set_defaults(run=cmd_status)
    execute = command(
        "execute",
        "Execute the notebooks a build would execute; exit status 1 if any of them fails.",
    )
    execute.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    execute.add_argument("--force", action="store_true", help="execute even up-to-date ones")
    execute.add_argument("--workers", type=int, metavar="N", help="notebooks at once")
    execute.add_argument("--timeout", type=int, metavar="SECONDS", help="seconds per cell")
    execute.add_argument(
        "--executor", choices=("local", "dask"), help="where notebooks run (nbcache_executor)"
    )
    execute.add_argument(
        "--scheduler", metavar="ADDRESS", help="Dask scheduler address (nbcache_dask_scheduler)"
    )
    execute.set_defaults(run=cmd_execute)
    show = command("show", "One notebook's cache entry: key, when, runtimes, error.", True)
    show.add_argument("path", metavar="PATH")
    show.set_defaults(run=cmd_show)
    merge = command("merge", "Write a notebook with its cached outputs as .ipynb.")
    merge.add_argument("path", metavar="PATH")
    merge.add_argument("-o", "--output", metavar="OUT.ipynb", help="file (default: stdout)")
    merge.set_defaults(run=cmd_merge)
    clear = command("clear", "Remove the entries of the given notebooks, or all entries.")
    clear.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    clear.set_defaults(run=cmd_clear)
    prune = command(
        "prune", "Remove entries that are unused, old, or beyond a size, keeping what is used."
    )
    prune.add_argument(
        "--max-size", type=parse_size, metavar="SIZE", help="keep the cache under SIZE (500M, 2G)"
    )
    prune.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="executed longer ago (30d, 12h, 2w)"
    )
    prune.add_argument(
        "--unused", action="store_true", help="entries no notebook of the project has now"
    )
    prune.set_defaults(run=cmd_prune)
    migrate = command(
        "import-jupyter-cache",
        "Import the notebooks myst-nb's cache mode executed whose code is unchanged.",
    )
    migrate.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="jupyter-cache folder (default: nb_execution_cache_path, else _build/.jupyter_cache)",
    )
    migrate.set_defaults(run=cmd_import_jupyter_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"nbcache: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("nbcache: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nbcache: {where}{exc.strerror or exc}", file=sys.stderr)
        return USAGE_ERROR
