"""Kills what a run's kernels started once the run is gone: run as a script by the build's
own Python, never imported.

A kernel dies with the build (the parent-death signal), but what its notebook started in
a session of its own (``Popen(..., start_new_session=True)``, a daemon) would live on,
adopted by init. This process outlives the build by a moment: it reads kernel process ids
on stdin, one a line, notes their descendants every :data:`RECORD_EVERY` seconds, and when
its stdin closes (the run ended, or the build died however it died) kills every kernel and
descendant it saw that is still alive, then exits.
"""

import os
import selectors
import signal

import psutil

RECORD_EVERY = 0.2
"""Seconds between two looks at the kernels' descendants: one started and left behind
in less time than that, just before the build dies, can escape."""


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the build's Ctrl-C: the run ends first
    kernels: dict[int, psutil.Process] = {}
    seen: dict[int, psutil.Process] = {}
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    pending = b""
    while True:
        if selector.select(timeout=RECORD_EVERY):
            chunk = os.read(0, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    kernels[int(line)] = psutil.Process(int(line))
                except psutil.Error:
                    continue
        record(kernels, seen)
    record(kernels, seen)
    kill([*kernels.values(), *seen.values()])


def record(kernels: dict[int, psutil.Process], seen: dict[int, psutil.Process]) -> None:
    """Note the descendants of the kernels alive, forget processes that ended."""
    for table in (kernels, seen):
        for pid, process in list(table.items()):
            if not process.is_running():  # ended, or its id is another process's now
                del table[pid]
    for kernel in list(kernels.values()):
        try:
            descendants = kernel.children(recursive=True)
        except psutil.Error:
            continue
        for process in descendants:
            seen.setdefault(process.pid, process)


def kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()  # psutil checks that the id is still that process's
        except psutil.Error:
            continue


if __name__ == "__main__":
    main()
