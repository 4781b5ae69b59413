"""A kernel fork server: run as a script by the kernel's own Python; the build imports
only its helpers that tie a process's life to its parent's (:func:`guard`).

It imports ipykernel and the modules named on its command line once, then forks one
ipykernel kernel per request, so that each notebook skips interpreter start-up and those
imports. It speaks JSON lines: requests on stdin, replies and exit events on stdout.

- ``{"argv": [...], "cwd": ..., "env": {...}, "log": PATH}`` forks a kernel that runs as
  ``python -m ipykernel_launcher ARGV`` would, in ``cwd`` with exactly ``env``, its output
  appended to ``log``; the reply is ``{"event": "forked", "pid": N}``.
- ``{"event": "ready", "failed": {MODULE: ERROR}}`` is printed once the imports are done.
- ``{"event": "exited", "pid": N, "status": S}`` is printed when a kernel ends (``S`` as
  ``subprocess.Popen.returncode``: negative for a signal).

The server ends when its stdin closes, and dies with the process that started it (the
first argument is that process's id); each kernel dies with the server. Only the standard
library is used at the top level, because the kernel's Python need not have sphinx-nbcache
installed.
"""

import contextlib
import functools
import gc
import importlib
import importlib.util
import json
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

KERNEL_MODULES = ("ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger")
"""What every ipykernel imports while it initialises (the debugger alone, through debugpy,
takes most of a kernel's start-up): imported once here instead."""

KERNEL_NAME = b"nbcache-kernel"
"""The process name a forked kernel shows in ``ps`` (its command line is the server's)."""


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
WATCH_PARENT_EVERY = 0.1
"""Seconds between two looks at the parent, where there is no parent-death signal."""


def main(parent: int, preload: list[str]) -> None:
    die_with(parent)  # first: importing can take minutes, and nothing else listens meanwhile
    # the script's folder must not shadow anything, as ipykernel_launcher takes the cwd out
    del sys.path[0]
    # what ipykernel does before any user code, so a preloaded matplotlib draws inline
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    failed: dict[str, str] = {}
    for name in ["ipykernel.kernelapp", *KERNEL_MODULES, *preload]:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # a module may raise anything, SystemExit included
            if name not in KERNEL_MODULES:  # those only save time, in the versions that have them
                failed[name] = f"{type(exc).__name__}: {exc}"
    if "ipykernel.kernelapp" in failed:
        send({"event": "ready", "failed": failed})
        return
    # forked kernels share the imported objects' memory until they write to it; a garbage
    # collection that walks all of them would write everywhere, so it skips them
    gc.freeze()
    spec = importlib.util.find_spec("ipykernel_launcher")
    launcher = spec.origin if spec is not None and spec.origin else "ipykernel_launcher"
    serve(launcher, failed)


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(launcher: str, failed: dict[str, str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the build to handle
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    send({"event": "ready", "failed": failed})
    children: set[int] = set()
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wake_read:
                os.read(wake_read, 4096)
                reap(children)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                server = os.getpid()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    become_kernel(request, launcher, (wake_read, wake_write), server)
                children.add(pid)
                send({"event": "forked", "pid": pid})
        reap(children)


def reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            children.discard(pid)
            continue
        if done:
            children.discard(pid)
            send({"event": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status)})


def become_kernel(
    request: dict[str, Any], launcher: str, server_fds: tuple[int, int], server: int
) -> None:
    """In the child: the state a freshly started ``ipykernel_launcher`` would have, tied
    to the server's life as a normally started kernel is to the build's (:func:`guard`)."""
    code = 1
    try:
        os.setsid()
        die_with(server, adopt=True)
        signal.set_wakeup_fd(-1)
        for fd in server_fds:
            os.close(fd)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        name_process(KERNEL_NAME)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [launcher, *request["argv"]]
        reseed()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def die_with(parent: int, adopt: bool = False) -> None:
    """End this process at once when ``parent`` dies, however it dies (SIGKILL included):
    :func:`guard`, or where there is no parent-death signal, a thread watching the parent."""
    if _prctl() is None:
        threading.Thread(target=_watch, args=(parent,), name="nbcache-parent", daemon=True).start()
    guard(parent, adopt)()


def guard(parent: int, adopt: bool = False) -> Callable[[], None]:
    """What ties the process that calls it to ``parent``, also as a ``preexec_fn``: on Linux,
    the parent-death signal (SIGKILL); with ``adopt``, the process becomes a subreaper, so
    that what it starts stays among its descendants even when the process in between
    exits (a shell's ``cmd &``, a daemon's double fork) and can be found to be killed.

    The signal comes when the *thread* that started the process ends: the build keeps its
    kernels and servers within the life of the thread that runs them. The C function is
    looked up here, as a child forked from a threaded process must not import."""
    prctl = _prctl()

    def tie() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if adopt:
                prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if os.getppid() != parent:  # it died before the signal was set
            os._exit(1)

    return tie


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_PARENT_EVERY)
    os._exit(1)


def name_process(name: bytes) -> None:
    with contextlib.suppress(OSError):  # Linux only; elsewhere ps shows the server's name
        Path("/proc/self/comm").write_bytes(name)


def reseed() -> None:
    """A forked child inherits its parent's random state: NumPy's global generator would
    give every notebook the same numbers. (``random`` reseeds itself after a fork.)"""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
