"""Kernel processes: launched (or forked from a preloaded server), shut down, and killed
with everything they started, even when the build itself is killed."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.asyncio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from nbclient import NotebookClient
from traitlets.config import Config

from sphinx_nbcache.run._forkserver import guard
from sphinx_nbcache.run.preload import ForkedProcess, Preloader

KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}})
"""CurveZMQ-encrypted kernel channels when the kernelspec supports them (ipykernel does):
nothing readable on the wire, and ipykernel stops warning about plain TCP in the build log."""


KERNEL_START_ATTEMPTS = 3


KILL_WAIT = 10.0
"""Seconds to wait for a killed kernel process to be gone."""


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


async def shutdown(manager: AsyncKernelManager, client: NotebookClient) -> None:
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
