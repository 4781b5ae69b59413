"""Nothing a build started outlives it: kernels, fork servers, and what notebooks start in
sessions of their own, whether the build ends cleanly or is killed (SIGKILL) midway.

Each test kills a real ``sphinx-build`` at a few moments of a cold build; a soak session
kills it more often: ``NBCACHE_SOAK_KILLS=20 pytest tests/reliability/test_kill.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import Project, ProjectFactory, code, ipynb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

DEADLINE = 2.0
"""Seconds within which everything a killed build started must be gone."""
KILLS = int(os.environ.get("NBCACHE_SOAK_KILLS", "2"))
"""Kills per kind of kernel: a few in the suite, many in a soak session."""
DELAYS = (0.0, 0.0, 0.3, 1.0)
"""Seconds between the moment awaited and the kill, taken in turn; a soak session's later
rounds wait a quarter of a second more each time."""
NOTEBOOKS = 3
NORMAL = "nbcache_fork_kernels = False\n"

DETACHED_CHILDREN = """\
import subprocess
subprocess.Popen(["sleep", "600"], start_new_session=True)
subprocess.run("sleep 600 &", shell=True)  # its shell exits: init would adopt it
print("started")
"""
"""Two processes that outlive the cell: one in a session of its own, one whose parent
(the shell) exits at once."""


def alive(project: Project) -> list[str]:
    """Processes still running (not zombies) in the project's folder: whatever a build
    started, kernels and fork servers included, or what a notebook started from them."""
    found = []
    root = project.root.resolve()
    for proc in Path("/proc").iterdir():
        try:
            cwd = (proc / "cwd").resolve()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z" and proc.name.isdigit() and cwd.is_relative_to(root):
            found.append(f"{proc.name}: {args}")
    return found


def detached(project: Project) -> int:
    return sum("sleep 600" in process for process in alive(project))


def left_after_kill(project: Project, pid: int) -> list[str]:
    """Kill ``pid`` as the OOM killer or ``kill -9`` would; what is still alive
    :data:`DEADLINE` seconds later (a moment sooner if all is gone)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while (left := alive(project)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_for(condition: Callable[[], bool], build: subprocess.Popen[str]) -> None:
    """Until ``condition`` holds, or the build has ended."""
    while not condition() and build.poll() is None:
        time.sleep(0.05)


@pytest.fixture
def sleepy(make_project: ProjectFactory) -> Callable[[str], Project]:
    """Notebooks that each start a child in a session of its own, then sleep."""

    def factory(conf_extra: str) -> Project:
        files = {
            f"nb{i}.ipynb": ipynb(
                code(f"# {i}\n{DETACHED_CHILDREN}"), code("import time\ntime.sleep(30)")
            )
            for i in range(NOTEBOOKS)
        }
        return make_project(files, f"nbcache_workers = {NOTEBOOKS}\n" + conf_extra)

    return factory


@pytest.mark.parametrize("conf", ["", NORMAL], ids=["forked", "normal"])
def test_a_killed_build_leaves_no_kernel_and_nothing_they_started(
    sleepy: Callable[[str], Project], conf: str
) -> None:
    project = sleepy(conf)
    for kill in range(KILLS):
        # in turn: as the first kernel (or the fork server) starts, and once every
        # notebook runs and has started its child
        executing = kill % 2 == 1
        process = project.start()
        try:
            if executing:
                wait_for(lambda: detached(project) == 2 * NOTEBOOKS, process)
            else:
                wait_for(lambda: bool(project.kernels()), process)
            assert process.poll() is None, process.communicate()[1]
            time.sleep(DELAYS[kill % len(DELAYS)] + 0.25 * (kill // len(DELAYS)))
            left = left_after_kill(project, process.pid)
        finally:
            process.kill()
            process.communicate()
        assert left == [], f"kill {kill + 1} ({'executing' if executing else 'starting'})"


@pytest.mark.parametrize("conf", ["", NORMAL], ids=["forked", "normal"])
def test_a_finished_build_leaves_nothing_a_notebook_started(
    make_project: ProjectFactory, conf: str
) -> None:
    project = make_project({"a.ipynb": ipynb(code(DETACHED_CHILDREN))}, conf)
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "started" in build.html("a")
    assert alive(project) == []
