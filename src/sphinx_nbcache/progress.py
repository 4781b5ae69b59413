"""What a build shows while notebooks execute: a live line on a terminal, plain lines in logs.

Every finished notebook gets a permanent line. On a terminal, a status line below it is
redrawn each second: how many are done, which run now and for how long, and how long the
rest should take. In a log file or CI, where redrawing is impossible, a "still executing"
line appears whenever nothing was printed for :data:`QUIET_FOR` seconds, so a hung
notebook is named long before the job times out.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from sphinx_nbcache.log import LOGGER
from sphinx_nbcache.model import ExecutionJob, ExecutionResult, Status
from sphinx_nbcache.notebook.cells import code_cell_number
from sphinx_nbcache.run.driver import Running

QUIET_FOR = 30.0
"""Seconds without output after which plain mode says what is still running."""
CLEAR_LINE = "\x1b[2K"


def colour_allowed(stream: TextIO) -> bool:
    """Whether escape codes (colour, redrawn lines) written to ``stream`` reach a person at
    a terminal that wants them: not a file or a pipe, not ``TERM=dumb``, and not with
    ``NO_COLOR`` set to anything but the empty string (https://no-color.org)."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return terminal and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def on_terminal() -> bool:
    """Whether a redrawn status line will be seen as one line: escape codes allowed on
    stdout (see :func:`colour_allowed`), and not a CI log (``CI=true``)."""
    return colour_allowed(sys.stdout) and os.environ.get("CI", "").lower() not in {"true", "1"}


def outcome(result: ExecutionResult, cells: Sequence[Any] = ()) -> str:
    """How a notebook ended, in one line: ``executed in 1.20 s``, ``failed in ...: why``;
    the failing cell numbered among the notebook's ``cells`` as :func:`code_cell_number`
    says."""
    error = result.error
    took = f"in {result.runtime:.2f} s" + (f" on {result.worker}" if result.worker else "")
    if error is None:
        return f"executed {took}"
    number = code_cell_number(cells, error.cell_index)
    where = "" if number is None else f" (code cell {number})"
    if error.status is Status.timeout:
        return f"timed out {took}{where}: {error.value}"
    if error.status is Status.kernel_error:
        return f"failed {took}, kernel lost{where}: {error.name}: {error.value}"
    if error.status is Status.not_executed:
        return f"not executed: {error.value}"
    if error.status is Status.extension_error:
        return f"failed {took}, error of sphinx-nbcache (not stored): {error.name}: {error.value}"
    return f"failed {took}{where}: {error.name}: {error.value}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"


class Progress:
    """A :class:`~sphinx_nbcache.run.driver.Watcher` that logs progress for a person."""

    def __init__(self, total: int, live: bool) -> None:
        self.total = total
        self.live = live
        self.done = 0
        self.limit = 1
        self.runtimes: list[float] = []
        self.running: dict[str, tuple[ExecutionJob, Running, float]] = {}
        self.cells: dict[str, list[Any]] = {}
        """The cells of each notebook started, to number the cell it is in."""
        self.last_output = time.monotonic()

    def started(self, job: ExecutionJob, running: Running) -> None:
        self.running[job.key] = (job, running, time.monotonic())
        self.cells[job.key] = json.loads(job.notebook_json).get("cells", [])
        self._redraw()

    def finished(self, result: ExecutionResult) -> None:
        self.running.pop(result.key, None)
        self.done += 1
        self.runtimes.append(result.runtime)
        ended = outcome(result, self.cells.pop(result.key, []))
        self._print(f"nbcache: [{self.done}/{self.total}] {result.source} {ended}")
        if self.done == self.total and self.live:
            LOGGER.info(CLEAR_LINE, nonl=True)
        else:
            self._redraw()

    def taken(self, source: str) -> None:
        self.done += 1
        self._print(
            f"nbcache: [{self.done}/{self.total}] {source} taken from the cache "
            "(executed meanwhile by another build)"
        )
        if self.done == self.total and self.live:
            LOGGER.info(CLEAR_LINE, nonl=True)

    def tick(self, at_once: int) -> None:
        self.limit = at_once
        if self.live:
            self._redraw()
        elif self.running and time.monotonic() - self.last_output >= QUIET_FOR:
            self._print(f"nbcache: still executing {self.status()}")

    def status(self) -> str:
        """``3/12 done; running a.ipynb (code cell 4, 12.0 s), b.md (0.5 s); about 20 s
        left``."""
        now = time.monotonic()
        running = []
        for job, clock, since in self.running.values():
            where = f"on {clock.worker}, " if clock.worker else ""
            cell = self._cell(job, clock)
            running.append(f"{job.source} ({where}{cell}{_duration(now - since)})")
        parts = [f"{self.done}/{self.total} done"]
        if running:
            parts.append("running " + ", ".join(running))
        left = self.estimate_left(now)
        if left is not None and left >= 0.5:  # else what runs has outlasted the estimate
            parts.append(f"about {_duration(left)} left")
        return "; ".join(parts)

    def log_interrupted(self) -> None:
        """What Ctrl-C left: finished results are in the cache, stopped notebooks and those
        not started yet execute next time."""
        now = time.monotonic()
        stopped = [
            f"{job.source} ({self._cell(job, clock)}{_duration(now - since)})"
            for job, clock, since in self.running.values()
        ]
        waiting = self.total - self.done - len(stopped)
        parts = [f"nbcache: interrupted; {self.done} of {self.total} notebook(s) finished"]
        if stopped:
            parts.append("stopped " + ", ".join(stopped))
        if waiting:
            parts.append(f"{waiting} not started")
        message = "; ".join(parts) + ". Finished ones are in the cache; the rest execute next time."
        self._print(message)

    def _cell(self, job: ExecutionJob, clock: Running) -> str:
        number = code_cell_number(self.cells.get(job.key, []), clock.current)
        return "" if number is None else f"code cell {number}, "

    def estimate_left(self, now: float) -> float | None:
        """From the mean runtime so far, spread over the notebooks that run at once."""
        if not self.runtimes:
            return None
        mean = statistics.fmean(self.runtimes)
        queued = self.total - self.done - len(self.running)
        work = queued * mean + sum(
            max(mean - (now - since), 0.0) for _, _, since in self.running.values()
        )
        return work / max(self.limit, len(self.running), 1)

    def _print(self, line: str) -> None:
        LOGGER.info((CLEAR_LINE if self.live else "") + line)
        self.last_output = time.monotonic()

    def _redraw(self) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size().columns - 1
        line = f"nbcache: {self.status()}"[:width]
        LOGGER.info(f"{CLEAR_LINE}{line}\r", nonl=True)
