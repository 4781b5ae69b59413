"""Sphinx wiring: events, the parser hand-off to myst-nb, per-document data, warnings."""

from __future__ import annotations

import atexit
import dataclasses
import gc
import json
import logging
import os
import subprocess
import sys
from collections.abc import Set
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import nbformat
from docutils import nodes
from myst_nb.core.execute.base import ExecutionError
from myst_nb.core.read import create_nb_reader
from myst_nb.sphinx_ import NbMetadataCollector
from myst_nb.sphinx_ import Parser as MystNbParser
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.environment.collectors import EnvironmentCollector
from sphinx.errors import ConfigError, SphinxError

from sphinx_nbcache import __version__
from sphinx_nbcache._compat import env_app, note_dependency, reading_document_with
from sphinx_nbcache.config import (
    CONFIG_VALUES,
    Settings,
    build_settings,
    from_command_line,
    validate,
)
from sphinx_nbcache.decoding import escaping, replace_undecodable, undecodable
from sphinx_nbcache.discover import restore_artefacts
from sphinx_nbcache.early import NOTHING_EXECUTED
from sphinx_nbcache.execute import ExecutionResult, ExecutorError
from sphinx_nbcache.highlight import code_lexer, lexers_to_register
from sphinx_nbcache.key import env_digests, explain_difference
from sphinx_nbcache.log import LOGGER, Subtype, report_error, warn
from sphinx_nbcache.merge import merge_outputs
from sphinx_nbcache.migrate import (
    JupyterCacheError,
    holds_jupyter_cache,
    import_executed,
    jupyter_cache_folder,
)
from sphinx_nbcache.pipeline import Pipeline, PlannedNotebook, declared_inputs, plan
from sphinx_nbcache.preload import Preloader
from sphinx_nbcache.progress import Progress, on_terminal
from sphinx_nbcache.read import (
    EXECUTING_MODES,
    NotebookReadError,
    SourceNotebook,
    cell_line,
    read_notebook,
)
from sphinx_nbcache.report import (
    NbCacheReport,
    build_report,
    docs_to_rewrite,
    fill_report_tables,
    forget_report_doc,
    merge_report_docs,
    plain_text,
    summary_line,
    write_json,
    write_junit,
)
from sphinx_nbcache.signing import machine_secret, secret_from_env
from sphinx_nbcache.store import DATABASE, ParsedStore, Store, StoreWriteError
from sphinx_nbcache.validate import code_cell_number

STATE_ATTRIBUTE = "_nbcache_build"
EARLY_ATTRIBUTE = "_nbcache_early"
ENV_ATTRIBUTE = "nbcache_docs"
ENV_VERSION = 2
"""Of the records kept in the env (2: cells numbered as messages number them); Sphinx
reads every page again when it changes, rather than report from records without it."""
ENV_VALUES_ATTRIBUTE = "nbcache_env_values"
MERGED_READER = "sphinx_nbcache.read.read_merged_notebook"


@dataclasses.dataclass
class BuildState:
    """Per-build state of the main process; forked ``-j`` readers get a copy of it."""

    settings: Settings
    pipeline: Pipeline
    parsed: ParsedStore
    """MyST notebooks as myst-nb's reader made them, kept from earlier builds."""
    jupyter_cache: Path
    """Where myst-nb's cache mode kept jupyter-cache, imported on a first build."""
    executed: dict[str, ExecutionResult] = dataclasses.field(default_factory=dict)
    """Results executed during this build, by key."""
    read_ahead: dict[str, tuple[str, SourceNotebook, PlannedNotebook | None]] = dataclasses.field(
        default_factory=dict
    )
    """Source text, notebook and plan of each notebook read before reading, by docname, so
    that parsing the same text neither reads nor plans the notebook a second time; each is
    dropped once its document is parsed."""
    read_docs: set[str] = dataclasses.field(default_factory=set)
    lexers_registered: bool = False
    source_suffixes: tuple[str, ...] = ()
    """Every suffix Sphinx reads as a document: artefacts never overwrite a source."""
    _tracked: frozenset[Path] | None = None

    def protected(self, path: Path) -> str | None:
        """Why an artefact must not be written at ``path`` (resolved); None if it may."""
        if path.name == "conf.py":
            return "a Sphinx configuration"
        if path.name.endswith(self.source_suffixes):
            return "a source file of the project"
        if path in self.tracked():
            return "a file kept under version control"
        return None

    def tracked(self) -> frozenset[Path]:
        """Files git keeps in the project's repository, asked once per build and only
        when an artefact is about to be written."""
        if self._tracked is None:
            self._tracked = frozenset(tracked_files(self.settings.project_root))
        return self._tracked


class _NotJupyterCache(logging.Filter):
    """myst-nb announces a jupyter-cache folder that, with sphinx-nbcache executing, is
    never used; the line would send users looking for their outputs in the wrong place."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using jupyter-cache at")


def setup_extension(app: Sphinx, early: Preloader | None = None) -> dict[str, Any]:
    setattr(app, EARLY_ATTRIBUTE, early)
    logging.getLogger("sphinx.myst_nb.sphinx_ext").addFilter(_NotJupyterCache())
    app.setup_extension("myst_nb")
    for spec in CONFIG_VALUES:
        app.add_config_value(
            spec.name, spec.default, spec.rebuild, types=spec.types, description=spec.description
        )
    app.connect("config-inited", on_config_inited)
    app.connect("env-before-read-docs", on_env_before_read_docs)
    app.connect("build-finished", on_build_finished)
    # after every other extension's handler: each has done its work when the build fails
    app.connect("build-finished", raise_on_failures, priority=900)
    app.connect("env-get-updated", docs_to_rewrite)
    app.connect("env-updated", forget_kept)
    app.connect("doctree-resolved", on_doctree_resolved)
    app.connect("source-read", on_source_read, priority=100)
    app.add_source_parser(NbCacheParser, override=True)
    app.add_env_collector(NbCacheCollector)
    app.add_directive("nbcache-report", NbCacheReport)
    return {
        "version": __version__,
        "env_version": ENV_VERSION,
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }


def freeze_heap() -> None:
    """Keep the garbage collector off objects that live until the process exits.

    What is loaded by now (modules, classes, the configuration) stays to the end, yet each
    full collection of the build walks it again: frozen once per process, it is skipped.
    At exit, CPython's last collection walks the whole heap to free memory the system
    takes back anyway: freezing everything then leaves it nothing to walk.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def on_config_inited(app: Sphinx, config: Config) -> None:
    """Report every bad value (one line each) before failing, then fix the settings and,
    unless turned off, take what is loaded so far out of the garbage collector's reach."""
    values = from_command_line({spec.name: config[spec.name] for spec in CONFIG_VALUES})
    problems = validate(values)
    if problems:
        for problem in problems:
            report_error(problem, Subtype.config)
        message = f"{len(problems)} invalid nbcache configuration value(s), listed above"
        if run_by_sphinx_build():
            # Sphinx 9 prints any exception with its versions, a traceback and a request to
            # report it to Sphinx: a mistake in conf.py deserves the lines above and no more
            print(f"\nConfiguration error:\n{message}", file=sys.stderr)
            raise SystemExit(2)
        raise ConfigError(message)
    settings = build_settings(
        values, Path(app.confdir), Path(app.srcdir), config.nb_execution_cache_path
    )
    if values["nbcache_gc_freeze"]:
        freeze_heap()

    def warn_at_source(message: str, subtype: str, source: str) -> None:
        warn(message, Subtype(subtype), location=app.env.path2doc(source) if source else None)

    def explain_at_source(message: str, source: str) -> None:
        LOGGER.info("nbcache: %s: %s", source, message)

    secret = secret_from_env(settings.secret_env)
    store = Store(settings.cache_path, secret)
    pipeline = Pipeline(settings, store, warn_at_source, explain_at_source)
    early: Preloader | None = getattr(app, EARLY_ATTRIBUTE, None)
    if early is not None:
        if settings.executor == "local" and settings.kernel_preload == tuple(early.modules):
            pipeline.early = early
        else:
            early.close()
    parsed = ParsedStore(settings.cache_path, Path(app.srcdir), secret or machine_secret())
    jupyter_cache = jupyter_cache_folder(config.nb_execution_cache_path, Path(app.outdir))
    setattr(app, STATE_ATTRIBUTE, BuildState(settings, pipeline, parsed, jupyter_cache))


def tracked_files(root: Path | None) -> list[Path]:
    """The files of the git repository at ``root``, resolved; none when it is not one."""
    if root is None or not (root / ".git").exists():
        return []
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [(root / os.fsdecode(name)).resolve() for name in listed.split(b"\0") if name]


def run_by_sphinx_build() -> bool:
    """Whether this process is the ``sphinx-build`` command (or ``python -m sphinx``),
    rather than a program using Sphinx's API, which expects an exception."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main = getattr(spec, "name", "")
    return Path(sys.argv[0]).name == "sphinx-build" or main in ("sphinx", "sphinx.__main__")


def build_state(app: Sphinx) -> BuildState:
    return cast(BuildState, getattr(app, STATE_ATTRIBUTE))


def read_source(
    env: BuildEnvironment, path: Path, text: str, parsed: ParsedStore
) -> SourceNotebook | None:
    """myst-nb's reading of ``text`` with the project's Markdown and notebook settings.

    :raises NotebookReadError: if the notebook reader fails on the text.
    """
    return read_notebook(
        path,
        text,
        env.myst_config,  # type: ignore[attr-defined]
        env.mystnb_config,  # type: ignore[attr-defined]
        parsed,
        env.config.source_encoding,
    )


def plan_document(env: BuildEnvironment, docname: str, notebook: SourceNotebook) -> PlannedNotebook:
    source = str(env.doc2path(docname, False))
    state = build_state(env_app(env))
    declared, files = declared_inputs(
        state.settings,
        Path(env.srcdir),
        source,
        dict(notebook.notebook.metadata),
        state.pipeline.warn,
        state.pipeline.declared_digests,
    )
    planned = plan(source, notebook, declared, files)
    note_declared(env, docname, planned)
    return planned


def note_declared(env: BuildEnvironment, docname: str, planned: PlannedNotebook) -> None:
    """Sphinx keeps a page's dependencies only when noted while the page is read."""
    for path in planned.declared.get("files", {}):
        note_dependency(env, Path(env.srcdir, path), docname)


def on_env_before_read_docs(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """Execute every notebook about to be read that the cache cannot serve.

    This is the last point before Sphinx forks readers, so all kernels finish here.
    """
    state = build_state(app)
    state.read_docs = set(docnames)
    state.read_ahead.clear()
    # complete only now: extensions' suffixes join source_suffix after config-inited
    state.source_suffixes = (*app.config.source_suffix, *env.mystnb_config.custom_formats)  # type: ignore[attr-defined]
    # Sphinx decodes sources strictly before any event: an undecodable byte would stop
    # the build; this codec keeps it, for the page's parser to report (see decoding.py)
    env.settings["input_encoding"] = escaping(env.config.source_encoding)
    planned_docs = []
    for docname in sorted(docnames):
        path = Path(env.doc2path(docname))
        try:
            text = path.read_text(encoding=env.settings["input_encoding"])
            notebook = read_source(env, path, text, state.parsed)
        except (NotebookReadError, OSError, UnicodeDecodeError):
            continue  # reported with its location when the document is parsed
        if notebook is None:
            continue
        if not notebook.needs_execution:
            state.read_ahead[docname] = (text, notebook, None)
            continue
        planned = plan_document(env, docname, notebook)
        state.read_ahead[docname] = (text, notebook, planned)
        planned_docs.append((docname, planned))
    import_on_first_build(state, [planned for _, planned in planned_docs])
    misses = []
    for docname, planned in planned_docs:
        if state.pipeline.must_execute(planned, keep=True):
            explain_new_key(state, env, docname, planned)
            misses.append(planned)
    marker = Path(app.doctreedir, NOTHING_EXECUTED)
    if not misses:
        state.pipeline.discard_early()
        if not (state.settings.cache_path / "cache.db").exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return
    marker.unlink(missing_ok=True)
    progress = Progress(len(misses), live=on_terminal())
    state.executed.update(execute(state, misses, progress))


def import_on_first_build(state: BuildState, notebooks: list[PlannedNotebook]) -> None:
    """When the cache has never stored anything and myst-nb's cache mode left a
    jupyter-cache, take from it the notebooks whose code is unchanged, so that switching
    executes nothing; one line says how many. Not with a signing secret set: entries made
    from an unsigned folder would be signed, and ``nbcache import-jupyter-cache`` is
    there to import one deliberately."""
    folder = state.jupyter_cache
    cache = state.settings.cache_path
    if not notebooks or (cache / DATABASE).exists() or not holds_jupyter_cache(folder):
        return
    if state.pipeline.store.secret is not None:
        LOGGER.info(
            "nbcache: myst-nb's jupyter-cache at %s is not imported automatically while "
            "$%s signs the cache; `nbcache import-jupyter-cache` imports it if you trust it",
            folder,
            state.settings.secret_env,
        )
        return
    try:
        done = import_executed(state.pipeline.store, notebooks, folder)
    except (JupyterCacheError, StoreWriteError) as exc:
        warn(f"myst-nb's jupyter-cache not imported: {exc}", Subtype.import_)
        return
    others = len(notebooks) - len(done.imported)
    LOGGER.info(
        "nbcache: imported %d of %d notebook(s) from myst-nb's jupyter-cache at %s%s",
        len(done.imported),
        len(notebooks),
        folder,
        f"; {others} execute (edited since myst-nb executed them, or never executed)"
        if others
        else "",
    )


def explain_new_key(
    state: BuildState, env: BuildEnvironment, docname: str, planned: PlannedNotebook
) -> None:
    """When a page's notebook executes because its key changed, the log says what changed
    (code, a declared file or variable, a setting), as ``nbcache status`` would; the
    lookup itself explains the other reasons."""
    before = _doc_records(env).get(docname, {}).get("key")
    if before is None or before == planned.key or planned.key in state.pipeline.store:
        return
    material = state.pipeline.store.material(before)
    if material is not None:
        reason = explain_difference(material, planned.material)
        message = f"{reason} since it was executed; executing it again"
        state.pipeline.explain(message, planned.source)


class NbCacheError(SphinxError):
    """What stops a build outright, shown without a traceback."""

    category = "nbcache error"


def execute(
    state: BuildState, notebooks: list[PlannedNotebook], progress: Progress
) -> dict[str, ExecutionResult]:
    """Run ``notebooks`` through the configured executor, saying where first."""
    try:
        executor = state.pipeline.executor()
        LOGGER.info("nbcache: executing %d notebook(s), %s", len(notebooks), executor.describe())
        return state.pipeline.execute(notebooks, progress, executor)
    except KeyboardInterrupt:
        progress.log_interrupted()
        raise
    except ExecutorError as exc:
        report_error(str(exc), Subtype.executor)
        raise NbCacheError(str(exc)) from None


class NbCacheParser(MystNbParser):  # type: ignore[misc]
    """myst-nb's parser, fed with outputs from the cache instead of executing itself."""

    def parse(self, inputstring: str, document: nodes.document) -> None:
        env = document.settings.env
        if (document.current_source or "").endswith("<translated>"):
            super().parse(inputstring, document)
            return
        state = build_state(env_app(env))
        text, notebook, planned = state.read_ahead.pop(env.docname, (None, None, None))
        if notebook is None or text != inputstring:
            planned = None
            path = Path(env.doc2path(env.docname))
            try:
                notebook = read_source(env, path, inputstring, state.parsed)
            except NotebookReadError as exc:
                _record_unreadable(env, exc)
                _render_unreadable(self, document, path, exc)
                return
        if notebook is None or notebook.options.mode not in EXECUTING_MODES:
            super().parse(inputstring, document)  # plain Markdown, or myst-nb's off/inline
        elif not notebook.needs_execution:
            self._render(notebook.notebook, notebook, document)
        elif planned is None:
            self._render_result(state, plan_document(env, env.docname, notebook), document)
        else:
            note_declared(env, env.docname, planned)
            self._render_result(state, planned, document)

    def _render_result(
        self, state: BuildState, planned: PlannedNotebook, document: nodes.document
    ) -> None:
        result, origin = self._outputs(state, planned)
        folder = Path(planned.notebook.path).parent
        restored, refused = restore_artefacts(result.artefacts, folder, state.protected)
        if restored:
            LOGGER.info(
                "nbcache: %s: restored %s from the cache", planned.source, ", ".join(restored)
            )
        for path, why in refused.items():
            LOGGER.info(
                "nbcache: %s: did not restore %s from the cache: %s", planned.source, path, why
            )
        merged = merge_outputs(planned.notebook.notebook, result)
        self._render(merged, planned.notebook, document)
        self._record(document.settings.env, planned, result, origin, code_lexer(merged.metadata))
        say_reused_or_cached(state, planned, result, origin)

    @staticmethod
    def _outputs(state: BuildState, planned: PlannedNotebook) -> tuple[ExecutionResult, str]:
        """This build's result, else the store's; execute here if neither has it (another
        extension changed the source after planning, or the entry vanished since)."""
        if planned.key in state.executed:
            return state.executed[planned.key], "executed"
        result = state.pipeline.lookup(planned)
        if result is not None:
            return result, "cache"
        executed = execute(state, [planned], Progress(1, live=False))
        state.executed.update(executed)
        return executed[planned.key], "executed"

    def _render(
        self, merged: nbformat.NotebookNode, notebook: SourceNotebook, document: nodes.document
    ) -> None:
        """Hand myst-nb the merged notebook as ``.ipynb`` JSON with execution off.

        The document's own path is mapped to a plain JSON reader for the duration, so
        text notebooks (MyST markdown, jupytext) keep their source map and line numbers.
        """
        env = document.settings.env
        original = env.mystnb_config
        key = original.metadata_key
        overrides = merged.metadata.get(key)
        if isinstance(overrides, dict) and "execution_mode" in overrides:
            merged.metadata[key] = {**overrides, "execution_mode": "off"}
        reader: tuple[str, dict[str, Any], bool] = (
            MERGED_READER,
            {},
            notebook.commonmark_only,
        )
        env.mystnb_config = original.copy(
            execution_mode="off",
            custom_formats=reading_document_with(original.custom_formats, notebook.path, reader),
        )
        try:
            super().parse(json.dumps(merged), document)
        finally:
            env.mystnb_config = original

    @staticmethod
    def _record(
        env: BuildEnvironment,
        planned: PlannedNotebook,
        result: ExecutionResult,
        origin: str,
        lexer: str | None,
    ) -> None:
        """Execution data for myst-nb's ``nb-exec-table``, our own records, and warnings."""
        docname = env.docname
        options = planned.notebook.options
        error = result.error
        state = build_state(env_app(env))
        root = state.settings.project_root
        if root is not None:
            for path in result.dependencies:
                # Sphinx re-reads the page when a file it read changes (by mtime); the
                # lookup then compares contents, so a touched file executes nothing
                env.note_dependency(str(root / path))
        NbMetadataCollector.set_exec_data(
            env,
            docname,
            {
                "mtime": datetime.fromisoformat(result.finished).timestamp(),
                "runtime": result.runtime,
                "method": options.mode,
                "succeeded": result.succeeded,
                "error": error.name if error else None,
                "traceback": error.traceback if error else None,
            },
        )
        records = _doc_records(env)
        notebook = planned.notebook.notebook
        code_indices = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
        line = None if error is None else _cell_line(planned.notebook, error.cell_index)
        number = None if error is None else code_cell_number(notebook.cells, error.cell_index)
        records[docname] = {
            "key": planned.key,
            "source": planned.source,
            "origin": origin,
            "status": "succeeded" if error is None else FAILURE_STATUS[error.kind],
            "succeeded": result.succeeded,
            "runtime": result.runtime,
            "finished": result.finished,
            "worker": result.worker,
            "lexer": lexer,
            "environment": state.pipeline.environment_mark(planned.kernel)
            if result.environment
            else None,
            "raise": bool(error) and options.raise_on_error,
            "error": None
            if error is None
            else {
                "name": error.name,
                "value": error.value,
                "traceback": error.traceback,
                "cell": number,
                "cell_index": error.cell_index,
                "line": line,
            },
            "cells": [
                {
                    "cell": number,
                    "index": index,
                    "line": _cell_line(planned.notebook, index),
                    "seconds": seconds,
                }
                for number, (index, seconds) in enumerate(
                    zip(code_indices, result.cell_times, strict=False), start=1
                )
            ],
        }
        if error is None:
            return
        app = env_app(env)
        report = Path(app.outdir, "reports", *f"{docname}.err.log".split("/"))
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(plain_text(error.traceback), encoding="utf-8")
        where = "" if number is None else f" in code cell {number}"
        # a kernel's error value can hold colour codes (IPython's own, a library's)
        value = plain_text(error.value)
        if error.kind == "internal":
            message = (
                f"sphinx-nbcache failed while executing the notebook, through no fault of the "
                f"notebook (please report this bug): {error.name}: {value}; nothing was "
                f"cached, the next build executes it again\n{plain_text(error.traceback)}"
                f"(traceback saved in {report})"
            )
            report_error(message, Subtype.internal, location=(docname, None))
            return
        message = f"{FAILURE_TEXT[error.kind]}{where}: {plain_text(error.name)}: {value}"
        if error.name == STDIN_ERROR:
            message += " (a notebook cannot read input() during a build)"
        if options.show_tb:
            message += f"\n{plain_text(error.traceback)}"
        message += f"\n(traceback saved in {report})"
        log = report_error if options.raise_on_error else warn
        log(message, Subtype(error.kind), location=(docname, line))


def say_reused_or_cached(
    state: BuildState, planned: PlannedNotebook, result: ExecutionResult, origin: str
) -> None:
    """A line per successful notebook in myst-nb's words ("Using cached notebook", "Cached
    executed notebook"), which CI scripts look for; failures have their warning."""
    if not result.succeeded:
        return
    if origin == "cache":
        message = f"Using cached notebook (executed {_when(result.finished)})"
    elif planned.key in state.pipeline.store:
        message = f"Cached executed notebook (executed in {result.runtime:.2f} s)"
    else:
        return  # not stored: a warning said why
    LOGGER.info("nbcache: %s: %s", planned.source, message)


def _when(finished: str) -> str:
    return datetime.fromisoformat(finished).strftime("%Y-%m-%d %H:%M UTC")


FAILURE_STATUS = {
    "cell": "cell-error",
    "timeout": "timeout",
    "kernel": "kernel-error",
    "internal": "extension-error",
}
FAILURE_TEXT = {
    "cell": "Executing notebook failed",
    "timeout": "Executing notebook failed (timed out)",
    "kernel": "Executing notebook failed (lost its kernel)",
}
"""Each begins with myst-nb's own words for a failure, which CI scripts look for."""
STDIN_ERROR = "StdinNotImplementedError"


def _record_unreadable(env: BuildEnvironment, exc: NotebookReadError) -> None:
    """An unreadable notebook is a failure like any other: warned (an error under
    ``nb_execution_raise_on_error``) and listed in the reports."""
    strict = bool(env.mystnb_config.execution_raise_on_error)  # type: ignore[attr-defined]
    message = f"notebook could not be read: {exc}"
    _doc_records(env)[env.docname] = {
        "key": None,
        "source": str(env.doc2path(env.docname, False)),
        "origin": "none",
        "status": "read-error",
        "succeeded": False,
        "runtime": 0.0,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "raise": strict,
        "error": {
            "name": "NotebookReadError",
            "value": str(exc),
            "traceback": message,
            "cell": None,
            "cell_index": None,
            "line": None,
        },
        "cells": [],
    }
    log = report_error if strict else warn
    log(message, Subtype.read, location=(env.docname, exc.line))


def _render_unreadable(
    parser: MystParser, document: nodes.document, path: Path, exc: NotebookReadError
) -> None:
    """The page says that its notebook could not be read, under the file's name as its
    title: an empty page has no title, so the toctree would warn and drop its link."""
    MystParser.parse(parser, "", document)  # the settings myst's transforms expect
    section = nodes.section(ids=[nodes.make_id(path.name)], names=[path.name])
    section += nodes.title(text=path.name)
    section += nodes.paragraph(text=f"This notebook could not be read: {exc}")
    document += section


def on_source_read(app: Sphinx, docname: str, content: list[str]) -> None:
    """A page that is not a notebook, with bytes its encoding cannot decode (kept by
    :func:`decoding.escaping`), is shown with replacement characters, and warned about
    once; a notebook's parser reports them as an unreadable notebook."""
    env = app.env
    bad_bytes = undecodable(content[0], env.config.source_encoding)
    if bad_bytes is None:
        return
    path = env.doc2path(docname)
    shown = replace_undecodable(content[0])
    try:  # a bad byte in front matter must not make a notebook look like a plain page
        reader = create_nb_reader(str(path), env.myst_config, env.mystnb_config, shown)  # type: ignore[attr-defined]
    except Exception:
        return  # the notebook's parser reports it, once
    if reader is not None:
        return
    message, line = bad_bytes
    warn(f"{message}; shown as \ufffd", Subtype.read, location=(docname, line))
    content[0] = shown


def _cell_line(notebook: SourceNotebook, cell_index: int | None) -> int | None:
    if cell_index is None:
        return None
    return cell_line(notebook.notebook, notebook.cell_lines, cell_index)


def _doc_records(env: BuildEnvironment) -> dict[str, dict[str, Any]]:
    if not hasattr(env, ENV_ATTRIBUTE):
        setattr(env, ENV_ATTRIBUTE, {})
    return cast(dict[str, dict[str, Any]], getattr(env, ENV_ATTRIBUTE))


class NbCacheCollector(EnvironmentCollector):
    """Keeps per-document cache records in the env, merged across ``-j`` readers."""

    def clear_doc(self, app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        _doc_records(env).pop(docname, None)
        forget_report_doc(env, docname)

    def merge_other(
        self, app: Sphinx, env: BuildEnvironment, docnames: Set[str], other: BuildEnvironment
    ) -> None:
        ours, theirs = _doc_records(env), _doc_records(other)
        ours.update({name: theirs[name] for name in docnames if name in theirs})
        merge_report_docs(env, docnames, other)

    def process_doc(self, app: Sphinx, doctree: nodes.document) -> None:
        """Records are written during parsing, where the outputs are known."""

    def get_outdated_docs(
        self,
        app: Sphinx,
        env: BuildEnvironment,
        added: Set[str],
        changed: Set[str],
        removed: Set[str],
    ) -> list[str]:
        """Unchanged documents must be read (and maybe executed) again when their cache
        entry is gone, when a declared environment variable has another value, or when
        something was installed or upgraded where their kernel runs (the lookup then
        tells whether a package the notebook imported is at another version). A failure
        is read again on every build, from the cache: its warning and the exit status
        under ``nb_execution_raise_on_error`` must not vanish because nothing changed."""
        state = build_state(app)
        values = env_digests(state.settings.env_vars)
        before = getattr(env, ENV_VALUES_ATTRIBUTE, values)
        setattr(env, ENV_VALUES_ATTRIBUTE, values)
        store = state.pipeline.store

        def installed_since(record: dict[str, Any]) -> bool:
            mark = record.get("environment")
            if not mark:
                return False
            interpreter, fingerprint = mark
            now = state.pipeline.fingerprint(interpreter, fingerprint or "")
            return now is not None and bool(now != fingerprint)

        return sorted(
            docname
            for docname, record in _doc_records(env).items()
            if docname not in changed
            and docname not in removed
            and (
                before != values
                or record["status"] != "succeeded"
                or record["key"] not in store
                or installed_since(record)
            )
        )


def forget_kept(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Every page is read: results kept for them are no longer needed."""
    build_state(app).pipeline.forget_kept()
    return []


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    records = _doc_records(app.env)
    state = build_state(app)
    if not state.lexers_registered:
        register_lexers(app, records)
        state.lexers_registered = True
    fill_report_tables(app, doctree, docname, records)


def register_lexers(app: Sphinx, records: dict[str, dict[str, Any]]) -> None:
    """Before the first page is written (and before parallel writers fork), the lexers
    notebook pages highlight with, resolved once; a build that writes nothing (a no-op
    rebuild) never looks them up."""
    if records:
        config = app.env.mystnb_config  # type: ignore[attr-defined]
        names = [record.get("lexer") for record in records.values()]
        names += [config.render_text_lexer, config.render_error_lexer]
        for name, lexer in lexers_to_register(names).items():
            app.add_lexer(name, lexer)


def on_build_finished(app: Sphinx, exception: BaseException | None) -> None:
    """Summary line and reports; a failed notebook under ``raise_on_error`` fails the build."""
    state = build_state(app)
    state.pipeline.discard_early()
    state.pipeline.store.close()
    if exception is not None:
        return
    records = _doc_records(app.env)
    report = build_report(records, state.read_docs, app.config.project)
    if report["summary"]["notebooks"]:
        LOGGER.info(summary_line(report["summary"], state.settings.cache_path))
    outdir = Path(app.outdir)
    if state.settings.report is not None:
        write_json(report, outdir / state.settings.report)
    if state.settings.junit is not None:
        write_junit(report, outdir / state.settings.junit)


class NotebookExecutionError(SphinxError, ExecutionError):  # type: ignore[misc]
    """Notebooks failed under ``nb_execution_raise_on_error``: what ``app.build()`` raises,
    as it raises myst-nb's :class:`~myst_nb.core.execute.base.ExecutionError` (a subclass
    of both, so code that catches either keeps working), once every failure is reported."""

    category = "Notebook execution failed"

    def __init__(self, docnames: list[str], sources: list[str]) -> None:
        super().__init__(
            f"{len(sources)} notebook(s) failed with nb_execution_raise_on_error = True "
            f"(each reported above): {', '.join(sources)}"
        )
        self.docnames = docnames
        """The documents whose notebooks failed."""


def raise_on_failures(app: Sphinx, exception: BaseException | None) -> None:
    """Under ``nb_execution_raise_on_error``, fail the build once it is complete: every
    notebook executed or looked up and each failure reported, results stored, reports and
    pages written, other extensions' ``build-finished`` handlers run.

    ``sphinx-build`` gets one clear message and exit status 1 (Sphinx would print any
    exception with a traceback, ask for it to be reported, and discard its saved
    environment, so that the next build would read every page again); a program calling
    ``app.build()`` gets :class:`NotebookExecutionError`."""
    if exception is not None:
        return
    records = _doc_records(app.env)
    failed = sorted(
        name for name in build_state(app).read_docs if records.get(name, {}).get("raise")
    )
    if not failed:
        return
    error = NotebookExecutionError(failed, [records[name]["source"] for name in failed])
    if run_by_sphinx_build():
        print(f"\n{error.category}:\n{error}", file=sys.stderr)
        raise SystemExit(1)
    raise error
