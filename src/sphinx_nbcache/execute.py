"""Jobs, results and the local executor: a pool of concurrent kernels driven by asyncio.

Jobs and results are plain data (JSON-able) so that another executor can run them unchanged.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import nbformat
import zmq.asyncio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets.config import Config

from sphinx_nbcache import discover
from sphinx_nbcache._forkserver import guard
from sphinx_nbcache.preload import ForkedProcess, Preloader

KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}})
"""CurveZMQ-encrypted kernel channels when the kernelspec supports them (ipykernel does):
nothing readable on the wire, and ipykernel stops warning about plain TCP in the build log."""

KERNEL_START_ATTEMPTS = 3

KILL_WAIT = 10.0
"""Seconds to wait for a killed kernel process to be gone."""

NOTEBOOK_METADATA_FROM_EXECUTION = ("language_info", "widgets")
"""Notebook metadata that executing writes, kept with the outputs."""


@dataclasses.dataclass(frozen=True)
class ExecutionJob:
    """One notebook to execute: its key, where it runs and with which settings."""

    key: str
    source: str
    """Project-relative path, for messages and listings; never part of the key."""
    notebook_json: str
    cwd: str | None
    """Working directory of the kernel; None means a fresh temporary folder."""
    timeout: int | None
    """Seconds per cell, unless the cell's own metadata sets another limit."""
    allow_errors: bool
    notebook_timeout: int | None = None
    """Seconds for all cells together (``nbcache_notebook_timeout``)."""
    cell_metadata_key: str = "mystnb"
    discover_root: str | None = None
    """Record the files under this folder that the notebook reads (Python kernels)."""
    links: dict[str, str] = dataclasses.field(default_factory=dict)
    """Folders outside ``discover_root`` that the source tree reaches through symbolic
    links: real path -> the path the project uses (see :func:`discover.linked_folders`)."""
    artefact_max_size: int = 0
    """Bytes; files the notebook writes in its folder up to this size come back from the
    cache (0: none)."""
    artefact_include: tuple[str, ...] = ("*",)
    artefact_exclude: tuple[str, ...] = ()
    copy_in: dict[str, str] = dataclasses.field(default_factory=dict)
    """Files to copy into a temporary working folder first: relative path -> source."""
    inputs: tuple[str, ...] = ()
    """Files declared as the notebook's dependencies (absolute paths), wherever they are:
    what an executor on another machine must send along."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionJob:
        tuples = ("artefact_include", "artefact_exclude", "inputs")
        fields: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        return cls(**fields)


CELL_TIMEOUT = "CellTimeoutError"
NOTEBOOK_TIMEOUT = "NotebookTimeoutError"
KERNEL_ERRORS = frozenset({"DeadKernelError", "NoSuchKernel"})


def cell_timeout(cell: Mapping[str, Any], default: int | None, key: str) -> int | None:
    """A cell's limit: ``execution_timeout`` in its myst-nb metadata (``mystnb`` unless
    ``nb_cell_metadata_key`` says otherwise), else the notebook's. Not ``execution``, which
    nbformat reserves for timestamps. None for no limit, which myst-nb spells -1 or 0: passed
    on as such, nbclient would take them for no limit, ``nbcache_notebook_timeout`` too."""
    settings = cell.get("metadata", {}).get(key)
    value = settings.get("execution_timeout") if isinstance(settings, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    return default if default is not None and default > 0 else None


@dataclasses.dataclass(frozen=True)
class CellError:
    """Where and how a notebook failed."""

    name: str
    value: str
    traceback: str
    cell_index: int | None
    """Index among all cells of the notebook, None when no cell was running."""
    timeout: int | None = None
    """For a timeout, the limit in seconds that was exceeded."""
    internal: bool = False
    """Raised by sphinx-nbcache itself (or a library it drives), not by the notebook or its
    kernel: reported as such, and never stored as the notebook's outcome."""

    @property
    def kind(self) -> str:
        """``timeout``, ``kernel`` (died, missing, never started), ``cell`` (raised), or
        ``internal`` (an error of sphinx-nbcache's own)."""
        if self.internal:
            return "internal"
        if self.name in (CELL_TIMEOUT, NOTEBOOK_TIMEOUT):
            return "timeout"
        if self.name in KERNEL_ERRORS or self.cell_index is None:
            return "kernel"
        return "cell"


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """What executing one notebook produced, per code cell in order."""

    key: str
    source: str
    succeeded: bool
    error: CellError | None
    outputs: list[list[dict[str, Any]]]
    execution_counts: list[int | None]
    metadata: dict[str, Any]
    runtime: float
    cell_times: list[float | None]
    finished: str
    """ISO 8601 UTC time the execution finished."""
    dependencies: dict[str, str] = dataclasses.field(default_factory=dict)
    """Project-relative path -> sha256 of each local module and file the notebook read."""
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The kernel's Python version and the versions of the packages the notebook imported."""
    artefacts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Files the notebook wrote in its folder, by path relative to it: sha256 and base64."""
    worker: str = ""
    """The Dask worker that executed the notebook; empty for this machine's pool."""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.error is not None and not self.error.internal:
            del data["error"]["internal"]  # stored entries keep the format they always had
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionResult:
        """Rebuild from :meth:`to_json`; raises ``KeyError``/``TypeError`` on bad data.

        Fields added since an entry was written take their defaults."""
        error = data["error"]
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if not required <= set(data) <= fields:
            raise KeyError(f"fields {sorted((required - set(data)) | (set(data) - fields))}")
        result = cls(**{**data, "error": CellError(**error) if error is not None else None})
        if not (len(result.outputs) == len(result.execution_counts) == len(result.cell_times)):
            raise TypeError("per-cell lists differ in length")
        return result


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def unrun_result(job: ExecutionJob, name: str, message: str, worker: str = "") -> ExecutionResult:
    """The result of a notebook no kernel ran to the end, for a reason outside the notebook
    (nothing to run it on, its worker lost): no outputs, not worth storing."""
    notebook = nbformat.reads(job.notebook_json, as_version=4)
    cells = sum(1 for cell in notebook.cells if cell.cell_type == "code")
    return ExecutionResult(
        key=job.key,
        source=job.source,
        succeeded=False,
        error=CellError(name, message, f"{name}: {message}", None),
        outputs=[[] for _ in range(cells)],
        execution_counts=[None] * cells,
        metadata={},
        runtime=0.0,
        cell_times=[None] * cells,
        finished=_now(),
        worker=worker,
    )


def internal_failure(job: ExecutionJob, exc: Exception) -> ExecutionResult:
    """The result of a notebook that an error of sphinx-nbcache's own stopped: no outputs,
    the Python traceback to report, and never stored (the next build executes it again)."""
    name = type(exc).__name__
    error = CellError(name, str(exc), "".join(traceback.format_exception(exc)), None, internal=True)
    return dataclasses.replace(unrun_result(job, name, str(exc)), error=error)


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


async def _keep_adapting(pool: Pool) -> None:
    import psutil  # here, as builds that execute nothing need not load it

    psutil.cpu_percent(interval=None)  # the first reading only starts the interval
    while True:
        await asyncio.sleep(ADAPT_EVERY)
        memory = psutil.virtual_memory()
        pool.adapt(
            psutil.cpu_percent(interval=None), memory.available / memory.total, pool.load.demand()
        )


class CellClock:
    """nbclient hooks that note which cell is running, how long each one took, and which
    time limit applies to it: its own, or what is left of the notebook's."""

    def __init__(self, job: ExecutionJob) -> None:
        self.job = job
        self.current: int | None = None
        self.started: dict[int, float] = {}
        self.times: dict[int, float] = {}
        self.first_start: float | None = None
        self.limit: tuple[str, int] | None = None
        """(error name, seconds) of the limit in force for the current cell."""
        self.worker = ""
        """Where the notebook runs, when not on this machine."""

    def on_cell_start(self, cell: Any, cell_index: int) -> None:
        self.current = cell_index
        self.started[cell_index] = time.perf_counter()
        if self.first_start is None:
            self.first_start = self.started[cell_index]

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self.times[cell_index] = time.perf_counter() - self.started[cell_index]

    def timeout_for(self, cell: nbformat.NotebookNode) -> int | None:
        """nbclient's ``timeout_func``, asked as each cell starts."""
        own = cell_timeout(cell, self.job.timeout, self.job.cell_metadata_key)
        self.limit = (CELL_TIMEOUT, own) if own is not None else None
        total = self.job.notebook_timeout
        if total is not None:
            spent = time.perf_counter() - (self.first_start or time.perf_counter())
            left = max(1, math.ceil(total - spent))
            if own is None or left < own:
                self.limit = (NOTEBOOK_TIMEOUT, total)
                return left
        return own


class Watcher(Protocol):
    """Told what the executor does, in the executor's thread: progress displays, storing."""

    def started(self, job: ExecutionJob, clock: CellClock) -> None:
        """The notebook got an execution slot; ``clock`` tells which cell runs."""

    def finished(self, result: ExecutionResult) -> None:
        """The notebook is done and its kernel is gone."""

    def tick(self, pool: Pool) -> None:
        """About every :data:`TICK_EVERY` seconds while anything executes."""


TICK_EVERY = 1.0


async def execute_job(
    job: ExecutionJob,
    pool: Pool,
    watcher: Watcher,
    starter: KernelStarter,
    digests: discover.FileDigests | None = None,
) -> ExecutionResult:
    """Execute one notebook in its own kernel, started by ``starter``; every
    failure becomes a failed result, an error of ours one of kind ``internal``.

    A kernel that dies before running a cell is started again: concurrent start-ups can race
    for a TCP port ("Address already in use"), which says nothing about the notebook.
    """
    try:
        return await _execute_job(job, pool, watcher, starter, digests)
    except Exception as exc:  # not the notebook's: cells and kernels fail inside
        return internal_failure(job, exc)


async def _execute_job(
    job: ExecutionJob,
    pool: Pool,
    watcher: Watcher,
    starter: KernelStarter,
    digests: discover.FileDigests | None,
) -> ExecutionResult:
    notebook = nbformat.reads(job.notebook_json, as_version=4)
    code_indices = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    clock = CellClock(job)
    for _ in range(KERNEL_START_ATTEMPTS):
        error, runtime, collected = await _execute_once(
            notebook, job, pool, clock, watcher, starter
        )
        _raise_if_cancelled()
        if error is None or clock.current is not None or error.name == "NoSuchKernel":
            break
    cells = [notebook.cells[i] for i in code_indices]
    return ExecutionResult(
        key=job.key,
        source=job.source,
        succeeded=error is None,
        error=error,
        outputs=[[dict(nbformat.from_dict(o)) for o in cell.get("outputs", [])] for cell in cells],
        execution_counts=[cell.get("execution_count") for cell in cells],
        metadata={
            name: _plain(notebook.metadata[name])
            for name in NOTEBOOK_METADATA_FROM_EXECUTION
            if name in notebook.metadata
        },
        runtime=runtime,
        cell_times=[clock.times.get(i) for i in code_indices],
        finished=_now(),
        dependencies=(
            discover.dependencies(
                collected, Path(job.discover_root), digests or discover.file_digest, job.links
            )
            if collected is not None and job.discover_root is not None
            else {}
        ),
        environment=discover.environment(collected) if collected is not None else {},
        artefacts=collected.get("artefacts", {}) if collected is not None else {},
    )


async def _execute_once(
    notebook: nbformat.NotebookNode,
    job: ExecutionJob,
    pool: Pool,
    clock: CellClock,
    watcher: Watcher,
    starter: KernelStarter,
) -> tuple[CellError | None, float, dict[str, Any] | None]:
    """One kernel's run of the notebook: the error if any, seconds spent, and what the
    notebook read (None unless discovery ran). Raises what is not the notebook's failure
    (see :func:`_kernels_failure`), once the kernel is shut down."""
    kernel_name = notebook.metadata.get("kernelspec", {}).get("name")
    manager = starter.manager(kernel_name)
    pool.kernels.add(manager)
    error: CellError | None = None
    runtime = 0.0
    collected: dict[str, Any] | None = None
    discovering = released = ours = False
    # the kernel's log has no name, so that it goes with the last process holding it
    # even when this one is killed (a Dask worker lost mid-notebook, say)
    with (
        tempfile.TemporaryDirectory(prefix="nbcache-") as tmp,
        tempfile.TemporaryFile(prefix="nbcache-kernel-", suffix=".log") as kernel_log,
    ):
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=job.timeout,
            allow_errors=job.allow_errors,
            on_cell_start=clock.on_cell_start,
            on_cell_executed=clock.on_cell_executed,
            timeout_func=clock.timeout_for,
        )
        if job.cwd is None:
            for relative, origin in job.copy_in.items():
                target = Path(tmp, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
        try:
            async with pool.ahead():
                begin = time.perf_counter()
                starter.prepare(manager)
                # nbclient's own start: an in-memory IPython history, as under myst-nb,
                # so that concurrent kernels never share (and lock) one history database
                await client.async_start_new_kernel(
                    cwd=job.cwd or tmp, stdout=kernel_log, stderr=kernel_log
                )
                await _start_client(client, starter.context)
                runtime = time.perf_counter() - begin
                pid = getattr(manager.provisioner, "pid", None)
                await pool.acquire(pid)
            watcher.started(job, clock)
            discovering = job.discover_root is not None and (
                await _hidden_request(client, discover.SETUP_REQUEST) is not None
            )
            begin = time.perf_counter()
            try:
                await client.async_execute()
            finally:
                pool.release(pid)
                released = True
                runtime += time.perf_counter() - begin
        except CellTimeoutError as exc:
            error = _timeout_error(clock, str(exc))
        except CellExecutionError as exc:
            error = _cell_error(exc, clock.current, str(exc))
        except Exception as exc:
            if not _kernels_failure(exc):
                ours = True
                raise
            error = CellError(type(exc).__name__, str(exc), _explain(exc), clock.current)
        finally:
            task = asyncio.current_task()
            cancelled = task is not None and task.cancelling() > 0
            if (
                discovering
                and not cancelled
                and not ours
                and (error is None or error.kind == "cell")
            ):
                collected = await _collect(client)
            await _shutdown(manager, client)
            pool.kernels.discard(manager)
            if released:
                pool.stopped()
            if collected is not None and job.artefact_max_size > 0:
                collected["artefacts"] = discover.capture_artefacts(
                    collected.get("written", []),
                    Path(job.cwd or tmp),
                    job.artefact_max_size,
                    job.artefact_include,
                    job.artefact_exclude,
                )
        if error is not None and error.kind == "kernel":
            error = dataclasses.replace(error, traceback=error.traceback + _tail(kernel_log))
    return error, runtime, collected


READY_POLL = 1.0
"""Seconds to wait for a reply to ``kernel_info`` before asking again."""
IOPUB_CHECK = 0.2
"""Seconds to wait for the first IOPub message that shows the channel is connected."""


class KernelStartError(RuntimeError):
    """The kernel process started, but died or hung before it answered."""


KERNEL_LIBRARIES = frozenset({"jupyter_client", "nbclient", "zmq"})


def _kernels_failure(exc: Exception) -> bool:
    """Whether ``exc``, raised while a notebook ran but not by a cell, is the kernel's
    failure, the notebook's outcome: the kernel died, is not installed, or could not start
    or answer. So is an ``OSError`` (the system refused a process, a port, a file; timeouts
    are ``OSError`` too), and a ``RuntimeError`` the kernel libraries raised themselves.
    Anything else (``AttributeError``, ``KeyError``, ``TypeError``..., a ``RuntimeError``
    of our own) is a bug of sphinx-nbcache or of a library: never the notebook's."""
    if isinstance(exc, (DeadKernelError, NoSuchKernel, KernelStartError, zmq.ZMQError, OSError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    # the innermost frame of ours or theirs: our hooks run inside nbclient's frames
    modules = [
        frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(exc.__traceback__)
    ]
    ours = __name__.split(".")[0]
    packages = [str(name).split(".")[0] for name in modules]
    raiser = next((p for p in reversed(packages) if p in KERNEL_LIBRARIES or p == ours), "")
    return raiser in KERNEL_LIBRARIES


async def _start_client(client: NotebookClient, context: zmq.asyncio.Context) -> None:
    """nbclient's start of the kernel client, without jupyter_client's last step: waiting
    for IOPub to stay silent for 0.2 s. Every kernel would pay that wait, and nbclient
    skips messages of other requests anyway. A reply to ``kernel_info`` and a message on
    IOPub show that both channels are connected.

    Only the two channels nbclient uses are opened: no stdin (input is not allowed), no
    control channel (the manager has its own), and no heartbeat, whose thread, event loop
    and ping every second each client would otherwise pay for (the manager tells whether
    the kernel process is alive)."""
    assert client.km is not None
    kc: Any = client.km.client(context=context)  # an AsyncKernelClient: getters are coroutines
    client.kc = kc
    kc.start_channels(stdin=False, hb=False, control=False)
    deadline = time.monotonic() + client.startup_timeout
    while True:
        kc.kernel_info()
        with contextlib.suppress(queue.Empty):
            reply = await kc.get_shell_msg(timeout=READY_POLL)
            if reply["msg_type"] == "kernel_info_reply":
                await kc.get_iopub_msg(timeout=IOPUB_CHECK)
                kc._handle_kernel_info_reply(reply)  # the protocol version it speaks
                break
        if not await kc.is_alive():
            raise KernelStartError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise KernelStartError(f"Kernel didn't respond in {client.startup_timeout} seconds")


DISCOVERY_TIMEOUT = 10.0
"""Seconds a hidden request may take; past that, the notebook simply records nothing."""


async def _hidden_request(
    client: NotebookClient, code: str, expressions: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """A silent execute request (no output, count or history); its reply, or None."""
    kc: Any = client.kc  # an AsyncKernelClient: get_shell_msg is a coroutine
    if kc is None:
        return None
    msg_id = kc.execute(
        code,
        silent=True,
        store_history=False,
        user_expressions=expressions or {},
        allow_stdin=False,
    )
    deadline = time.monotonic() + DISCOVERY_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply: dict[str, Any] = await kc.get_shell_msg(timeout=left)
        except queue.Empty:
            return None
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply if reply.get("content", {}).get("status") == "ok" else None
    return None


async def _collect(client: NotebookClient) -> dict[str, Any] | None:
    expressions = {"discovered": discover.COLLECT_EXPRESSION}
    try:
        reply = await _hidden_request(client, "", expressions)
    except Exception:
        return None
    return None if reply is None else discover.parse_collected(reply)


KERNEL_LOG_LINES = 30


def _tail(log: IO[bytes]) -> str:
    """The kernel process's own output (crash messages, fatal errors) is kept out of the
    build log, where shutdown chatter would only confuse, and shown when the kernel is lost."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-KERNEL_LOG_LINES:]
    if not lines:
        return ""
    return "\nThe kernel process printed (last lines):\n" + "\n".join(lines) + "\n"


def _raise_if_cancelled() -> None:
    """nbclient can swallow a cancellation and report the kernel it lost as dead; a job
    cancelled by Ctrl-C must produce no result, or a failure would be cached."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _RunKernelSpecs(KernelSpecManager):
    """Kernelspecs looked up once per run: each lookup searches every Jupyter data folder,
    a few milliseconds that every notebook would pay again."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._found: dict[str, KernelSpec] = {}

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name not in self._found:
            self._found[kernel_name] = super().get_kernel_spec(kernel_name)
        return self._found[kernel_name]


class ForkedProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, launching through a fork server when it can,
    and tying every kernel's life to the build's (see :func:`guard`, :class:`Reaper`)."""

    preloader: Preloader | None = None
    reaper: Reaper | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = {**kwargs.get("env", os.environ), "JPY_PARENT_PID": str(os.getpid())}
        if self.reaper is not None:
            env[RUN_VARIABLE] = self.reaper.run
        kwargs["env"] = env
        server = None if self.preloader is None else await self.preloader.server_for(cmd, env)
        if server is None:
            if os.name == "posix":
                kwargs["preexec_fn"] = guard(os.getpid(), adopt=True)
            info = await super().launch_kernel(cmd, **kwargs)
        else:
            cwd = str(kwargs.get("cwd") or Path.cwd())
            log = getattr(kwargs.get("stdout"), "name", None)
            pid = server.spawn(cmd[3:], cwd, env, log if isinstance(log, str) else os.devnull)
            self.process = ForkedProcess(pid, server)  # type: ignore[assignment]  # Popen-like
            self.pid = pid
            self.pgid = pid  # the kernel makes itself a session (and group) leader
            self.cwd = cwd
            info = self.connection_info
        if self.reaper is not None and self.pid is not None:
            self.reaper.watch(self.pid)
        return info


SHUTDOWN_POLL = 0.01
"""Seconds between looks at whether a kernel asked to shut down has exited."""


class _KernelManager(AsyncKernelManager):
    """jupyter_client's manager, looking ten times as often whether a kernel has exited
    after a shutdown request: a kernel counts against the pool until it is gone, and the
    run ends with the last one."""

    async def _async_finish_shutdown(
        self, waittime: float | None = None, pollinterval: float = 0.1, restart: bool = False
    ) -> None:
        await super()._async_finish_shutdown(waittime, min(pollinterval, SHUTDOWN_POLL), restart)


REAPER_SCRIPT = Path(__file__).with_name("_reaper.py")
REAPER_WAIT = 5.0
RUN_VARIABLE = "NBCACHE_RUN"
"""Set in every kernel's environment to its run's id: what a notebook starts inherits it,
so that the run's :class:`Reaper` finds it wherever it was re-parented."""


class Reaper:
    """The run's ``_reaper.py`` process, told each kernel's process id: what the kernels
    started that is still alive when the run ends, or when the build dies however it
    dies (even SIGKILL closes the pipe), is killed. Its own session: a Ctrl-C at the
    terminal is the build's to handle."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex
        self.process = subprocess.Popen(
            [sys.executable, str(REAPER_SCRIPT), RUN_VARIABLE, self.run],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def watch(self, pid: int) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):  # it stopped: nothing left to do about it here
            self.process.stdin.write(f"{pid}\n".encode())
            self.process.stdin.flush()

    def close(self) -> None:
        """Kill what the kernels left, and wait for it to be done."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=REAPER_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class KernelStarter:
    """How the kernels of one run start: kernelspecs looked up once, one ZeroMQ context
    (and I/O thread) for all managers and clients instead of two per kernel, kernels
    forked from ``preloader``'s servers when it is given, and a :class:`Reaper`."""

    def __init__(self, preloader: Preloader | None = None) -> None:
        self.preloader = preloader
        self.specs = _RunKernelSpecs()
        self.context = zmq.asyncio.Context()
        self.reaper = Reaper()

    def close(self) -> None:
        """Once every kernel of the run is shut down."""
        self.context.destroy(linger=0)
        self.reaper.close()

    def manager(self, kernel_name: str | None) -> AsyncKernelManager:
        return _KernelManager(
            config=KERNEL_CONFIG,
            kernel_spec_manager=self.specs,
            context=self.context,
            **({"kernel_name": kernel_name} if kernel_name else {}),
        )

    def prepare(self, manager: AsyncKernelManager) -> None:
        """Just before the kernel starts (a missing kernel raises ``NoSuchKernel`` here):
        a provisioner of ours, which jupyter_client keeps since one is already set."""
        manager.kernel_id = manager.kernel_id or str(uuid.uuid4())
        provisioner = ForkedProvisioner(
            kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec, parent=manager
        )
        provisioner.preloader = self.preloader
        provisioner.reaper = self.reaper
        manager.provisioner = provisioner


async def _shutdown(manager: AsyncKernelManager, client: NotebookClient) -> None:
    """Stop the kernel outside the execution slot: a graceful shutdown mostly waits. What
    the notebook started and left running (in a session of its own, say) is killed once
    the kernel is gone: the kernel adopts orphans, so they are all among its descendants."""
    atexit.unregister(client._cleanup_kernel)  # left registered when a kernel fails to start
    kc: Any = client.kc
    if kc is not None:
        # the channels _start_client opened: jupyter_client's stop_channels would open the
        # others first, to close them
        kc.shell_channel.close()
        kc.iopub_channel.close()
    if manager.has_kernel:
        left = _descendants(getattr(manager.provisioner, "pid", None))
        try:
            await manager.shutdown_kernel()
        except Exception:
            await manager.shutdown_kernel(now=True)
        _kill(left)


def _descendants(pid: int | None) -> list[Any]:
    """The ``psutil.Process`` of every descendant of ``pid``, whatever their session."""
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True)) if pid else []
    except psutil.Error:
        return []


def _kill(processes: list[Any]) -> None:
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):  # gone already, or its id is another's now
            process.kill()


def _cell_error(exc: Exception, current: int | None, tb: str) -> CellError:
    """For a cell error, the kernel's exception name and message, not nbclient's wrapper."""
    lines = str(exc).strip().splitlines()
    name = getattr(exc, "ename", None) or type(exc).__name__
    value = getattr(exc, "evalue", None) or (lines[-1] if lines else "")
    return CellError(name, value, tb, current)


def _explain(exc: Exception) -> str:
    """What to show for a failure that is not a cell's: the message for the kernel's own
    troubles (it died, is not installed), the whole Python traceback for anything else."""
    if type(exc).__module__.split(".")[0] in ("nbclient", "jupyter_client"):
        return "".join(traceback.format_exception_only(exc))
    return "".join(traceback.format_exception(exc))


def _timeout_error(clock: CellClock, tb: str) -> CellError:
    name, seconds = clock.limit or (CELL_TIMEOUT, 0)
    if name == NOTEBOOK_TIMEOUT:
        value = f"the notebook did not finish within {seconds} s (nbcache_notebook_timeout)"
    else:
        value = f"the cell did not finish within {seconds} s"
    return CellError(name, value, tb, clock.current, seconds)


def _plain(value: Any) -> Any:
    """NotebookNode -> plain dicts and lists, so results serialise as JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _KernelLoop(asyncio.SelectorEventLoop):
    """An event loop on which nbclient cannot take over Ctrl-C.

    nbclient gives every client its own SIGINT/SIGTERM handler that shuts down that one
    kernel and lets the others run on, so one Ctrl-C would look like a dead kernel in one
    notebook. Here the runner keeps SIGINT: it cancels every job, each job shuts its own
    kernel down, and ``KeyboardInterrupt`` reaches Sphinx once all kernels are gone.
    """

    def add_signal_handler(  # type: ignore[override]
        self, sig: int, callback: Callable[..., object], *args: Any
    ) -> None:
        if sig not in (signal.SIGINT, signal.SIGTERM):
            super().add_signal_handler(sig, callback, *args)

    def remove_signal_handler(self, sig: int) -> bool:
        if sig in (signal.SIGINT, signal.SIGTERM):
            return False
        return super().remove_signal_handler(sig)


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
    it says so."""

    def __init__(
        self,
        pool: Pool,
        preload: Sequence[str] | None = None,
        warn: Callable[[str], None] = lambda message: None,
        stop: Callable[[], bool] = lambda: False,
        preloader: Preloader | None = None,
    ) -> None:
        self.pool = pool
        self.preload = preload
        self.warn = warn
        self.stop = stop
        self.preloader = preloader

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
        digests = discover.FileDigests()

        async def run_one(job: ExecutionJob) -> ExecutionResult:
            result = await execute_job(job, self.pool, watcher, starter, digests)
            _raise_if_cancelled()
            watcher.finished(result)
            return result

        main = asyncio.current_task()

        async def tick() -> None:
            while True:
                await asyncio.sleep(TICK_EVERY)
                if self.stop() and main is not None:
                    main.cancel()
                watcher.tick(self.pool)

        helpers = [asyncio.create_task(tick()), asyncio.create_task(_keep_adapting(self.pool))]
        try:
            return list(await asyncio.gather(*(run_one(job) for job in jobs)))
        finally:
            for helper in helpers:
                helper.cancel()
