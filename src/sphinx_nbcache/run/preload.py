"""Kernels forked from a process that already imported ipykernel and the modules every
notebook needs (``nbcache_kernel_preload``), instead of each starting a fresh Python.

A :class:`ForkServer` runs ``_forkserver.py`` under the kernel's own interpreter; the
executor's provisioner asks it for each kernel and hands jupyter_client a
:class:`ForkedProcess` that behaves like the ``Popen`` of a normally started kernel, so
interrupts, shutdown, kill and dead-kernel detection work unchanged. Kernels that cannot
be forked (another language, Windows, a server that failed) start normally.

Only the standard library is imported here, so that a server can start before anything
else loads (see :mod:`sphinx_nbcache.run.early`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

SERVER_SCRIPT = Path(__file__).with_name("_forkserver.py")
READY_TIMEOUT = 300.0
"""Seconds the server may take to import everything (a first matplotlib import builds its
font cache); past that its kernels start normally."""
FORK_TIMEOUT = 30.0
POLL_EVERY = 0.05
CLOSE_WAIT = 5.0
LAUNCHER = ["-m", "ipykernel_launcher"]
UNKNOWN_STATUS = 1
"""The exit status of a kernel whose server died before telling."""


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class ForkServer:
    """One server process, and what it said: readiness, forked kernels, their exits."""

    def __init__(self, python: str, preload: Sequence[str], env: Mapping[str, str]) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [python, str(SERVER_SCRIPT), str(os.getpid()), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(env),
            start_new_session=True,  # a Ctrl-C at the terminal is the build's to handle
        )
        self.failed: dict[str, str] | None = None
        """Modules that failed to import, once the server is ready."""
        self.exits: dict[int, int] = {}
        self.gone = False
        self._ready = threading.Event()
        self._forked: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="nbcache-forkserver", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Until the server's output ends, then closes it: a long-lived process (such as
        sphinx-autobuild) running many builds would otherwise keep one pipe per server."""
        assert self.process.stdout is not None
        with self.process.stdout as output:
            for line in output:
                message = json.loads(line)
                event = message.get("event")
                if event == "ready":
                    self.failed = message["failed"]
                    self._ready.set()
                elif event == "forked":
                    self._forked.put(message)
                elif event == "exited":
                    self.exits[message["pid"]] = message["status"]
        self.gone = True
        self._ready.set()
        self._forked.put({"event": "gone"})

    async def ready(self) -> bool:
        """Whether kernels can be forked, once the server has imported everything."""
        import asyncio  # here: the module is imported before a server starts, asyncio later

        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_EVERY)
        return self.usable

    @property
    def usable(self) -> bool:
        return (
            not self.gone and self.failed is not None and "ipykernel.kernelapp" not in self.failed
        )

    def problem(self) -> str:
        """Why the server cannot fork kernels, for a warning."""
        if self.failed and "ipykernel.kernelapp" in self.failed:
            return f"it cannot import ipykernel: {self.failed['ipykernel.kernelapp']}"
        self.log.seek(0)
        output = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
        if self.gone:
            return "it stopped" + (": " + " / ".join(output) if output else "")
        return f"it was not ready within {READY_TIMEOUT:g} s"

    def spawn(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], log: str) -> int:
        """Fork one kernel; its pid. :raises OSError: if the server cannot."""
        request = {"argv": list(argv), "cwd": cwd, "env": dict(env), "log": log}
        with self._lock:
            if self.gone or self.process.stdin is None:
                raise OSError("the kernel fork server has stopped")
            try:
                self.process.stdin.write((json.dumps(request) + "\n").encode())
                self.process.stdin.flush()
                reply = self._forked.get(timeout=FORK_TIMEOUT)
            except (OSError, queue.Empty) as exc:
                raise OSError(f"the kernel fork server did not answer: {exc}") from exc
        if reply.get("event") != "forked":
            raise OSError("the kernel fork server has stopped")
        return int(reply["pid"])

    def close(self) -> None:
        """Stop the server (it ends when its stdin closes, or at once while it is still
        importing, when it has no kernels yet); its kernels are their managers' to stop."""
        if not self._ready.is_set():
            self.process.kill()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=CLOSE_WAIT)  # it closes the server's output at its end
        self.log.close()


class ForkedProcess:
    """The ``Popen`` interface jupyter_client uses, for a kernel that is the server's
    child: the server reaps it and reports its exit status."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.server = server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.pid in self.server.exits:
                self.returncode = self.server.exits[self.pid]
            elif self.server.gone and not _exists(self.pid):
                self.returncode = UNKNOWN_STATUS
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(POLL_EVERY)
        return status

    def send_signal(self, signum: int) -> None:
        """As ``Popen.send_signal``: a kernel that exited after ``poll`` looked (the server
        reaps it and reports its status a moment later) has nothing left to signal."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _startup(python: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """What fixes an interpreter's state before its first line runs: the executable and the
    ``PYTHON*`` variables (``PYTHONPATH``, ``PYTHONHASHSEED``...). Kernels differing in
    these need servers of their own; the rest of the environment is set in each child."""
    return (python, *sorted(f"{k}={v}" for k, v in env.items() if k.startswith("PYTHON")))


class Preloader:
    """The fork servers of one run, one per kernel interpreter and start-up environment,
    each started on first use, or ahead of it by :meth:`start`."""

    def __init__(
        self, modules: Sequence[str], warn: Callable[[str], None] = lambda message: None
    ) -> None:
        self.modules = list(modules)
        self.warn = warn
        self._servers: dict[tuple[str, ...], ForkServer | None] = {}
        self._reported: set[tuple[str, ...]] = set()
        """Servers whose failed imports were already warned about."""

    def start(self, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the server for this kernel command now, so that it imports while the
        build does other work; kernels that turn out to need another server start theirs."""
        if list(cmd[1:3]) == LAUNCHER and can_fork():
            startup = _startup(cmd[0], env)
            if startup not in self._servers:
                self._servers[startup] = ForkServer(cmd[0], self.modules, env)

    async def server_for(self, cmd: Sequence[str], env: Mapping[str, str]) -> ForkServer | None:
        """The server that can fork this kernel command, or None to start it normally."""
        if list(cmd[1:3]) != LAUNCHER:
            return None
        python = cmd[0]
        startup = _startup(python, env)
        if startup not in self._servers:
            if not can_fork():
                self._servers[startup] = None
                if self.modules:  # forking by default only saves time; preloading was asked for
                    self.warn("nbcache_kernel_preload needs os.fork(); kernels start normally")
            else:
                self._servers[startup] = ForkServer(python, self.modules, env)
        server = self._servers[startup]
        if server is None:
            return None
        if not await server.ready():
            if self._servers.get(startup) is not server:
                return None  # another kernel's start found it unusable and said so
            self.warn(
                f"cannot fork kernels from {python} ({server.problem()}); kernels start normally"
            )
            self._servers[startup] = None
            server.close()
            return None
        if startup not in self._reported:
            self._reported.add(startup)
            for module, error in (server.failed or {}).items():
                self.warn(f"nbcache_kernel_preload: cannot import {module} in {python}: {error}")
        return server

    def close(self) -> None:
        for server in self._servers.values():
            if server is not None:
                server.close()
        self._servers.clear()
