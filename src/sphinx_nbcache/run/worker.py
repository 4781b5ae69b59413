"""What runs on a Dask worker: one job, its files unpacked in a scratch folder, its
packages mapped as installed on that worker. Imports no Sphinx and no cache."""

from __future__ import annotations

import dataclasses
import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import nbformat

from sphinx_nbcache.inputs.environment import with_packages
from sphinx_nbcache.model import ExecutionJob, ExecutionResult, unrun_result
from sphinx_nbcache.run.driver import Running
from sphinx_nbcache.run.local import LocalExecutor
from sphinx_nbcache.run.pool import Pool


def relocate(job: ExecutionJob, root: Path, place: Path) -> ExecutionJob:
    """The job as it runs from ``place``, a copy of the project at ``root``."""

    def moved(path: str) -> str:
        return str(place / Path(path).relative_to(root))

    return ExecutionJob.from_json(
        {
            **job.to_json(),
            "cwd": None if job.cwd is None else moved(job.cwd),
            "discover_root": None if job.discover_root is None else str(place),
            "copy_in": {name: moved(origin) for name, origin in job.copy_in.items()},
            "inputs": [],
        }
    )


def run_on_worker(
    job_data: dict[str, Any], bundle: bytes | None, root: str | None, run: str
) -> dict[str, Any]:
    """A Dask task: execute one notebook here, on a worker, as the local pool would;
    ``bundle`` holds its files by path relative to ``root`` when they are shipped.

    Everything a build needs comes back in the result: outputs, what the notebook read
    (relative to the project), the packages it imported as installed on this worker, and
    the worker's address.
    """
    from distributed import get_worker

    worker = get_worker()
    job = ExecutionJob.from_json(job_data)
    worker.log_event(STARTED_TOPIC, {"key": job.key, "worker": worker.address, "run": run})
    # in the worker's own scratch folder, which Dask clears even when the worker was killed
    with tempfile.TemporaryDirectory(prefix="nbcache-", dir=worker.local_directory) as place:
        if bundle is not None and root is not None:
            with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
                archive.extractall(place)
            job = relocate(job, Path(root), Path(place))
        elif job.cwd is not None and not Path(job.cwd).is_dir():
            return unrun_result(
                job,
                "MissingFolder",
                f"{job.cwd} does not exist on worker {worker.address}; workers must see the "
                "project at the same path, or set nbcache_dask_files = 'ship'",
                worker.address,
            ).to_json()
        task_key = _current_task_key()

        def cancelled() -> bool:
            state = worker.state.tasks.get(task_key) if task_key is not None else None
            return state is not None and state.state in CANCELLED_STATES

        results: list[ExecutionResult] = []
        LocalExecutor(Pool(1, 1, 1), stop=cancelled).run([job], _Collect(results))
    (result,) = results
    if "imported" in result.environment:  # module names -> distributions, here
        from sphinx_nbcache.inputs.environment import kernel_environment

        notebook = nbformat.reads(job.notebook_json, as_version=4)
        kernel = str(notebook.metadata.get("kernelspec", {}).get("name", ""))
        installed = kernel_environment(kernel, WORKER_ENVIRONMENTS)
        environment = with_packages(result.environment, installed)
        result = dataclasses.replace(result, environment=environment)
    return dataclasses.replace(result, worker=worker.address).to_json()


def _current_task_key() -> Any:
    import distributed.worker

    return getattr(getattr(distributed.worker, "thread_state", None), "key", None)


class _Collect:
    """The worker's watcher: keeps the result; progress is the building machine's."""

    def __init__(self, results: list[ExecutionResult]) -> None:
        self.results = results

    def started(self, job: ExecutionJob, running: Running) -> None:
        pass

    def finished(self, result: ExecutionResult) -> None:
        self.results.append(result)

    def tick(self, at_once: int) -> None:
        pass


STARTED_TOPIC = "nbcache-started"
"""Dask event topic on which a worker says it started a notebook."""


WORKER_ENVIRONMENTS = Path(tempfile.gettempdir()) / "nbcache-dask-worker"
"""Where a worker remembers what is installed, as a build does in its cache folder."""


CANCELLED_STATES = frozenset({"cancelled", "released", "forgotten"})
