"""The adaptive pool: how many kernels run at once, grown while the CPUs are idle and
memory is free, shrunk when they are busy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

from jupyter_client.manager import AsyncKernelManager

from sphinx_nbcache.run.kernels import KILL_WAIT

AUTO_CEILING_PER_CPU = 3
"""An adaptive pool lets at most this many notebooks per CPU execute at once."""


ADAPT_EVERY = 0.5
"""Seconds between two looks at the machine's load."""


CPU_IDLE_BELOW = 80.0
"""Percent of all CPUs in use below which one more notebook may start."""


CPU_BUSY_ABOVE = 95.0


MEMORY_FREE_AT_LEAST = 0.2
"""Fraction of memory that must stay available for the pool to grow."""


DEMAND_AT_LEAST = 0.05
"""CPUs a notebook is taken to use at least, however idle its kernel was."""


class KernelLoad:
    """The CPU time of the kernels executing notebooks, per second of their time: how
    many notebooks like them the CPUs can host, known half a second after they start."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[float, float]] = {}
        """Kernel pid -> (CPU seconds, monotonic time) at the last look."""

    def add(self, pid: int) -> None:
        seconds = _cpu_seconds(pid)
        if seconds is not None:
            self.last[pid] = (seconds, time.monotonic())

    def remove(self, pid: int) -> None:
        self.last.pop(pid, None)

    def demand(self) -> float | None:
        """CPUs each executing kernel used on average since the last look; None if none
        has executed long enough to tell."""
        shares = []
        for pid, (before, since) in list(self.last.items()):
            seconds, now = _cpu_seconds(pid), time.monotonic()
            if seconds is None:
                del self.last[pid]
                continue
            if now - since >= ADAPT_EVERY / 4:
                shares.append((seconds - before) / (now - since))
                self.last[pid] = (seconds, now)
        return sum(shares) / len(shares) if shares else None


def _cpu_seconds(pid: int) -> float | None:
    """CPU time of the process, and of its children that have exited (a shell command or
    a subprocess the notebook ran); children still running are not seen."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system + times.children_user + times.children_system)


class Pool:
    """Execution slots, and the kernels started ahead of them.

    At most ``limit`` notebooks execute at once, and at most ``ahead_limit`` kernels start
    meanwhile (booting, or booted and waiting for a slot), so that a free slot finds a
    kernel ready. Both limits move with the machine's load, never below ``floor``: while
    CPUs are idle, one more kernel may start when kernels wait to start, and when booted
    kernels wait for a slot, as many notebooks may execute as the CPUs can host judging by
    what those executing use, and at least one more (up to ``ceiling``, unless the number
    of workers is fixed); when CPUs stay saturated or memory runs short, both go back
    down. Nothing running is ever stopped: the limits only gate what starts next.
    A kernel whose notebook is done counts until it is gone, so a new one starts only
    while fewer than ``limit + ahead_limit`` are alive.
    """

    def __init__(
        self, floor: int, ceiling: int, ahead_ceiling: int, cpus: int | None = None
    ) -> None:
        self.floor = max(1, floor)
        self.cpus = cpus or self.floor
        """CPUs the notebooks share, for :meth:`adapt` to judge how many they can host."""
        self.load = KernelLoad()
        self.ceiling = max(self.floor, ceiling)
        self.ahead_ceiling = max(self.floor, ahead_ceiling)
        self.limit = self.floor
        self.ahead_limit = self.floor
        self.cpu_average = 0.0
        self.running = 0
        self.starting = 0
        """Kernels booting, or booted and waiting for an execution slot."""
        self.ready = 0
        """Booted kernels waiting for an execution slot."""
        self.queued = 0
        """Notebooks waiting to start a kernel."""
        self.stopping = 0
        """Kernels whose notebook is done, still answering discovery or shutting down."""
        self.kernels: set[AsyncKernelManager] = set()
        """Managers whose kernel may still have a process, until their job shut it down."""
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def adaptive(self) -> bool:
        return self.ceiling > self.floor

    def adapt(self, cpu_percent: float, memory_free: float, demand: float | None = None) -> None:
        """One step of the controller, from the share of CPU in use, memory available, and
        the CPUs each executing notebook used (:meth:`KernelLoad.demand`).

        It grows on one reading that is not busy but shrinks only on a busy average:
        kernels starting up make short bursts of CPU that say nothing about the notebooks'
        own needs. What the notebooks use says how far to grow at once: notebooks that
        use half a CPU each take the pool from one to two per CPU in one step.
        """
        self.cpu_average = (self.cpu_average + cpu_percent) / 2
        if self.cpu_average > CPU_BUSY_ABOVE or memory_free < MEMORY_FREE_AT_LEAST:
            self.limit = max(self.floor, self.limit - 1)
            self.ahead_limit = max(self.floor, self.ahead_limit - 1)
        elif cpu_percent < CPU_BUSY_ABOVE:
            if self.ready and self.running >= self.limit:
                hosted = 0 if demand is None else round(self.cpus / max(demand, DEMAND_AT_LEAST))
                step = self.limit + 1 if cpu_percent < CPU_IDLE_BELOW else self.limit
                self.limit = min(self.ceiling, max(step, hosted))
            if cpu_percent < CPU_IDLE_BELOW and self.queued and self.starting >= self.ahead_limit:
                self.ahead_limit = min(self.ahead_ceiling, self.ahead_limit + 1)
        self._wake()

    @contextlib.asynccontextmanager
    async def ahead(self) -> AsyncIterator[None]:
        """Held from a kernel's start until its notebook has an execution slot."""
        self.queued += 1
        try:
            await self._until(
                lambda: (
                    self.starting < self.ahead_limit and self.alive < self.limit + self.ahead_limit
                )
            )
        finally:
            self.queued -= 1
        self.starting += 1
        try:
            yield
        finally:
            self.starting -= 1
            self._wake()

    async def acquire(self, pid: int | None = None) -> None:
        """Wait for an execution slot for the kernel with process id ``pid``, whose CPU
        time an adaptive pool then follows."""
        self.ready += 1
        try:
            await self._until(lambda: self.running < self.limit)
        finally:
            self.ready -= 1
        self.running += 1
        if pid is not None and self.adaptive:
            self.load.add(pid)

    def release(self, pid: int | None = None) -> None:
        """The notebook is done; its kernel counts as alive until :meth:`stopped`."""
        if pid is not None:
            self.load.remove(pid)
        self.running -= 1
        self.stopping += 1
        self._wake()

    def stopped(self) -> None:
        self.stopping -= 1
        self._wake()

    @property
    def alive(self) -> int:
        """Kernel processes this pool has started and not yet seen gone: never more than
        may execute plus may wait ready, when the next one starts."""
        return self.starting + self.running + self.stopping

    def kill_leftovers(self) -> None:
        """Kill any kernel process a job could not shut down (an interrupted shutdown, say),
        so that none outlives the run whatever happened to the event loop."""
        for manager in self.kernels:
            process = getattr(manager.provisioner, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=KILL_WAIT)
            manager.cleanup_connection_file()
        self.kernels.clear()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


async def keep_adapting(pool: Pool) -> None:
    import psutil  # here, as builds that execute nothing need not load it

    psutil.cpu_percent(interval=None)  # the first reading only starts the interval
    while True:
        await asyncio.sleep(ADAPT_EVERY)
        memory = psutil.virtual_memory()
        pool.adapt(
            psutil.cpu_percent(interval=None), memory.available / memory.total, pool.load.demand()
        )


def make_pool(workers: int | None) -> Pool:
    """``workers`` fixes how many notebooks execute at once; None lets that number adapt
    between one and :data:`AUTO_CEILING_PER_CPU` per CPU. Kernels started ahead adapt in
    both cases, up to as many again as notebooks may execute."""
    if workers is not None:
        return Pool(workers, workers, 2 * workers)
    cpus = os.cpu_count() or 1
    return Pool(cpus, AUTO_CEILING_PER_CPU * cpus, AUTO_CEILING_PER_CPU * cpus, cpus)


def describe_pool(pool: Pool) -> str:
    if pool.adaptive:
        return f"{pool.floor} at a time, up to {pool.ceiling} while CPUs are idle"
    return f"{pool.floor} at a time"
