"""The parser Sphinx calls for a notebook page: the planned result merged with the source
and handed to myst-nb to render, with located warnings for failures."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from docutils import nodes
from myst_nb.sphinx_ import NbMetadataCollector
from myst_nb.sphinx_ import Parser as MystNbParser
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.environment import BuildEnvironment
from sphinx.errors import SphinxError

from sphinx_nbcache.cache.key import explain_difference
from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.extension._compat import env_app, note_dependency, reading_document_with
from sphinx_nbcache.extension.inherit import (
    cycle_error,
    declared_parent,
    note_inherited,
    parent_docname,
)
from sphinx_nbcache.extension.instances import (
    Instance,
    decorate_page,
    described,
    glued,
    instances_of,
    virtual_source,
)
from sphinx_nbcache.extension.source import read_source
from sphinx_nbcache.extension.state import MERGED_READER, BuildState, build_state, doc_records
from sphinx_nbcache.inputs.artefacts import restore_artefacts
from sphinx_nbcache.log import LOGGER, Subtype, report_error, warn
from sphinx_nbcache.model import EXECUTING_MODES, FAILURE_TEXT, ExecutionResult, Status
from sphinx_nbcache.notebook.cells import code_cell_indices, code_cell_number
from sphinx_nbcache.notebook.highlight import code_lexer
from sphinx_nbcache.notebook.merge import merge_outputs
from sphinx_nbcache.notebook.parameters import (
    PARAMETERS_TAG,
    Injected,
    ParameterError,
    inject,
    shift_lines,
)
from sphinx_nbcache.notebook.read import NotebookReadError, SourceNotebook, cell_line
from sphinx_nbcache.plan import PlannedNotebook, declared_inputs, is_python, plan
from sphinx_nbcache.progress import Progress
from sphinx_nbcache.report import plain_text
from sphinx_nbcache.run.local import ExecutorError


def document_notebook(
    env: BuildEnvironment,
    docname: str,
    path: Path,
    text: str,
    parsed: ParsedStore,
    parameters: dict[str, Any] | None = None,
) -> tuple[SourceNotebook | None, Injected | None]:
    """The notebook page ``docname`` shows: its source's, with an instance's parameters
    (or ``parameters``, an ad-hoc instance's) injected, and how they were.

    :raises NotebookReadError: if the notebook cannot be read, or the parameters cannot be
        written in its kernel's language.
    """
    notebook = read_source(env, path, text, parsed)
    instance = instances_of(env).get(docname)
    if parameters is None and instance is not None:
        parameters = instance.spec.parameters
    if notebook is None or parameters is None:
        return notebook, None
    try:
        injected = inject(notebook.notebook, parameters)
    except ParameterError as exc:
        raise NotebookReadError(f"parameters {described(parameters)}: {exc}") from None
    lines = shift_lines(notebook.cell_lines, injected)
    return dataclasses.replace(notebook, notebook=injected.notebook, cell_lines=lines), injected


def plan_document(
    env: BuildEnvironment,
    docname: str,
    notebook: SourceNotebook,
    parameters: dict[str, Any] | None = None,
) -> PlannedNotebook:
    """The page's execution; an instance's under its own name (``<template>/<name>`` with
    the template's suffix), with the template's declared inputs and its parameters; an
    ad-hoc instance's (``parameters``) under the template's name and its parameters. A
    notebook that inherits is planned after its parent, whose key is part of its own.

    :raises NotebookReadError: if it inherits from no notebook that executes, or in a cycle.
    """
    source = str(env.doc2path(docname, False))
    state = build_state(env_app(env))
    state.planning.append(docname)
    try:
        parent = _planned_parent(env, docname, notebook)
    finally:
        state.planning.pop()
    declared, files = declared_inputs(
        state.settings,
        Path(env.srcdir),
        source,
        dict(notebook.notebook.metadata),
        state.pipeline.warn,
        state.pipeline.digests,
    )
    instance = instances_of(env).get(docname)
    if parameters is not None:
        named = f"{source} ({described(parameters)})"
        planned = plan(named, notebook, declared, files, parameters, parent)
    elif instance is not None:
        named = virtual_source(env, docname, instance)
        planned = plan(named, notebook, declared, files, instance.spec.parameters, parent)
    else:
        planned = plan(source, notebook, declared, files, parent=parent)
    note_declared(env, docname, planned)
    if parameters is None:
        state.planned[docname] = planned
    return planned


def _planned_parent(
    env: BuildEnvironment, docname: str, notebook: SourceNotebook
) -> PlannedNotebook | None:
    """The plan of the notebook ``docname`` inherits from (read and planned now if this
    build has not yet), None if it inherits from none."""
    declared = declared_parent(notebook)
    if declared is None:
        return None
    state = build_state(env_app(env))
    parent = parent_docname(env, docname, declared)
    state.parents[docname] = parent
    if parent in state.planning:
        raise cycle_error(state.planning, parent)
    if parent in state.planned:
        return state.planned[parent]
    path = Path(env.doc2path(parent))
    try:
        # the codec the build reads with (see decoding.py), set only once it reads
        text = path.read_text(encoding=env.settings.get("input_encoding", "utf-8-sig"))
        found, _ = document_notebook(env, parent, path, text, state.parsed)
    except (OSError, UnicodeDecodeError, NotebookReadError) as exc:
        raise NotebookReadError(f"nbcache.inherit: {parent} cannot be read ({exc})") from None
    if found is None or not found.needs_execution:
        raise NotebookReadError(
            f"nbcache.inherit: {parent} is not a notebook this build executes, so it "
            "leaves no kernel state (it is not a notebook, has no code, or its outputs "
            "are kept as they are)"
        )
    if not (is_python(found.notebook) and is_python(notebook.notebook)):
        raise NotebookReadError(
            f"nbcache.inherit: only Python kernels pass their state on ({parent} and this "
            "notebook must both run one)"
        )
    return plan_document(env, parent, found)


def note_declared(env: BuildEnvironment, docname: str, planned: PlannedNotebook) -> None:
    """Sphinx keeps a page's dependencies only when noted while the page is read. A page
    depends on the files of the notebooks it inherits from, too: Sphinx reads it again when
    one of them is edited, and its key says whether that edit changed any code."""
    for path in planned.declared.get("files", {}):
        note_dependency(env, Path(env.srcdir, path), docname)
    for ancestor in planned.ancestors:
        note_dependency(env, Path(ancestor.notebook.path), docname)


def explain_new_key(
    state: BuildState, env: BuildEnvironment, docname: str, planned: PlannedNotebook
) -> None:
    """When a page's notebook executes because its key changed, the log says what changed
    (code, a declared file or variable, a setting), as ``nbcache status`` would; the
    lookup itself explains the other reasons."""
    before = doc_records(env).get(docname, {}).get("key")
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
        text, notebook, planned, injected = state.read_ahead.pop(
            env.docname, (None, None, None, None)
        )
        if notebook is None or text != inputstring:
            planned = None
            path = Path(env.doc2path(env.docname))
            try:
                notebook, injected = document_notebook(
                    env, env.docname, path, inputstring, state.parsed
                )
            except NotebookReadError as exc:
                _record_unreadable(env, exc)
                _render_unreadable(self, document, path, exc)
                return
        instance = instances_of(env).get(env.docname)
        if injected is not None and instance is not None:
            _warn_parameters(env.docname, instance, injected)
        if notebook is None or (notebook.options.mode not in EXECUTING_MODES and instance is None):
            super().parse(inputstring, document)  # plain Markdown, or myst-nb's off/inline
        elif not notebook.needs_execution:
            # an instance in off or inline mode shows its parameters, unexecuted
            self._render(notebook.notebook, notebook, document)
        else:
            if planned is None:
                try:
                    planned = plan_document(env, env.docname, notebook)
                except NotebookReadError as exc:
                    _record_unreadable(env, exc)
                    _render_unreadable(self, document, Path(env.doc2path(env.docname)), exc)
                    return
            else:
                note_declared(env, env.docname, planned)
            self._render_result(state, planned, document)
            if env.docname in state.parents:
                note_inherited(document, env.docname, state.parents[env.docname])
        if instance is not None and notebook is not None:
            executed = Path(env.mystnb_config.output_folder, f"{env.docname}.ipynb")
            decorate_page(env, document, instance, executed)

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
        if result.snapshot_error:
            warn(
                "the notebooks inheriting from this one cannot start from its final state: "
                f"it could not be kept ({result.snapshot_error})",
                Subtype.inherit,
                location=document.settings.env.docname,
            )
        if result.left_out:
            names = ", ".join(result.left_out)
            warn(
                f"the notebooks inheriting from this one do not get {names}: they cannot be "
                "pickled (see 'What is carried' in the docs on inheriting kernel state)",
                Subtype.inherit,
                location=document.settings.env.docname,
            )
        if origin == "executed":
            _say_resume(planned, result, document.settings.env.docname)
        merged = merge_outputs(planned.notebook.notebook, result)
        self._render(merged, planned.notebook, document)
        env = document.settings.env
        self._record(env, planned, result, origin, code_lexer(merged.metadata))
        if env.docname in instances_of(env):
            doc_records(env)[env.docname]["glue"] = glued(merged)
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
        if planned.key in executed:
            return executed[planned.key], "executed"
        taken = state.pipeline.lookup(planned)  # another build executed it meanwhile
        assert taken is not None
        return taken, "cache"

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
            for path in [*result.dependencies, *_inherited_dependencies(state, planned)]:
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
        records = doc_records(env)
        notebook = planned.notebook.notebook
        code_indices = code_cell_indices(notebook.cells)
        line = None if error is None else _cell_line(planned.notebook, error.cell_index)
        number = None if error is None else code_cell_number(notebook.cells, error.cell_index)
        records[docname] = {
            "key": planned.key,
            "source": planned.source,
            "origin": origin,
            "status": Status.succeeded if error is None else error.status,
            "succeeded": result.succeeded,
            "runtime": result.runtime,
            "finished": result.finished,
            "worker": result.worker,
            "inherits": state.parents.get(docname),
            "resumed_from": None if result.resumed_from is None else result.resumed_from + 2,
            "resumed_seconds": round(
                sum(t or 0.0 for t in result.cell_times[: _resumed_cells(result)]), 3
            ),
            "checkpoints": [
                {"cell": c["cell"] + 1, "seconds": c["seconds"], "bytes": c["bytes"]}
                for c in result.checkpoints
            ],
            "lexer": lexer,
            "environment": state.pipeline.environments.mark(planned.kernel)
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
        instance = instances_of(env).get(docname)
        if instance is not None:  # the location names the template's file
            where += f" of instance {instance.spec.name!r}"
        # a kernel's error value can hold colour codes (IPython's own, a library's)
        value = plain_text(error.value)
        if error.status is Status.extension_error:
            message = (
                f"sphinx-nbcache failed while executing the notebook, through no fault of the "
                f"notebook (please report this bug): {error.name}: {value}; nothing was "
                f"cached, the next build executes it again\n{plain_text(error.traceback)}"
                f"(traceback saved in {report})"
            )
            report_error(message, Subtype.internal, location=(docname, None))
            return
        message = f"{FAILURE_TEXT[error.status]}{where}: {plain_text(error.name)}: {value}"
        if error.status is Status.not_executed:  # no traceback: nothing ran
            message = f"{FAILURE_TEXT[error.status]}: {value}"
        else:
            if error.name == STDIN_ERROR:
                message += " (a notebook cannot read input() during a build)"
            if options.show_tb:
                message += f"\n{plain_text(error.traceback)}"
            message += f"\n(traceback saved in {report})"
        log = report_error if options.raise_on_error else warn
        log(message, FAILURE_SUBTYPE[error.status], location=(docname, line))


def _inherited_dependencies(state: BuildState, planned: PlannedNotebook) -> list[str]:
    """The files the notebooks it inherits from read: when one changes, they execute again,
    and their new state makes this one stale (see ``Pipeline._parent_newer``)."""
    found = []
    for ancestor in planned.ancestors:
        result = state.executed.get(ancestor.key) or state.pipeline.parent_result(ancestor)
        found += [] if result is None else list(result.dependencies)
    return found


FAILURE_SUBTYPE = {
    Status.cell_error: Subtype.cell,
    Status.timeout: Subtype.timeout,
    Status.kernel_error: Subtype.kernel,
    Status.not_executed: Subtype.inherit,
}
"""The warning subtype of each failure, for ``suppress_warnings``."""


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
        resumed = (
            "" if result.resumed_from is None else f"from code cell {result.resumed_from + 2} on, "
        )
        message = f"Cached executed notebook (executed {resumed}in {result.runtime:.2f} s)"
    else:
        return  # not stored: a warning said why
    LOGGER.info("nbcache: %s: %s", planned.source, message)


def _resumed_cells(result: ExecutionResult) -> int:
    """How many code cells a resumed run took from the previous one."""
    return 0 if result.resumed_from is None else result.resumed_from + 1


def _say_resume(planned: PlannedNotebook, result: ExecutionResult, docname: str) -> None:
    """Once, by the build that executed the notebook: why it did not resume as planned
    (a warning: a kept state was damaged or foreign), or why it keeps no checkpoints."""
    if result.resume_error:
        warn(
            f"{result.resume_error}; executed the notebook from its first cell",
            Subtype.resume,
            location=docname,
        )
    if result.checkpoint_error:
        LOGGER.info(
            "nbcache: %s: %s; it will execute from its first cell when changed",
            planned.source,
            result.checkpoint_error,
        )


def _when(finished: str) -> str:
    return datetime.fromisoformat(finished).strftime("%Y-%m-%d %H:%M UTC")


STDIN_ERROR = "StdinNotImplementedError"


def _warn_parameters(docname: str, instance: Instance, injected: Injected) -> None:
    """papermill's warnings, located at the instance's page: parameters the notebook does
    not define, and a notebook without a ``parameters`` cell."""
    if injected.defaults is None:
        message = (
            f"instance {instance.spec.name!r}: the notebook has no code cell tagged "
            f"'{PARAMETERS_TAG}'; its parameters are injected at the top"
        )
        warn(message, Subtype.parameters, location=docname)
    if injected.unknown:
        names = ", ".join(repr(name) for name in injected.unknown)
        message = (
            f"instance {instance.spec.name!r}: parameter(s) {names} not defined in the "
            f"notebook's '{PARAMETERS_TAG}' cell"
        )
        warn(message, Subtype.parameters, location=docname)


def _record_unreadable(env: BuildEnvironment, exc: NotebookReadError) -> None:
    """An unreadable notebook is a failure like any other: warned (an error under
    ``nb_execution_raise_on_error``) and listed in the reports."""
    strict = bool(env.mystnb_config.execution_raise_on_error)  # type: ignore[attr-defined]
    message = f"notebook could not be read: {exc}"
    doc_records(env)[env.docname] = {
        "key": None,
        "source": str(env.doc2path(env.docname, False)),
        "origin": "none",
        "status": Status.read_error,
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


def _cell_line(notebook: SourceNotebook, cell_index: int | None) -> int | None:
    if cell_index is None:
        return None
    return cell_line(notebook.notebook, notebook.cell_lines, cell_index)
