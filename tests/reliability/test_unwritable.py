"""A cache that cannot be written (a read-only folder, a full disk) costs one warning per
build, never a crash, and loses nothing it held.

Real file systems: a read-only bind mount and a small tmpfs, which need root (as CI and
the developers' machines have); elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Build, ProjectFactory, code, ipynb

FIRST = ipynb(code("print('first ran')"))
SECOND = ipynb(code("print('second ran')"))


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); these tests need root")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    mount("--bind", str(folder), str(folder))
    try:
        mount("-o", "remount,ro,bind", str(folder))
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def store_warnings(build: Build) -> list[str]:
    return [w for w in build.warnings if "[nbcache.store]" in w]


def test_a_read_only_cache_serves_what_it_holds(make_project: ProjectFactory) -> None:
    project = make_project({"first.ipynb": FIRST, "second.ipynb": SECOND})
    assert project.build().returncode == 0
    cache = project.root / ".nbcache"
    before = sorted(p.name for p in cache.rglob("*"))
    project.edit("first.ipynb", "first ran", "first ran, edited")
    with read_only(cache):
        shutil.rmtree(project.root / "_build")
        build = project.build()
        assert build.returncode == 0, build.stderr
        assert build.executed == ["first.ipynb"], "second comes from the read-only cache"
        assert "first ran, edited" in build.html("first")
        assert "second ran" in build.html("second")
        (warning,) = store_warnings(build)
        assert "cannot write to the cache at" in warning
        assert "Traceback" not in build.stderr
        again = project.build()  # incremental: the page whose result could not be kept
        assert again.returncode == 0, again.stderr
        assert again.executed == ["first.ipynb"]
        assert len(store_warnings(again)) == 1
    assert sorted(p.name for p in cache.rglob("*")) == before
    after = project.build()
    assert after.executed == ["first.ipynb"]
    assert project.build().executed == []


def test_a_full_disk_loses_no_stored_entry(make_project: ProjectFactory) -> None:
    project = make_project(
        {"first.ipynb": FIRST, "second.ipynb": SECOND}, 'nbcache_path = "small/cache"\n'
    )
    disk = project.root / "small"
    with small_disk(disk, "4m"):
        assert project.build().returncode == 0
        stats = os.statvfs(disk)
        with (disk / "filler").open("wb") as filler, contextlib.suppress(OSError):
            filler.write(b"\0" * (stats.f_bavail * stats.f_frsize))
        project.edit("first.ipynb", "first ran", "first ran, " + "x" * 200_000)
        for _ in range(2):
            shutil.rmtree(project.root / "_build")
            build = project.build()
            assert build.returncode == 0, build.stderr
            assert build.executed == ["first.ipynb"], "second stays in the cache"
            assert "second ran" in build.html("second")
            assert "first ran, xxx" in build.html("first")
            (warning,) = store_warnings(build)
            assert "cannot write to the cache" in warning
            assert "Traceback" not in build.stderr
        (disk / "filler").unlink()
        assert project.build().executed == ["first.ipynb"]
        shutil.rmtree(project.root / "_build")
        assert project.build().executed == []
