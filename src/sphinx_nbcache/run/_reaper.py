"""Kills what a run's kernels started once the run is gone: run as a script by the build's
own Python (``python _reaper.py VARIABLE VALUE``), never imported.

A kernel dies with the build (the parent-death signal), but what its notebook started in
a session of its own (``Popen(..., start_new_session=True)``, a daemon) would live on,
adopted by init. This process outlives the build by a moment: it reads kernel process ids
on stdin, one a line, and when its stdin closes (the run ended, or the build died however
it died) kills those kernels still alive, their descendants, and every process whose
environment has the variable set to the value given (each kernel's environment has it,
and what the kernel starts inherits it), wherever it was re-parented; then exits.
"""

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import psutil

PASSES = 3
"""Rounds of looking and killing, for what a process started just before it was killed."""


def main(variable: str, value: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the build's Ctrl-C: its run ends first
    kernels = []
    for line in sys.stdin.buffer:  # until the run ends, or the build dies
        with contextlib.suppress(psutil.Error, ValueError):
            kernels.append(psutil.Process(int(line)))
    for _ in range(PASSES):
        left = [*started(kernels), *marked(variable, value)]
        if not left:
            break
        for process in left:
            with contextlib.suppress(psutil.Error):  # gone, or its id is another's now
                process.kill()


def started(kernels: list[psutil.Process]) -> Iterator[psutil.Process]:
    """The kernels still running, and their descendants, whatever their session."""
    for kernel in kernels:
        with contextlib.suppress(psutil.Error):
            if kernel.is_running():
                yield from kernel.children(recursive=True)
                yield kernel


def marked(variable: str, value: str) -> Iterator[psutil.Process]:
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):  # another user's, or gone meanwhile
            if process.pid != os.getpid() and process.environ().get(variable) == value:
                yield process


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
