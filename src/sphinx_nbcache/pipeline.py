"""read -> key -> lookup -> execute misses -> store: the one place that sees every stage.

No Sphinx here: the extension and the command line share this pipeline and one cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import nbformat

from sphinx_nbcache.config import Settings
from sphinx_nbcache.execute import ExecutionJob, ExecutionResult, LocalExecutor, make_pool
from sphinx_nbcache.key import notebook_key
from sphinx_nbcache.read import SourceNotebook
from sphinx_nbcache.store import DamagedEntryError, Store

Warn = Callable[[str, str, str], None]
"""``warn(message, subtype, source)``; the caller decides how to log and where."""
Progress = Callable[[int, int, ExecutionResult], None]
"""``progress(done, total, result)`` as each notebook finishes."""


@dataclasses.dataclass(frozen=True)
class PlannedNotebook:
    """A notebook that goes through the cache, identified by its project-relative path."""

    source: str
    notebook: SourceNotebook
    key: str


def plan(source: str, notebook: SourceNotebook) -> PlannedNotebook:
    return PlannedNotebook(source, notebook, notebook_key(notebook.notebook, notebook.options))


def make_job(planned: PlannedNotebook) -> ExecutionJob:
    options = planned.notebook.options
    return ExecutionJob(
        key=planned.key,
        source=planned.source,
        notebook_json=nbformat.writes(planned.notebook.notebook),
        cwd=None if options.in_temp else str(Path(planned.notebook.path).parent),
        timeout=options.timeout,
        allow_errors=options.allow_errors,
    )


class Pipeline:
    """Looks notebooks up in the store and executes the misses, storing each as it ends."""

    def __init__(self, settings: Settings, store: Store, warn: Warn) -> None:
        self.settings = settings
        self.store = store
        self.warn = warn

    def lookup(self, planned: PlannedNotebook) -> ExecutionResult | None:
        """The reusable stored result, or None when the notebook must execute."""
        try:
            result = self.store.get(planned.key)
        except DamagedEntryError as exc:
            self.warn(f"cache entry {exc}; executing the notebook again", "cache", planned.source)
            return None
        if result is not None and not result.succeeded and self.settings.retry_failed:
            return None
        return result

    def execute(
        self, notebooks: Iterable[PlannedNotebook], progress: Progress | None = None
    ) -> dict[str, ExecutionResult]:
        """Execute each distinct key once, concurrently; results by key.

        Every result is stored the moment its notebook finishes, so an interrupted run keeps
        what finished. Returns only after every kernel has shut down.
        """
        jobs = {p.key: make_job(p) for p in notebooks}
        results: dict[str, ExecutionResult] = {}

        def on_result(result: ExecutionResult) -> None:
            results[result.key] = result
            self._store(result)
            if progress is not None:
                progress(len(results), len(jobs), result)

        LocalExecutor(make_pool(self.settings.workers)).run(list(jobs.values()), on_result)
        return results

    def _store(self, result: ExecutionResult) -> None:
        if result.error is not None and result.error.cell_index is None:
            return  # no cell ran (missing kernel, start-up failure): not the notebook's fault
        try:
            self.store.put(result)
        except Exception as exc:
            self.warn(
                f"could not store the result in {self.store.directory}: {exc}",
                "store",
                result.source,
            )
