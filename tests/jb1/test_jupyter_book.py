"""``jupyter-book build`` (Jupyter Book 1) of a book that lists sphinx_nbcache in
``sphinx: extra_extensions``: its notebooks execute through sphinx-nbcache, once.

Runs in ``nox -s jb1``, whose environment has ``jupyter-book<2``; skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROGRESS

pytest.importorskip("jupyter_book")

BOOK = Path(__file__).parent.parent / "data" / "jb1_book"
NOTEBOOKS = ["plot.md", "table.ipynb"]


class Book:
    """A copy of tests/data/jb1_book; each notebook appends its name to a file when it
    runs, whoever runs it, so executions are counted outside sphinx-nbcache too."""

    def __init__(self, root: Path, mode: str) -> None:
        self.root = root / "book"
        shutil.copytree(BOOK, self.root)
        config = self.root / "_config.yml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("execute_notebooks: cache", f"execute_notebooks: {mode}"))
        self.runs = root / "executions.txt"
        self.runs.touch()

    def build(self, *args: str) -> tuple[list[str], list[str]]:
        """Build, and return what sphinx-nbcache said it executed and what ran."""
        before = self.runs.read_text(encoding="utf-8").split()
        jupyter_book = Path(sys.executable).with_name("jupyter-book")
        done = subprocess.run(
            [str(jupyter_book), "build", *args, str(self.root)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "JB1_EXECUTIONS": str(self.runs), "NO_COLOR": "1"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "WARNING" not in done.stderr, done.stderr
        executed = sorted(m["source"] for m in PROGRESS.finditer(done.stdout))
        ran = sorted(self.runs.read_text(encoding="utf-8").split()[len(before) :])
        return executed, ran

    def html(self, page: str) -> str:
        return (self.root / "_build" / "html" / f"{page}.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("mode", ["cache", "auto"])
def test_jupyter_book_executes_through_nbcache_once(tmp_path: Path, mode: str) -> None:
    book = Book(tmp_path, mode)
    executed, ran = book.build()
    assert executed == NOTEBOOKS
    assert ran == ["plot", "table"], "each notebook ran once: myst-nb executed none itself"
    executed, ran = book.build("--all")  # every page read again
    assert executed == []
    assert ran == []
    table = book.html("table")
    assert "<table" in table and "Mercury" in table
    plot = book.html("plot")
    assert "<img" in plot and "plot notebook ran" in plot
    assert "JB1_EXECUTIONS" not in plot, "remove-cell still applies"


def test_force_executes_through_nbcache_on_every_build(tmp_path: Path) -> None:
    book = Book(tmp_path, "force")
    for _ in range(2):
        executed, ran = book.build("--all")
        assert executed == NOTEBOOKS
        assert ran == ["plot", "table"]
    assert "Mercury" in book.html("table")
