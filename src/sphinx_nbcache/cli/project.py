"""A project as the command line sees it: conf.py loaded through a never-built Sphinx
application, its notebooks and the state of each in the cache."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sphinx_nbcache.cache.key import explain_difference
from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.cache.payload import DamagedEntryError
from sphinx_nbcache.cache.store import Store, StoreWriteError
from sphinx_nbcache.cli.sizes import close_store
from sphinx_nbcache.model import EXECUTING_MODES, ExecutionResult
from sphinx_nbcache.notebook.cells import code_cell_indices, code_cell_number
from sphinx_nbcache.notebook.read import NotebookReadError, SourceNotebook
from sphinx_nbcache.pipeline import Pipeline
from sphinx_nbcache.plan import PlannedNotebook, resume_keys

if TYPE_CHECKING:
    from sphinx.application import Sphinx


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

    @property
    def store(self) -> Store:
        return self.pipeline.store

    @property
    def parsed(self) -> ParsedStore:
        from sphinx_nbcache.extension.state import build_state

        return build_state(self.app).parsed

    def instance(self, path: str, name: str | None, parameters: dict[str, Any]) -> Notebook:
        """The notebook at ``path`` as its instance ``name`` is, or as an ad-hoc instance
        with ``parameters`` (papermill's ``-p``)."""
        from sphinx_nbcache.extension.instances import instances_of

        docname = self._docname(path)
        if name is not None:
            found = instances_of(self.app.env)
            if f"{docname}/{name}" not in found:
                names = sorted(i.spec.name for i in found.values() if i.template == docname)
                some = f"its instances: {', '.join(names)}" if names else "it has no instances"
                raise CliError(f"{path}: no instance {name!r} ({some})")
            docname = f"{docname}/{name}"
        notebook = self._notebook(docname, parameters if name is None else None)
        if notebook is None:
            raise CliError(f"{path}: not a notebook")
        return notebook

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
        from sphinx_nbcache.extension.instances import instances_of

        env = self.app.env
        srcdir = Path(self.app.srcdir)
        found: dict[str, list[str]] = {}
        for base in dict.fromkeys((Path.cwd(), srcdir)):
            written = Path(os.path.normpath(base / path))
            for docname, files in self._documents_at(written).items():
                found.setdefault(docname, []).extend(files)
        if not found:
            real = Path(path).resolve()
            for docname in sorted(env.found_docs - instances_of(env).keys()):
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
        from sphinx_nbcache.extension.instances import instances_of, virtual_source

        env = self.app.env
        srcdir = Path(self.app.srcdir)
        instances = instances_of(env)
        docname = env.path2doc(str(written))
        stem = written.relative_to(srcdir).as_posix() if written.is_relative_to(srcdir) else None
        for name in (docname, stem):
            if name in instances:  # by its docname, or by its name with the template's suffix
                virtual = virtual_source(env, name, instances[name])
                return {name: [virtual]} if written in (srcdir / virtual, srcdir / name) else {}
        if docname in env.found_docs:
            # of x.ipynb and x.md, only the file Sphinx reads is the document x
            same = Path(env.doc2path(docname)) == written
            return {docname: [str(env.doc2path(docname, False))]} if same else {}
        if stem is None or stem not in env.found_docs:
            return {}
        suffixes = env.config.source_suffix
        files = [f"{stem}{suffix}" for suffix in suffixes if (srcdir / f"{stem}{suffix}").is_file()]
        return {stem: files or [str(env.doc2path(stem, False))]}

    def _notebook(self, docname: str, parameters: dict[str, Any] | None = None) -> Notebook | None:
        """``parameters``: an ad-hoc instance's."""
        from sphinx_nbcache.extension.instances import described, instances_of, virtual_source
        from sphinx_nbcache.extension.parser import document_notebook, plan_document

        env = self.app.env
        path = Path(env.doc2path(docname))
        source = str(env.doc2path(docname, False))
        instance = instances_of(env).get(docname)
        if parameters is not None:
            source = f"{source} ({described(parameters)})"
        elif instance is not None:
            source = virtual_source(env, docname, instance)
        try:
            text = path.read_text(encoding=env.config.source_encoding)
            notebook, _ = document_notebook(env, docname, path, text, self.parsed, parameters)
        except (NotebookReadError, OSError, UnicodeDecodeError):
            return Notebook(docname, source, "unreadable", None, None, None)
        if notebook is None:
            return None
        if not notebook.needs_execution:
            return Notebook(docname, source, _not_executed(notebook), notebook, None, None)
        try:
            planned = plan_document(env, docname, notebook, parameters)
        except NotebookReadError as exc:  # it inherits from no notebook, or in a cycle
            return Notebook(docname, source, "unreadable", notebook, None, None, str(exc))
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
        previous = list(entries_of(self.store, source))
        if not previous:
            return Notebook(docname, source, "new", notebook, planned, None, executes=executes)
        key, _ = max(previous, key=lambda entry: entry[1].finished)
        old = self.store.material(key)
        new = planned.material
        why = "unknown" if old is None else explain_difference(old, new)
        point = self.pipeline.resume_point(planned, resume_keys(planned, self.pipeline.settings))
        if point.resume is not None:
            why += f"; would resume from {point.start}"
        return Notebook(docname, source, "stale", notebook, planned, None, why, executes)


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


def entries_of(store: Store, source: str) -> Iterator[tuple[str, ExecutionResult]]:
    """(key, result) of the readable entries executed from ``source``: a notebook whose
    own key is missing but whose source has entries was executed with other code or
    settings before. Found by tag; the result itself must name the source."""
    for key in store.keys_of(source):
        try:
            result = store.get(key)
        except DamagedEntryError:
            continue
        if result is not None and result.source == source:
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

    from sphinx_nbcache.extension.instances import register
    from sphinx_nbcache.extension.state import build_state

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
            register(app, app.env)
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
            close_store(state.pipeline.store)


def one_notebook(project: Project, path: str) -> Notebook:
    (notebook,) = project.notebooks([path])
    return notebook


def error_cell(notebook: Notebook) -> int | None:
    """The failed code cell's number, as every message gives it."""
    result, source = notebook.result, notebook.notebook
    if result is None or result.error is None or source is None:
        return None
    return code_cell_number(source.notebook.cells, result.error.cell_index)


def dependencies_of(notebook: Notebook) -> dict[str, Any] | None:
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


def dependency_rows(dependencies: dict[str, Any]) -> list[tuple[str, str, str]]:
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


def cell_rows(notebook: Notebook, result: ExecutionResult) -> list[dict[str, Any]]:
    """Each code cell's time: ``cell`` numbers it as every message does (code cells from
    1), ``index`` is nbformat's, among all cells from 0."""
    assert notebook.notebook is not None
    indices = code_cell_indices(notebook.notebook.notebook.cells)
    return [
        {"cell": number, "index": index, "seconds": seconds}
        for number, (index, seconds) in enumerate(
            zip(indices, result.cell_times, strict=False), start=1
        )
    ]
