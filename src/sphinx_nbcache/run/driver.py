"""One notebook through one kernel: nbclient driven on asyncio, per-cell times and
timeouts, discovery requests, and the result as plain data."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import queue
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any, Protocol

import nbformat
import zmq.asyncio
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from sphinx_nbcache.cache.snapshots import SnapshotStore
from sphinx_nbcache.inputs import discover
from sphinx_nbcache.inputs.artefacts import capture_artefacts
from sphinx_nbcache.inputs.environment import environment
from sphinx_nbcache.model import (
    CELL_TIMEOUT,
    CHECKPOINT_TAG,
    INHERITANCE_ERROR,
    NOTEBOOK_METADATA_FROM_EXECUTION,
    NOTEBOOK_TIMEOUT,
    CellError,
    ExecutionJob,
    ExecutionResult,
    Status,
    cell_timeout,
    internal_failure,
    now_utc,
)
from sphinx_nbcache.notebook.cells import code_cell_indices
from sphinx_nbcache.run.kernels import KERNEL_START_ATTEMPTS, KernelStarter, shutdown
from sphinx_nbcache.run.pool import Pool
from sphinx_nbcache.run.state import left_out, reply_error, restore_request, snapshot_request


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
        """Here: this machine (see :class:`Running`)."""

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


class Running(Protocol):
    """What a watcher can see of a notebook while it executes."""

    @property
    def current(self) -> int | None:
        """The index of the cell running now (among all cells), None before the first."""

    @property
    def worker(self) -> str:
        """Where the notebook runs, when not on this machine."""


class Watcher(Protocol):
    """Told what the executor does, in the executor's thread: progress displays, storing.
    Each executor emits these events itself, however it runs the notebooks."""

    def started(self, job: ExecutionJob, running: Running) -> None:
        """The notebook got an execution slot; ``running`` tells which cell runs."""

    def finished(self, result: ExecutionResult) -> None:
        """The notebook is done and its kernel is gone."""

    def tick(self, at_once: int) -> None:
        """About every :data:`TICK_EVERY` seconds while anything executes, with how many
        notebooks may execute at once now."""


TICK_EVERY = 1.0


async def execute_job(
    job: ExecutionJob,
    pool: Pool,
    watcher: Watcher,
    starter: KernelStarter,
    digests: discover.FileDigests | None = None,
    states: SnapshotStore | None = None,
) -> ExecutionResult:
    """Execute one notebook in its own kernel, started by ``starter``; every
    failure becomes a failed result, an error of ours one of status ``extension-error``.
    A notebook that inherits starts from the state ``states`` keeps for its parent; one
    that others inherit from leaves its final state there (see :mod:`.state`).

    A kernel that dies before running a cell is started again: concurrent start-ups can race
    for a TCP port ("Address already in use"), which says nothing about the notebook.
    """
    try:
        return await _execute_job(job, pool, watcher, starter, digests, states)
    except Exception as exc:  # not the notebook's: cells and kernels fail inside
        return internal_failure(job, exc)


async def _execute_job(
    job: ExecutionJob,
    pool: Pool,
    watcher: Watcher,
    starter: KernelStarter,
    digests: discover.FileDigests | None,
    states: SnapshotStore | None,
) -> ExecutionResult:
    resume_error = ""
    attempts = 0
    while attempts < KERNEL_START_ATTEMPTS:
        attempts += 1
        notebook = nbformat.reads(job.notebook_json, as_version=4)
        clock = CellClock(job)
        run = await _execute_once(notebook, job, pool, clock, watcher, starter, states)
        raise_if_cancelled()
        if run.resume_error:  # from the first cell, in a new kernel
            resume_error, job, attempts = run.resume_error, dataclasses.replace(job, resume=None), 0
            continue
        error = run.error
        if error is None or clock.current is not None or error.name == "NoSuchKernel":
            break
    code_indices = code_cell_indices(notebook.cells)
    cells = [notebook.cells[i] for i in code_indices]
    collected = run.collected
    resume = job.resume
    times = [clock.times.get(i) for i in code_indices]
    if resume is not None:
        times[: resume.cell + 1] = resume.cell_times[: resume.cell + 1]
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
        runtime=run.runtime,
        cell_times=times,
        finished=now_utc(),
        dependencies=(
            discover.dependencies(
                collected,
                Path(job.discover_root),
                digests or discover.file_digest,
                job.links,
                job.excluded,
            )
            if collected is not None and job.discover_root is not None
            else {}
        ),
        environment=environment(collected) if collected is not None else {},
        artefacts=collected.get("artefacts", {}) if collected is not None else {},
        left_out=run.snapshot.left_out,
        snapshot_error=run.snapshot.error,
        prefix_keys=list(job.prefix_keys),
        checkpoints=run.checkpoints.kept,
        checkpoint_error=run.checkpoints.error,
        resumed_from=None if resume is None else resume.cell,
        resume_error=resume_error,
    )


@dataclasses.dataclass
class _Run:
    """One kernel's run of a notebook: the error if any, seconds spent, what the notebook
    read (None unless discovery ran), how its final snapshot and checkpoints went, and why
    it could not resume as planned (then it must run again from the first cell)."""

    error: CellError | None = None
    runtime: float = 0.0
    collected: dict[str, Any] | None = None
    snapshot: Snapshot = dataclasses.field(default_factory=lambda: Snapshot())
    checkpoints: Checkpoints = dataclasses.field(default_factory=lambda: Checkpoints())
    resume_error: str = ""


async def _execute_once(
    notebook: nbformat.NotebookNode,
    job: ExecutionJob,
    pool: Pool,
    clock: CellClock,
    watcher: Watcher,
    starter: KernelStarter,
    states: SnapshotStore | None,
) -> _Run:
    kernel_name = notebook.metadata.get("kernelspec", {}).get("name")
    manager = starter.manager(kernel_name)
    pool.kernels.add(manager)
    run = _Run()
    discovering = released = ours = False
    # the kernel's log has no name, so that it goes with the last process holding it
    # even when this one is killed (a Dask worker lost mid-notebook, say)
    # kernel states go through a private folder of their own, never the kernel's working
    # folder, whose files may be kept as artefacts in the (shareable) cache
    with (
        tempfile.TemporaryDirectory(prefix="nbcache-") as tmp,
        tempfile.TemporaryDirectory(prefix="nbcache-state-") as private,
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
                run.runtime = time.perf_counter() - begin
                pid = getattr(manager.provisioner, "pid", None)
                await pool.acquire(pid)
            watcher.started(job, clock)
            discovering = job.discover_root is not None and (
                await _hidden_request(client, discover.SETUP_REQUEST) is not None
            )
            begin = time.perf_counter()
            start = job.cwd or tmp
            try:
                if job.resume is not None:
                    run.resume_error = await _resume(client, job, states, Path(private))
                else:
                    run.error = await _inherit(client, job, states, Path(private))
                if run.error is None and not run.resume_error:
                    keeping = Checkpoints(job, states, Path(private), start)
                    run.checkpoints = keeping
                    await _run_cells(client, job, clock, keeping)
                    if job.snapshot and states is not None:
                        if discovering:  # before the snapshot, whose reads are not the notebook's
                            run.collected, discovering = await _collect(client), False
                        run.snapshot = await _snapshot(client, job, states, Path(private), start)
            finally:
                pool.release(pid)
                released = True
                run.runtime += time.perf_counter() - begin
        except CellTimeoutError as exc:
            run.error = _timeout_error(clock, str(exc))
        except CellExecutionError as exc:
            run.error = _cell_error(exc, clock.current, str(exc))
        except Exception as exc:
            if not _kernels_failure(exc):
                ours = True
                raise
            run.error = CellError(type(exc).__name__, str(exc), _explain(exc), clock.current)
        finally:
            task = asyncio.current_task()
            cancelled = task is not None and task.cancelling() > 0
            error = run.error
            if (
                discovering
                and not cancelled
                and not ours
                and not run.resume_error
                and (error is None or error.status is Status.cell_error)
            ):
                run.collected = await _collect(client)
            await shutdown(manager, client)
            pool.kernels.discard(manager)
            if released:
                pool.stopped()
            if run.collected is not None and job.artefact_max_size > 0:
                run.collected["artefacts"] = capture_artefacts(
                    run.collected.get("written", []),
                    Path(job.cwd or tmp),
                    job.artefact_max_size,
                    job.artefact_include,
                    job.artefact_exclude,
                )
        error = run.error
        if error is not None and error.status is Status.kernel_error:
            run.error = dataclasses.replace(error, traceback=error.traceback + _tail(kernel_log))
    return run


STATE_TIMEOUT = 600.0
"""Seconds a snapshot may take to write or to load."""


async def _inherit(
    client: NotebookClient, job: ExecutionJob, states: SnapshotStore | None, folder: Path
) -> CellError | None:
    """Put the parent's final state into the kernel; the error that stops the notebook
    before its first cell if that cannot be done."""
    if job.inherit is None:
        return None
    data = None if states is None else states.get(job.inherit)
    if data is None:
        problem = "its final state is not available (the notebook did not leave one)"
    else:
        path = folder / "inherited.state"
        path.write_bytes(data)
        failed = reply_error(await _request(client, restore_request(path), STATE_TIMEOUT))
        if failed is None:
            return None
        problem = f"restoring its final state failed: {failed}"
    value = f"inherits from {job.inherit_source}: {problem}"
    return CellError(INHERITANCE_ERROR, value, f"{INHERITANCE_ERROR}: {value}", None)


async def _resume(
    client: NotebookClient, job: ExecutionJob, states: SnapshotStore | None, folder: Path
) -> str:
    """Put the checkpoint ``job.resume`` names into the kernel, and the earlier cells'
    outputs into the notebook; why that could not be done, or "" if it was."""
    resume = job.resume
    assert resume is not None
    data = None if states is None else states.get(job.prefix_keys[resume.cell])
    if data is None:
        return f"the kernel state kept after code cell {resume.cell + 1} is gone or damaged"
    path = folder / "checkpoint.state"
    path.write_bytes(data)
    request = restore_request(path, resume.executed)
    failed = reply_error(await _request(client, request, STATE_TIMEOUT))
    if failed is not None:
        return f"restoring the kernel state kept after code cell {resume.cell + 1} failed: {failed}"
    cells = [client.nb.cells[i] for i in code_cell_indices(client.nb.cells)]
    for position, cell in enumerate(cells[: resume.cell + 1]):
        cell.outputs = [nbformat.from_dict(output) for output in resume.outputs[position]]
        cell.execution_count = resume.execution_counts[position]
    return ""


async def _run_cells(
    client: NotebookClient, job: ExecutionJob, clock: CellClock, checkpoints: Checkpoints
) -> None:
    """nbclient's ``async_execute`` for a kernel already started, from the first cell or
    after the one ``job.resume`` names, keeping checkpoints as cells finish."""
    client.reset_execution_trackers()
    resume = job.resume
    client.code_cells_executed = 0 if resume is None else resume.executed
    position = -1
    for index, cell in enumerate(client.nb.cells):
        if cell.cell_type == "code":
            position += 1
        if resume is not None and position <= resume.cell:
            continue
        await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        if cell.cell_type == "code":
            await checkpoints.after(client, cell, position, clock.times.get(index, 0.0))
    client.set_widgets_metadata()


class Checkpoints:
    """Keeps the kernel state after the cells ``job.checkpoint_after`` selects, under the
    cells' prefix keys; what each cost, or why none could be kept (then no more are tried:
    a state that cannot be carried whole is no state to resume from)."""

    def __init__(
        self,
        job: ExecutionJob | None = None,
        states: SnapshotStore | None = None,
        folder: Path | None = None,
        start: str = "",
    ) -> None:
        self.job = job
        self.states = states
        self.folder = folder
        self.start = start
        self.kept: list[dict[str, Any]] = []
        self.error = ""
        self.since = 0.0
        """Seconds the cells took since the last checkpoint."""

    async def after(
        self, client: NotebookClient, cell: nbformat.NotebookNode, position: int, seconds: float
    ) -> None:
        job, states, folder = self.job, self.states, self.folder
        if job is None or job.checkpoint_after is None or states is None or folder is None:
            return
        if self.error or position >= len(job.prefix_keys):
            return
        self.since += seconds
        tagged = CHECKPOINT_TAG in cell.metadata.get("tags", [])
        if not tagged and self.since < job.checkpoint_after:
            return
        self.since = 0.0
        begin = time.perf_counter()
        path = folder / "checkpoint.state"
        request = snapshot_request(path, self.start)
        failed = reply_error(await _request(client, request, STATE_TIMEOUT))
        names = [] if failed is not None else left_out(path)
        if failed is None and names:
            failed = f"{', '.join(names)} cannot be pickled"
        if failed is None:
            data = path.read_bytes()
            try:
                states.put(job.prefix_keys[position], data)
            except OSError as exc:
                failed = f"cannot write to {states.folder}: {exc}"
        if failed is not None:
            self.error = f"no kernel state kept after code cell {position + 1}: {failed}"
            return
        seconds = round(time.perf_counter() - begin, 3)
        executed = client.code_cells_executed
        self.kept.append(
            {"cell": position, "executed": executed, "seconds": seconds, "bytes": len(data)}
        )


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """How keeping a notebook's final state went: the names left out, or why none was
    kept (then the notebooks inheriting from it say its state is not available)."""

    left_out: list[str] = dataclasses.field(default_factory=list)
    error: str = ""


async def _snapshot(
    client: NotebookClient, job: ExecutionJob, states: SnapshotStore, folder: Path, start: str
) -> Snapshot:
    """Keep the kernel's final state for the notebooks inheriting from this one (``start``:
    the kernel's working folder when it started, which the state's is compared with)."""
    path = folder / "final.state"
    failed = reply_error(await _request(client, snapshot_request(path, start), STATE_TIMEOUT))
    if failed is not None:
        return Snapshot(error=failed)
    try:
        states.put(job.key, path.read_bytes())
    except OSError as exc:
        return Snapshot(error=f"cannot write to {states.folder}: {exc}")
    return Snapshot(left_out(path))


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
                language_info = reply["content"].get("language_info")
                if language_info is not None:  # as nbclient's own execute records it
                    client.nb.metadata["language_info"] = language_info
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
    """A silent execute request (no output, count or history); its reply if it
    succeeded, else None."""
    reply = await _request(client, code, DISCOVERY_TIMEOUT, expressions)
    return reply if reply is not None and reply_error(reply) is None else None


async def _request(
    client: NotebookClient,
    code: str,
    timeout: float,
    expressions: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """A silent execute request; its reply, or None if none came within ``timeout``.

    :raises DeadKernelError: if the kernel dies meanwhile (out of memory loading a state).
    """
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
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply: dict[str, Any] = await kc.get_shell_msg(timeout=min(left, READY_POLL))
        except queue.Empty:
            km: Any = client.km  # an AsyncKernelManager: is_alive is a coroutine
            if km is not None and not await km.is_alive():
                raise DeadKernelError("Kernel died while answering a request") from None
            continue
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply
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


def raise_if_cancelled() -> None:
    """nbclient can swallow a cancellation and report the kernel it lost as dead; a job
    cancelled by Ctrl-C must produce no result, or a failure would be cached."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
