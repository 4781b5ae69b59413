"""The local executor: the jobs of a build on this machine's kernels, concurrently."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Protocol

from sphinx_nbcache.cache.snapshots import SnapshotStore
from sphinx_nbcache.inputs import discover
from sphinx_nbcache.model import ExecutionJob, ExecutionResult
from sphinx_nbcache.run.driver import TICK_EVERY, Watcher, execute_job, raise_if_cancelled
from sphinx_nbcache.run.kernels import KernelStarter, _KernelLoop
from sphinx_nbcache.run.pool import Pool, describe_pool, keep_adapting
from sphinx_nbcache.run.preload import Preloader
from sphinx_nbcache.run.state import parent_failed


class ExecutorError(Exception):
    """An executor cannot run anything at all (its scheduler is out of reach): one line
    for the user, and the build stops."""


class Executor(Protocol):
    """Runs jobs and tells a watcher; :class:`LocalExecutor` here, or on a Dask cluster."""

    def describe(self) -> str:
        """Where and how many at once, for the build log."""
        ...

    def run(self, jobs: Sequence[ExecutionJob], watcher: Watcher) -> list[ExecutionResult]:
        """Execute every job; returns once nothing it started is still running."""
        ...


class LocalExecutor:
    """Runs jobs concurrently in this process, in a :class:`Pool` of kernels, forked from
    pre-imported servers when ``preload`` names the modules to import (an empty list:
    ipykernel alone), or from ``preloader``'s, already starting, which the run then owns.
    ``stop``, asked every :data:`TICK_EVERY` seconds, cancels the run as Ctrl-C does once
    it says so. A notebook that inherits from another of the run starts once that one is
    done (the children of one parent then run side by side), and not at all if it failed;
    their states go through ``states``."""

    def __init__(
        self,
        pool: Pool,
        preload: Sequence[str] | None = None,
        warn: Callable[[str], None] = lambda message: None,
        stop: Callable[[], bool] = lambda: False,
        preloader: Preloader | None = None,
        digests: discover.FileDigests | None = None,
        states: SnapshotStore | None = None,
    ) -> None:
        self.pool = pool
        self.states = states
        self.preload = preload
        self.warn = warn
        self.stop = stop
        self.preloader = preloader
        self.digests = digests or discover.FileDigests()
        """sha256 of the files notebooks read, shared by every notebook of the run."""

    def describe(self) -> str:
        return describe_pool(self.pool)

    def run(self, jobs: Sequence[ExecutionJob], watcher: Watcher) -> list[ExecutionResult]:
        """Execute every job, telling ``watcher`` as each starts and finishes.

        Returns when every kernel has been shut down, so it is safe to fork afterwards.
        """
        preloader, self.preloader = self.preloader, None
        if not jobs:
            if preloader is not None:
                preloader.close()
            return []
        if preloader is not None:
            preloader.warn = self.warn
        elif self.preload is not None:
            preloader = Preloader(self.preload, self.warn)
        starter = KernelStarter(preloader)
        try:
            with asyncio.Runner(loop_factory=_KernelLoop) as runner:
                return runner.run(self._run_all(jobs, watcher, starter))
        finally:
            self.pool.kill_leftovers()
            starter.close()
            if preloader is not None:
                preloader.close()

    async def _run_all(
        self, jobs: Sequence[ExecutionJob], watcher: Watcher, starter: KernelStarter
    ) -> list[ExecutionResult]:
        digests = self.digests
        loop = asyncio.get_running_loop()
        done = {job.key: loop.create_future() for job in jobs}
        by_key = {job.key: job for job in jobs}

        async def run_one(job: ExecutionJob) -> ExecutionResult:
            parent = None if job.inherit is None else done.get(job.inherit)
            parent_result = None if parent is None else await asyncio.shield(parent)
            if parent_result is not None and not parent_result.succeeded:
                cells = json.loads(by_key[parent_result.key].notebook_json).get("cells", [])
                result = parent_failed(job, parent_result, cells)
            else:
                result = await execute_job(job, self.pool, watcher, starter, digests, self.states)
            raise_if_cancelled()
            done[job.key].set_result(result)
            watcher.finished(result)
            return result

        main = asyncio.current_task()

        async def tick() -> None:
            while True:
                await asyncio.sleep(TICK_EVERY)
                if self.stop() and main is not None:
                    main.cancel()
                watcher.tick(self.pool.limit)

        helpers = [asyncio.create_task(tick()), asyncio.create_task(keep_adapting(self.pool))]
        try:
            return list(await asyncio.gather(*(run_one(job) for job in jobs)))
        finally:
            for helper in helpers:
                helper.cancel()
