"""One function per ``nbcache`` subcommand."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from sphinx_nbcache import __version__
from sphinx_nbcache.cache.store import STORE_SCHEMA
from sphinx_nbcache.cli.project import (
    STATES,
    CliError,
    Notebook,
    cell_rows,
    dependencies_of,
    dependency_rows,
    entries,
    entries_of,
    error_cell,
    one_notebook,
    open_project,
)
from sphinx_nbcache.cli.sizes import measured, removed_line, table
from sphinx_nbcache.instances import from_command_line
from sphinx_nbcache.model import ExecutionResult, Status
from sphinx_nbcache.notebook.merge import merge_outputs
from sphinx_nbcache.plan import full_run, make_job
from sphinx_nbcache.progress import Progress, colour_allowed, on_terminal
from sphinx_nbcache.report import plain_text
from sphinx_nbcache.run.local import ExecutorError

if TYPE_CHECKING:
    from sphinx.application import Sphinx


def cmd_info(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        store = project.store
        entries = len(store)
        size = measured(store)
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
        inherits = any(_inherits(n) for n in notebooks)  # a column only if any inherits
        rows: list[list[str]] = [
            [
                n.source,
                STATES[n.state],
                f"{n.result.runtime:.2f}" if n.result else "",
                *([_inherits(n)] if inherits else []),
                _remark(n),
            ]
            for n in notebooks
        ]
        header = ["notebook", "state", "runtime (s)", "inherits from", "error or change"]
        if not inherits:
            header.remove("inherits from")
        print(table(rows, header))
        print(f"\n{len(would)} of {len(notebooks)} notebook(s) would execute")
    return 1 if would else 0


def _remark(notebook: Notebook) -> str:
    """The error of a cached failure, and why a build would execute the notebook."""
    result = notebook.result
    error = result.error.name if result and result.error and notebook.state == "failed" else ""
    return "; ".join(part for part in (error, notebook.why) if part)


def _inherits(notebook: Notebook) -> str:
    """The notebooks it starts from, its parent first: ``parent.ipynb <- first.ipynb``."""
    ancestors = [] if notebook.planned is None else notebook.planned.ancestors
    return " <- ".join(a.source for a in ancestors)


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
        "inherits": []
        if notebook.planned is None
        else [a.source for a in notebook.planned.ancestors],
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
    parameters = _parameters(args)
    if parameters and len(args.paths) != 1:
        raise CliError("-p gives the parameters of one notebook: name exactly one PATH")
    with open_project(args, overrides) as project:
        notebooks = (
            [project.instance(args.paths[0], None, parameters)]
            if parameters
            else project.notebooks(args.paths)
        )
        todo = [
            n.planned for n in notebooks if n.planned is not None and (args.force or n.executes)
        ]
        if not todo:
            print(f"nothing to execute: {len(notebooks)} notebook(s) up to date")
            return 0
        todo = project.pipeline.with_parents(todo)
        project.pipeline.from_start = args.force
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
    ours = {
        k: r
        for k, r in results.items()
        if r.error is not None and r.error.status is Status.extension_error
    }
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


def cmd_verify(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        notebooks = project.notebooks(args.paths)
        resumed = {
            n.planned.key: (n.planned, n.result)
            for n in notebooks
            if n.state == "fresh" and n.planned is not None and n.result is not None
            if n.result.resumed_from is not None
        }
        if not resumed:
            print(
                f"nothing to verify: no cached outputs of {len(notebooks)} notebook(s) come "
                "from resuming"
            )
            return 0
        progress = Progress(len(resumed), live=on_terminal())
        try:
            executor = project.pipeline.executor()
            print(
                f"executing {len(resumed)} resumed notebook(s) from their first cell, "
                f"{executor.describe()}",
                flush=True,
            )
            _show_progress(project.app)
            settings = project.pipeline.settings
            jobs = [full_run(make_job(planned, settings)) for planned, _ in resumed.values()]
            results = {r.key: r for r in executor.run(jobs, progress)}
        except KeyboardInterrupt:
            progress.log_interrupted()
            raise
        except ExecutorError as exc:
            raise CliError(str(exc)) from None
    rows, diverged = [], 0
    for key, (planned, stored) in resumed.items():
        full = results[key]
        assert stored.resumed_from is not None
        if not full.succeeded and stored.succeeded:
            verdict = f"not verified: the full run failed ({_error_text(full)})"
            diverged += 1
        else:
            cell = first_difference(stored, full)
            verdict = "same outputs" if cell is None else f"DIFFERS from code cell {cell}"
            diverged += cell is not None
        rows.append([planned.source, str(stored.resumed_from + 2), verdict])
    print(table(rows, ["notebook", "resumed at code cell", "against a full run"]))
    if diverged:
        print(
            f"\n{diverged} of {len(resumed)} notebook(s) differ: state a checkpoint does not "
            "carry (see 'Resuming from the first changed cell' in the docs); give them "
            "nbcache: {resume: false}, and store a full run with nbcache execute --force PATH"
        )
    return 1 if diverged else 0


def first_difference(resumed: ExecutionResult, full: ExecutionResult) -> int | None:
    """The first code cell (from 1) whose outputs or execution count differ, if any."""
    cells = zip(resumed.outputs, full.outputs, strict=False)
    counts = zip(resumed.execution_counts, full.execution_counts, strict=False)
    for number, ((a, b), (x, y)) in enumerate(zip(cells, counts, strict=False), start=1):
        if a != b or x != y:
            return number
    if len(resumed.outputs) != len(full.outputs):
        return min(len(resumed.outputs), len(full.outputs)) + 1
    return None


def _error_text(result: ExecutionResult) -> str:
    return "" if result.error is None else f"{result.error.name}: {result.error.value}"


def _show_progress(app: Sphinx) -> None:
    """The project was loaded silently; from here on, progress lines go to stdout, in
    colour only where :func:`colour_allowed` (as ``sphinx-build`` decides for its own)."""
    from sphinx.util import console
    from sphinx.util import logging as sphinx_logging

    if not colour_allowed(sys.stdout):
        console.nocolor()
    sphinx_logging.setup(app, sys.stdout, sys.stderr)


def cmd_show(args: argparse.Namespace) -> int:
    with open_project(args, {}) as project:
        notebook = one_notebook(project, args.path)
    result = notebook.result
    data = {
        **_status_json(notebook),
        "cells": [] if result is None else cell_rows(notebook, result),
        "traceback": result.error.traceback if result and result.error else None,
        "error_cell": error_cell(notebook),
        "worker": result.worker if result is not None else "",
        "dependencies": dependencies_of(notebook),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"notebook: {notebook.source}")
    print(f"state:    {STATES[notebook.state]}")
    if data["key"]:
        print(f"key:      {data['key']}")
    if data["inherits"]:
        print(f"inherits: {_inherits(notebook)} (parent first)")
    if result is not None:
        where = f" on {result.worker}" if result.worker else ""
        print(f"executed: {result.finished}, {result.runtime:.2f} s{where}")
        rows = [
            (str(c["cell"]), "" if c["seconds"] is None else f"{c['seconds']:.2f}")
            for c in data["cells"]
        ]
        print("\n" + table(rows, ("code cell", "seconds")))
        dependencies = dependency_rows(data["dependencies"])
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


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return from_command_line(args.parameters)
    except ValueError as exc:
        raise CliError(f"-p: {exc}") from None


def cmd_merge(args: argparse.Namespace) -> int:
    parameters = _parameters(args)
    if parameters and args.instance is not None:
        raise CliError("--instance and -p each name an instance: give one of them")
    with open_project(args, {}) as project:
        if parameters or args.instance is not None:
            notebook = project.instance(args.path, args.instance, parameters)
        else:
            notebook = one_notebook(project, args.path)
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
        before = measured(store)
        if args.paths:
            notebooks = project.notebooks(args.paths)
            sources = {n.source for n in notebooks}
            # a damaged entry tells no source: the notebook's own key finds it
            present = set(store.all_keys())
            keys = sorted(
                {n.planned.key for n in notebooks if n.planned and n.planned.key in present}
                | {key for source in sources for key, _ in entries_of(store, source)}
            )
            removed = 0
        else:
            keys = store.all_keys()
            shutil.rmtree(project.parsed.folder, ignore_errors=True)
            removed = store.remove_unsafe()
        store.delete(keys)
        store.compact()
        after = measured(store)
    print(removed_line(len(keys) + removed, before, after))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Unused entries go first, then the oldest, so that what the project uses now stays
    as long as possible."""
    if args.max_size is None and args.older_than is None and not args.unused:
        raise CliError("prune needs --max-size, --older-than or --unused")
    with open_project(args, {}) as project:
        store = project.store
        before = measured(store)
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
        after = measured(store)
        # the kernel states kept for removed entries (their final states, and checkpoints
        # no remaining entry shares), and any beyond the local folder's cap
        states = project.pipeline.states
        checkpoints = {k: r.checkpoint_keys for k, r in found if r is not None}
        shared = set().union(*(c for k, c in checkpoints.items() if k not in doomed))
        gone = set().union(*(c for k, c in checkpoints.items() if k in doomed)) - shared
        snapshots = states.remove(doomed | gone) + len(states.prune())
    print(removed_line(removed, before, after))
    if snapshots:
        print(f"removed {snapshots} kernel state snapshot(s) from {states.folder}")
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
