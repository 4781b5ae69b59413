"""Progress while executing: a live line on a terminal, plain lines in CI logs."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ProjectFactory, code, ipynb, markdown
from sphinx_nbcache.model import CellError, ExecutionJob, ExecutionResult
from sphinx_nbcache.progress import CLEAR_LINE, QUIET_FOR, Progress, colour_allowed, outcome
from sphinx_nbcache.report import plain_text
from sphinx_nbcache.run.driver import CellClock

CELLS = [markdown("# A"), code("1"), markdown("b"), code("2"), code("3")]
"""Code cells at indices 1, 3 and 4: code cells 1, 2 and 3."""


def job(source: str) -> ExecutionJob:
    return ExecutionJob(source, source, json.dumps({"cells": CELLS}), None, 30, False)


def result(source: str, runtime: float, error: CellError | None = None) -> ExecutionResult:
    return ExecutionResult(
        key=source,
        source=source,
        succeeded=error is None,
        error=error,
        outputs=[],
        execution_counts=[],
        metadata={},
        runtime=runtime,
        cell_times=[],
        finished="2026-11-22T00:00:00+00:00",
    )


def test_status_names_what_runs_and_estimates_what_is_left() -> None:
    progress = Progress(total=4, live=False)
    progress.tick(2)
    for name in ("a.ipynb", "b.md"):
        progress.started(job(name), CellClock(job(name)))
    progress.finished(result("a.ipynb", 2.0))
    assert progress.estimate_left(progress.running["b.md"][2]) == pytest.approx((2 * 2 + 2) / 2)
    clock = CellClock(job("c.ipynb"))
    clock.on_cell_start(None, 4)
    progress.started(job("c.ipynb"), clock)
    status = progress.status()  # how long each has run depends on how busy the machine is
    running = r"running b\.md \([\d.]+ s\), c\.ipynb \(code cell 3, [\d.]+ s\)"
    assert re.fullmatch(rf"1/4 done; {running}; about [\d.]+ s left", status), status


def test_plain_lines_and_a_still_executing_line_after_silence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    progress = Progress(total=2, live=False)
    progress.started(job("slow.ipynb"), CellClock(job("slow.ipynb")))
    progress.started(job("fast.ipynb"), CellClock(job("fast.ipynb")))
    progress.finished(result("fast.ipynb", 0.5))
    progress.tick(2)
    progress.last_output -= QUIET_FOR
    progress.tick(2)
    lines = caplog.messages
    assert lines == [
        "nbcache: [1/2] fast.ipynb executed in 0.50 s",
        lines[1],
    ]
    assert lines[1].startswith("nbcache: still executing 1/2 done; running slow.ipynb (")
    assert not any(CLEAR_LINE in line or "\r" in line for line in lines)


def test_outcome_says_how_each_kind_of_failure_ended() -> None:
    timeout = CellError("CellTimeoutError", "the cell did not finish within 2 s", "", 3, 2)
    dead = CellError("DeadKernelError", "Kernel died", "", 1)
    raised = CellError("ValueError", "bad", "", 4)
    assert (
        outcome(result("a", 1, timeout), CELLS)
        == "timed out in 1.00 s (code cell 2): the cell did not finish within 2 s"
    )
    assert (
        outcome(result("a", 1, dead), CELLS)
        == "failed in 1.00 s, kernel lost (code cell 1): DeadKernelError: Kernel died"
    )
    assert (
        outcome(result("a", 1, raised), CELLS) == "failed in 1.00 s (code cell 3): ValueError: bad"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_a_terminal_gets_a_live_status_line(make_project: ProjectFactory) -> None:
    import pty

    files = {
        # a second at least, so that the estimate from it outlasts a slow notebook's start
        "fast.ipynb": ipynb(code("import time\ntime.sleep(1)\nprint('fast')")),
        "slow1.ipynb": ipynb(code("import time\ntime.sleep(2.5)")),
        # other code than slow1's: the same code is the same key, executed once
        "slow2.ipynb": ipynb(code("import time\ntime.sleep(2.5)\nslow = 2")),
    }
    project = make_project(files, "nbcache_workers = 1\n")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sphinx", "-b", "html", str(project.root), "_build/html"],
        cwd=project.root,
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CI": "", "TERM": "xterm", "COLUMNS": "200"},
    )
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the build exited and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    process.wait(timeout=60)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert process.returncode == 0
    assert re.search(r"nbcache: \[1/3\] \S+\.ipynb executed in ", text)
    # kernels take the free slot in the order they become ready: any slow one will do
    live = r"\x1b\[2Knbcache: [12]/3 done; running slow[12]\.ipynb \(code cell 1, [\d.]+ s\); about"
    assert re.search(live + r" [\d.]+ s left\r", text), text[text.find("nbcache") :][:3000]


def run_at_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdout and stderr, as a person would;
    its exit status and all it wrote."""
    import pty

    leader, follower = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR"}}
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=follower,
        stderr=follower,
        env={**base, "CI": "", "TERM": "xterm", "COLUMNS": "200", **env},
    )
    os.close(follower)
    seen = b""
    while select.select([leader], [], [], 120)[0]:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the command exited and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return process.wait(timeout=60), seen.decode(errors="replace")


FAILING = {
    "ok.ipynb": ipynb(code("import time\ntime.sleep(1.5)\nprint('ok')")),
    "bad.ipynb": ipynb(code("1 / 0")),
}


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_a_terminal_with_no_color_gets_plain_progress_lines(make_project: ProjectFactory) -> None:
    """As Sphinx prints its own progress then, one line each: no escape codes, no
    redrawn line."""
    project = make_project(FAILING, "nbcache_workers = 1\n")
    argv = [sys.executable, "-m", "sphinx", "-b", "html", str(project.root), "_build"]
    status, text = run_at_terminal(argv, project.root, {"NO_COLOR": "1"})
    assert status == 0, text
    assert "\x1b" not in text, text
    assert re.search(r"\nnbcache: \[\d/2\] ok\.ipynb executed in [\d.]+ s\r\n", text), text
    assert re.search(r"\nnbcache: \[\d/2\] bad\.ipynb failed in .*ZeroDivisionError", text)
    assert "reading sources... [100%]" in text, "Sphinx's own progress, plain too"


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_nbcache_at_a_terminal_respects_no_color(make_project: ProjectFactory) -> None:
    project = make_project(FAILING)
    nbcache = [sys.executable, "-m", "sphinx_nbcache"]
    status, text = run_at_terminal([*nbcache, "execute"], project.root, {"NO_COLOR": "1"})
    assert status == 1, text
    assert "\x1b" not in text, text
    assert "bad.ipynb failed in" in text and "1 succeeded, 1 failed" in text

    show = [*nbcache, "show", "bad.ipynb"]
    status, plain = run_at_terminal(show, project.root, {"NO_COLOR": "1"})
    assert status == 0, plain
    assert "ZeroDivisionError" in plain
    assert "\x1b" not in plain, plain
    status, coloured = run_at_terminal(show, project.root, {"NO_COLOR": ""})
    assert "\x1b[" in coloured, "an empty NO_COLOR is no request (no-color.org)"
    assert plain_text(coloured) == plain


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_escape_codes_only_for_a_terminal_without_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pty

    leader, follower = pty.openpty()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    with os.fdopen(follower, "w") as terminal, (tmp_path / "log").open("w") as file:
        assert colour_allowed(terminal)
        assert not colour_allowed(file)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not colour_allowed(terminal)
        monkeypatch.setenv("NO_COLOR", "")
        assert colour_allowed(terminal)
        monkeypatch.setenv("TERM", "dumb")
        assert not colour_allowed(terminal)
    assert not colour_allowed(terminal), "closed"
    os.close(leader)
