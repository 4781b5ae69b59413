"""Executing on the workers of a Dask cluster (``nbcache_executor = "dask"``).

Each job becomes one Dask task that runs the notebook on a worker with the same code as
the local pool, one kernel per task, so a cluster runs as many notebooks at once as its
workers have threads. Jobs go out and results come back as JSON-able data; results are
checked like cache entries and stored here, on the machine that builds, so the build, its
report and the ``nbcache`` command do not care where a notebook ran.

Files reach the workers in one of two ways (``nbcache_dask_files``): ``shared``, where the
workers see the project at the same path, or ``ship``, where each job carries a zip of
the notebook's folder and its declared dependencies, unpacked in a temporary folder on
the worker and laid out as in the project, so relative paths and discovered dependencies
come out the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sphinx_nbcache.config import Settings
from sphinx_nbcache.log import LOGGER
from sphinx_nbcache.model import ExecutionJob, ExecutionResult, unrun_result
from sphinx_nbcache.run.driver import TICK_EVERY, Watcher
from sphinx_nbcache.run.kernels import _KernelLoop
from sphinx_nbcache.run.local import ExecutorError
from sphinx_nbcache.run.worker import STARTED_TOPIC, run_on_worker

Client = Any
"""``distributed.Client``, which is only partly typed."""
Future = Any
SKIPPED_NAMES = frozenset({"__pycache__", "_build", "jupyter_execute"})
"""Folders never shipped, besides hidden ones and the cache: build output, bytecode."""


def scheduler_address(settings: Settings) -> str:
    """``nbcache_dask_scheduler``, else Dask's own ``scheduler-address`` setting."""
    import dask.config

    address = settings.dask_scheduler or dask.config.get("scheduler-address", None)
    if not address:
        raise ExecutorError(
            "nbcache_executor = 'dask' needs a scheduler: set nbcache_dask_scheduler, or "
            "Dask's scheduler-address (DASK_SCHEDULER_ADDRESS)"
        )
    return str(address)


class DaskExecutor:
    """Runs jobs as tasks of a Dask cluster, telling the watcher where each runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = scheduler_address(settings)

    def describe(self) -> str:
        files = "shipping their files" if self.settings.dask_files == "ship" else "shared files"
        return f"on the Dask cluster at {self.address} ({files})"

    def run(self, jobs: Sequence[ExecutionJob], watcher: Watcher) -> list[ExecutionResult]:
        """Execute every job on the cluster. Ctrl-C cancels the tasks; their workers then
        stop the kernels within :data:`TICK_EVERY` seconds."""
        if not jobs:
            return []
        with asyncio.Runner(loop_factory=_KernelLoop) as runner:
            return runner.run(self._run_all(jobs, watcher))

    async def _connect(self) -> Client:
        import dask.config
        from distributed import Client as DaskClient

        connect: Any = DaskClient  # untyped
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            client: Client = await connect(
                self.address, asynchronous=True, timeout=timeout, set_as_default=False
            )
        except Exception as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {self.address} (waited {timeout}): {exc}"
            ) from None
        return client

    async def _run_all(
        self, jobs: Sequence[ExecutionJob], watcher: Watcher
    ) -> list[ExecutionResult]:
        client = await self._connect()
        by_key = {job.key: job for job in jobs}
        run = uuid.uuid4().hex[:8]
        futures: list[Future] = []
        try:
            threads = sum((await client.nthreads()).values())
            if not threads:  # said at once: warnings wait until Sphinx has read everything
                LOGGER.info(
                    "nbcache: the Dask cluster at %s has no workers yet; "
                    "the notebooks wait until one joins",
                    self.address,
                )

            def on_started(event: tuple[float, dict[str, str]]) -> None:
                job = by_key.get(event[1].get("key", ""))
                if job is not None and event[1].get("run") == run:
                    watcher.started(job, OnWorker(event[1].get("worker", "")))

            client.subscribe_topic(STARTED_TOPIC, on_started)
            shipping = self.settings.dask_files == "ship"
            bundles = Bundles(self.settings, client) if shipping else None
            waiting = []
            for job in jobs:
                bundle, root = None, None
                if bundles is not None:
                    root = str(bundles.root(job))
                    try:
                        bundle = await bundles.for_job(job)
                    except ShipError as exc:
                        waiting.append(_done(unrun_result(job, "ShipError", str(exc))))
                        continue
                future = client.submit(
                    run_on_worker,
                    job.to_json(),
                    bundle,
                    root,
                    run,
                    key=f"nbcache-{job.key[:20]}-{run}",
                    pure=False,
                )
                futures.append(future)
                waiting.append(_outcome(future, job))

            async def tick() -> None:
                while True:
                    await asyncio.sleep(TICK_EVERY)
                    watcher.tick(max(threads, 1))

            ticking = asyncio.create_task(tick())
            results = []
            try:
                for next_done in asyncio.as_completed(waiting):
                    result = await next_done
                    watcher.finished(result)
                    results.append(result)
            finally:
                ticking.cancel()
            return results
        finally:
            unfinished = [future for future in futures if not future.done()]
            if unfinished:
                await client.cancel(unfinished)
            await client.close()


@dataclasses.dataclass(frozen=True)
class OnWorker:
    """A notebook running on a Dask worker: which cell runs there is not reported back."""

    worker: str
    current: int | None = None


async def _done(result: ExecutionResult) -> ExecutionResult:
    return result


async def _outcome(future: Future, job: ExecutionJob) -> ExecutionResult:
    """The future's result, checked as a cache entry is; a lost worker or a broken
    result becomes a failed result naming the reason."""
    from distributed.scheduler import KilledWorker

    try:
        data = await future
        return ExecutionResult.from_json(data)
    except KilledWorker as exc:
        return unrun_result(
            job,
            "KilledWorker",
            f"the worker running it died {exc.allowed_failures + 1} time(s), last "
            f"{exc.last_worker.address}; Dask gave up (distributed.scheduler.allowed-failures)",
            exc.last_worker.address,
        )
    except (KeyError, TypeError, ValueError) as exc:
        return unrun_result(job, "BadResult", f"the worker's result cannot be read: {exc}")
    except Exception as exc:  # the task itself failed: sphinx-nbcache missing on the worker...
        return unrun_result(job, type(exc).__name__, f"the Dask task failed: {exc}")


class ShipError(Exception):
    """A notebook's files cannot be shipped: one message, naming the notebook's folder."""


class Bundles:
    """The zips jobs ship: one per distinct set of files, sent to the cluster once and
    shared by every notebook of the same folder."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self._sent: dict[tuple[str, ...], Future] = {}
        self._folders: dict[str, dict[str, tuple[Path, int]]] = {}
        """Each notebook folder's files, listed once however many notebooks it holds."""

    def root(self, job: ExecutionJob) -> Path:
        """The folder the bundle's paths are relative to: the project root."""
        root = self.settings.project_root
        if root is not None:
            return root
        return Path(job.cwd) if job.cwd is not None else Path.cwd()

    async def for_job(self, job: ExecutionJob) -> Future:
        files = self.files(job, self.root(job))
        names = tuple(sorted(files))
        if names not in self._sent:
            data = pack({name: path for name, (path, _) in files.items()})
            self._sent[names] = await self.client.scatter(data, hash=True)
        return self._sent[names]

    def files(self, job: ExecutionJob, root: Path) -> dict[str, tuple[Path, int]]:
        """Project-relative path -> (file, size), for everything the job needs on a worker.

        :raises ShipError: when it comes to more than ``nbcache_dask_ship_max_size``.
        """
        found: dict[str, tuple[Path, int]] = {}
        if job.cwd is not None:
            if job.cwd not in self._folders:
                listed = _folder_files(Path(job.cwd), self.settings.cache_path)
                self._folders[job.cwd] = _placed(listed, root)
            found.update(self._folders[job.cwd])
        found.update(_placed((Path(p) for p in (*job.inputs, *job.copy_in.values())), root))
        total = sum(size for _, size in found.values())
        limit = self.settings.dask_ship_max_size
        if total > limit:
            folder = job.cwd or root
            raise ShipError(
                f"{len(found)} file(s) of {_size(total)} in {folder} to ship, more than "
                f"nbcache_dask_ship_max_size ({_size(limit)}); raise it, or give the "
                "workers the project at the same path (nbcache_dask_files = 'shared')"
            )
        return found


def _placed(paths: Iterable[Path], root: Path) -> dict[str, tuple[Path, int]]:
    """Each file by its path relative to ``root``, with its size; files outside ``root``
    are left out, since a worker could not place them."""
    base = root.resolve()
    placed = {}
    for path in paths:
        try:
            relative = path.resolve().relative_to(base).as_posix()
        except ValueError:
            continue
        placed[relative] = (path, path.stat().st_size)
    return placed


def _size(size: int) -> str:
    return f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def _folder_files(folder: Path, cache_path: Path) -> Iterable[Path]:
    """Every file under ``folder`` but hidden ones, build output, bytecode and the cache."""
    skipped = {cache_path.resolve()}
    for current, dirs, files in os.walk(folder):
        dirs[:] = [
            name
            for name in dirs
            if not name.startswith(".")
            and name not in SKIPPED_NAMES
            and Path(current, name).resolve() not in skipped
        ]
        for name in files:
            path = Path(current, name)
            if not name.startswith(".") and path.is_file():
                yield path


def pack(files: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(files.items()):
            archive.write(path, name)
    return buffer.getvalue()
