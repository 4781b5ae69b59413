"""The extension's setup and its event handlers: configuration checks, execution of the
build's notebooks before reading, reports and the exit status at the end."""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from myst_nb.core.execute.base import ExecutionError
from myst_nb.core.read import create_nb_reader
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.errors import SphinxError

from sphinx_nbcache import __version__
from sphinx_nbcache.cache.disk import DATABASE
from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.cache.signing import machine_secret, secret_from_env
from sphinx_nbcache.cache.store import Store, StoreWriteError
from sphinx_nbcache.config import CONFIG_VALUES, build_settings, from_command_line, validate
from sphinx_nbcache.extension.collector import NbCacheCollector, forget_kept
from sphinx_nbcache.extension.errors import fail_config, run_by_sphinx_build
from sphinx_nbcache.extension.instances import (
    NbCacheInstances,
    fill_instance_tables,
    instances_of,
    on_env_get_outdated,
    on_html_page_context,
)
from sphinx_nbcache.extension.parser import (
    NbCacheParser,
    document_notebook,
    execute,
    explain_new_key,
    plan_document,
)
from sphinx_nbcache.extension.state import (
    EARLY_ATTRIBUTE,
    ENV_VERSION,
    STATE_ATTRIBUTE,
    BuildState,
    build_state,
    doc_records,
)
from sphinx_nbcache.log import LOGGER, Subtype, warn
from sphinx_nbcache.migrate import (
    JupyterCacheError,
    holds_jupyter_cache,
    import_executed,
    jupyter_cache_folder,
)
from sphinx_nbcache.notebook.decoding import escaping, replace_undecodable, undecodable
from sphinx_nbcache.notebook.highlight import SharedBlocks, lexers_to_register
from sphinx_nbcache.notebook.read import NotebookReadError
from sphinx_nbcache.pipeline import Pipeline
from sphinx_nbcache.plan import PlannedNotebook
from sphinx_nbcache.progress import Progress, on_terminal
from sphinx_nbcache.report import (
    NbCacheReport,
    build_report,
    docs_to_rewrite,
    fill_report_tables,
    summary_line,
    write_json,
    write_junit,
)
from sphinx_nbcache.run.early import NOTHING_EXECUTED
from sphinx_nbcache.run.preload import Preloader


class _NotJupyterCache(logging.Filter):
    """myst-nb announces a jupyter-cache folder that, with sphinx-nbcache executing, is
    never used; the line would send users looking for their outputs in the wrong place."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using jupyter-cache at")


NOT_JUPYTER_CACHE = _NotJupyterCache()
"""One filter for the process: a logger keeps one copy of a filter object, so the builds
of a long-lived process (sphinx-autobuild) do not stack a filter each."""


def setup_extension(app: Sphinx, early: Preloader | None = None) -> dict[str, Any]:
    setattr(app, EARLY_ATTRIBUTE, early)
    logging.getLogger("sphinx.myst_nb.sphinx_ext").addFilter(NOT_JUPYTER_CACHE)
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
    # before the collector's handler, which must see instances as documents
    app.connect("env-get-outdated", on_env_get_outdated, priority=400)
    app.connect("env-get-updated", docs_to_rewrite)
    app.connect("html-page-context", on_html_page_context)
    app.connect("env-updated", forget_kept)
    app.connect("doctree-resolved", on_doctree_resolved)
    app.connect("source-read", on_source_read, priority=100)
    app.add_source_parser(NbCacheParser, override=True)
    app.add_env_collector(NbCacheCollector)
    app.add_directive("nbcache-report", NbCacheReport)
    app.add_directive("nbcache-instances", NbCacheInstances)
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
        fail_config(problems)
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


def on_env_before_read_docs(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """Execute every notebook about to be read that the cache cannot serve.

    This is the last point before Sphinx forks readers, so all kernels finish here.
    """
    state = build_state(app)
    state.read_docs = set(docnames)
    state.read_ahead.clear()
    state.planned.clear()  # a process may build again (sphinx-autobuild, an editor)
    state.parents.clear()
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
            notebook, injected = document_notebook(env, docname, path, text, state.parsed)
        except (NotebookReadError, OSError, UnicodeDecodeError):
            continue  # reported with its location when the document is parsed
        if notebook is None:
            continue
        if not notebook.needs_execution:
            state.read_ahead[docname] = (text, notebook, None, injected)
            continue
        try:
            planned = plan_document(env, docname, notebook)
        except NotebookReadError:
            continue  # reported with its location when the document is parsed
        state.read_ahead[docname] = (text, notebook, planned, injected)
        planned_docs.append((docname, planned))
    import_on_first_build(state, [planned for _, planned in planned_docs])
    misses = []
    for docname, planned in planned_docs:
        if state.pipeline.must_execute(planned, keep=True):
            explain_new_key(state, env, docname, planned)
            misses.append(planned)
    misses += children_of(misses, [planned for _, planned in planned_docs])
    marker = Path(app.doctreedir, NOTHING_EXECUTED)
    if not misses:
        state.pipeline.discard_early()
        if not (state.settings.cache_path / "cache.db").exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return
    marker.unlink(missing_ok=True)
    misses = state.pipeline.with_parents(misses)
    progress = Progress(len(misses), live=on_terminal())
    state.executed.update(execute(state, misses, progress))


def children_of(
    misses: list[PlannedNotebook], read: list[PlannedNotebook]
) -> list[PlannedNotebook]:
    """The notebooks among ``read`` that inherit, directly or not, from a miss: its new
    state makes them stale, though their own entries still match (a file the parent reads
    changed: same code, same keys). Executed in the same run, after it."""
    missed = {p.key for p in misses}
    found = []
    for planned in read:
        if planned.key not in missed and any(a.key in missed for a in planned.ancestors):
            found.append(planned)
            missed.add(planned.key)
    return found


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


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    records = doc_records(app.env)
    state = build_state(app)
    if not state.lexers_registered:
        register_lexers(app, records)
        share_template_blocks(app)
        state.lexers_registered = True
    fill_report_tables(app, doctree, docname, records)
    fill_instance_tables(app, doctree, docname, records)


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


def share_template_blocks(app: Sphinx) -> None:
    """Instance pages show their templates' code cells: each is highlighted once (see
    :class:`SharedBlocks`), before parallel writers fork."""
    highlighter = getattr(app.builder, "highlighter", None)
    files = {str(app.env.doc2path(i.template)) for i in instances_of(app.env).values()}
    if highlighter is not None and files:
        # an attribute of this builder's highlighter, which every page's translator uses
        highlighter.highlight_block = SharedBlocks(highlighter.highlight_block, files)


def on_build_finished(app: Sphinx, exception: BaseException | None) -> None:
    """Summary line and reports; a failed notebook under ``raise_on_error`` fails the build."""
    state = build_state(app)
    state.pipeline.discard_early()
    state.pipeline.store.close()
    state.pipeline.states.prune()
    if exception is not None:
        return
    records = doc_records(app.env)
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
    records = doc_records(app.env)
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
