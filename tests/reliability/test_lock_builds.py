"""Builds sharing one cache execute each code version once: a build that misses a notebook
another build is executing waits for it and takes its result from the cache. A build
killed while holding locks blocks nobody, and a lock row nobody releases (forged, or of a
machine that went away) delays a build by ``nbcache_lock_timeout`` at most.

Executions are counted as a user would see them: each notebook appends a line to a file
outside the project.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import pytest

from helpers import Build, Project, ProjectFactory, code, ipynb
from sphinx_nbcache.cache.disk import LOCK_PREFIX, JSONOnlyDisk
from sphinx_nbcache.cache.store import Store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

NOTEBOOKS = 4


def notebook(number: int, version: int, runs: Path, gate: Path) -> str:
    """Appends to ``runs`` when it starts, then waits (30 s at most) until ``gate``
    exists."""
    return ipynb(
        code(
            "import pathlib, time\n"
            f"with open({str(runs)!r}, 'a') as log:\n"
            f"    log.write('nb{number} v{version}\\n')\n"
            f"for _ in range(300):\n"
            f"    if pathlib.Path({str(gate)!r}).exists():\n"
            "        break\n"
            "    time.sleep(0.1)\n"
            f"print('nb{number} version {version}')"
        )
    )


def finish(project: Project, name: str, process: subprocess.Popen[str], *seen: str) -> Build:
    stdout, stderr = process.communicate(timeout=300)
    build = Build(
        process.returncode, "".join(seen) + stdout, stderr, project.root / "_build" / name
    )
    assert build.returncode == 0, stderr
    assert build.warnings == []
    return build


def read_until(process: subprocess.Popen[str], text: str) -> str:
    """The build's output up to the first line holding ``text``."""
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed:\n{seen}")


def runs_grow(runs: Path, lines: int) -> None:
    deadline = time.monotonic() + 120
    while not (runs.exists() and len(runs.read_text().splitlines()) >= lines):
        assert time.monotonic() < deadline, "the notebooks never started"
        time.sleep(0.05)


def test_concurrent_builds_execute_each_code_version_once(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    runs, gate = tmp_path / "runs.log", tmp_path / "gate"
    versions = dict.fromkeys(range(NOTEBOOKS), 0)
    project = make_project({f"nb{n}.ipynb": notebook(n, 0, runs, gate) for n in versions})
    unbuffered = {"PYTHONUNBUFFERED": "1"}
    # made certain: one build executes, held at the gate, while two others miss the same
    # notebooks; the gate opens once both wait (test_soak.py counts builds left to chance)
    first = project.start(out="_build/a", env=unbuffered)
    runs_grow(runs, 1)
    others = {name: project.start(out=f"_build/{name}", env=unbuffered) for name in "bc"}
    seen = {name: read_until(process, "waiting for") for name, process in others.items()}
    gate.touch()
    builds = [finish(project, "a", first)]
    builds += [finish(project, name, process, seen[name]) for name, process in others.items()]
    assert sorted(runs.read_text().splitlines()) == [f"nb{n} v0" for n in versions]
    assert builds[0].executed == [f"nb{n}.ipynb" for n in versions]
    for build in builds[1:]:
        assert build.executed == []
        assert build.stdout.count("taken from the cache") == NOTEBOOKS
        assert all("nb3 version 0" in build.html("nb3") for build in builds)
    assert project.kernels() == []


def test_killed_and_forged_lock_holders_block_no_build(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    runs, gate = tmp_path / "runs.log", tmp_path / "gate"
    project = make_project({"nb.ipynb": notebook(0, 0, runs, gate)})
    # a build killed (SIGKILL) while it holds the lock: the next one executes at once
    killed = project.start(out="_build/killed")
    runs_grow(runs, 1)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    gate.touch()
    after = project.build(out="_build/after")
    assert after.returncode == 0, after.stderr
    assert after.executed == ["nb.ipynb"] and "waiting for" not in after.stdout
    assert runs.read_text().splitlines() == ["nb0 v0"] * 2
    # a lock nobody releases (another machine's, or forged, never expiring): the build
    # waits nbcache_lock_timeout seconds, executes, and the row is gone afterwards
    store = Store(project.root / ".nbcache")
    [key] = store.all_keys()
    store.delete([key])
    with diskcache.Cache(str(project.root / ".nbcache"), disk=JSONOnlyDisk) as cache:
        cache.set(LOCK_PREFIX + key, {"host": "elsewhere", "pid": 1, "started": 0.0})
    forged = project.build("-E", "-D", "nbcache_lock_timeout=1", out="_build/forged")
    assert forged.returncode == 0, forged.stderr
    assert forged.executed == ["nb.ipynb"]
    assert "waited 1 s for process 1 on elsewhere to execute it" in forged.stdout
    assert not store.locked(key)
    assert project.kernels() == []
