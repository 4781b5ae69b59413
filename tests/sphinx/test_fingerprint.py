"""The fingerprint of installed packages each page keeps: a reinstall at the same
versions (what ``nox`` does before every session) reads no page again; a new version does."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import Build, ProjectFactory, code, ipynb
from sphinx_nbcache.inputs._fingerprint import fingerprint

READ = re.compile(r"^reading sources\.\.\. \[\s*\d+%\] (\S+)$", re.MULTILINE)


def pages_read(build: Build) -> list[str]:
    """The documents Sphinx read (its plain, uncoloured progress lines)."""
    return sorted(READ.findall(build.stdout))


def install(site: Path, version: str) -> Path:
    """Install a distribution as pip does (again, if it is there): a module and a metadata
    folder written anew, so with new modification times. Returns the metadata folder."""
    site.mkdir(exist_ok=True)
    for old in site.glob("nbcache_fp_pkg-*.dist-info"):
        shutil.rmtree(old)
    (site / "nbcache_fp_pkg.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"nbcache_fp_pkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: nbcache-fp-pkg\nVersion: {version}\n"
    )
    (info / "top_level.txt").write_text("nbcache_fp_pkg\n")
    return info


def test_a_reinstall_at_the_same_version_reads_no_page_again(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    before = install(site, "1.0").stat().st_mtime_ns
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    notebooks = {
        "uses.ipynb": ipynb(code("import nbcache_fp_pkg\nprint(nbcache_fp_pkg.VERSION)")),
        "plain.ipynb": ipynb(code("print('plain')")),
    }
    project = make_project(notebooks)
    assert project.build(env=env).executed == ["plain.ipynb", "uses.ipynb"]

    info = install(site, "1.0")
    os.utime(info, ns=(before + 10**9, before + 10**9))  # however coarse the file system's clock
    again = project.build(env=env)
    assert pages_read(again) == []
    assert again.executed == []

    install(site, "2.0")
    upgraded = project.build(env=env)
    assert pages_read(upgraded) == ["plain", "uses"], "the environment changed: looked up again"
    assert upgraded.executed == ["uses.ipynb"]
    assert "2.0" in upgraded.html("uses")


def test_an_egg_info_is_known_by_its_version_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setuptools develop install's ``name.egg-info`` has no version in its name, and
    each reinstall writes it anew."""

    def develop(version: str) -> None:
        shutil.rmtree(info, ignore_errors=True)
        info.mkdir()
        (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: fp\nVersion: {version}\n\n")
        os.utime(info, ns=(next(clock), next(clock)))

    clock = itertools.count(10**18, 10**9)
    info = tmp_path / "fp.egg-info"
    monkeypatch.syspath_prepend(str(tmp_path))
    develop("1.0")
    installed = fingerprint()
    develop("1.0")
    assert fingerprint() == installed
    develop("1.1")
    assert fingerprint() != installed
