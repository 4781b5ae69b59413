"""What the tests share: notebooks written as text, projects on disk, real sphinx-build
runs and ``nbcache`` commands, and what a build printed, parsed as a user reads it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import xmlschema

PROGRESS = re.compile(r"nbcache: \[\d+/\d+\] (?P<source>\S+) (?P<status>executed|failed|timed out)")


def ipynb(*cells: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    """A notebook in .ipynb JSON with a python3 kernelspec and a title cell first."""
    if not cells or cells[0]["cell_type"] != "markdown":
        cells = (markdown("# A notebook"), *cells)
    meta = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        **(metadata or {}),
    }
    return json.dumps({"cells": list(cells), "metadata": meta, "nbformat": 4, "nbformat_minor": 4})


def code(
    source: str,
    tags: Sequence[str] = (),
    outputs: Sequence[Any] = (),
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "metadata": {**({"tags": list(tags)} if tags else {}), **(metadata or {})},
        "source": source,
        "outputs": list(outputs),
        "execution_count": None,
    }


def markdown(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def myst_notebook(body: str) -> str:
    """A MyST markdown notebook with front matter and ``body`` (dedented)."""
    head = "---\nfile_format: mystnb\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
    return head + textwrap.dedent(body)


def percent_script(body: str) -> str:
    """A jupytext percent script with a python3 kernelspec header."""
    head = (
        "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n"
        "#     language: python\n#     name: python3\n# ---\n\n"
    )
    return head + textwrap.dedent(body)


REPORT_SCHEMA = json.loads(
    resources.files("sphinx_nbcache").joinpath("schemas/report.schema.json").read_text()
)
JUNIT_SCHEMA = Path(__file__).parent / "data" / "junit.xsd"

BASE_CONF = """\
project = "test"
extensions = ["sphinx_nbcache"]
nb_execution_mode = "cache"
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
exclude_patterns = ["_build", "jupyter_execute", ".nbcache", "conf.py"]
show_warning_types = True  # the default since Sphinx 8; Sphinx 7.4 shows [nbcache.cell] if set
"""


@dataclasses.dataclass
class Build:
    """One finished sphinx-build run, seen as a user sees it."""

    returncode: int
    stdout: str
    stderr: str
    outdir: Path

    @property
    def executed(self) -> list[str]:
        """Sources the build executed (the progress lines), sorted."""
        return sorted(m["source"] for m in PROGRESS.finditer(self.stdout))

    @property
    def warnings(self) -> list[str]:
        """Each warning or error with its continuation lines (traceback, report path)."""
        found: list[str] = []
        for line in self.stderr.splitlines():
            if "WARNING" in line or "ERROR" in line:
                found.append(line)
            elif found and line and not line.startswith(("[", " ")):
                found[-1] += "\n" + line
        return found

    def html(self, docname: str) -> str:
        return (self.outdir / f"{docname}.html").read_text(encoding="utf-8")

    def reports(self, json_name: str, junit_name: str) -> tuple[dict[str, Any], ET.Element]:
        """The JSON report and the JUnit test suite the build wrote, each checked against
        its schema first: what a tool reading them relies on."""
        report = json.loads((self.outdir / json_name).read_text(encoding="utf-8"))
        jsonschema.validate(report, REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
        junit = self.outdir / junit_name
        xmlschema.XMLSchema(JUNIT_SCHEMA).validate(junit)
        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite is not None
        return report, suite


@dataclasses.dataclass
class Project:
    """A Sphinx project on disk that tests edit and build."""

    root: Path

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def kernels(self) -> list[int]:
        """Kernel processes (and kernel fork servers, whose command line forked kernels
        keep) still running in this project's folder (Linux: /proc)."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cwd = (proc / "cwd").resolve()
                args = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            kernel = b"ipykernel" in args or b"_forkserver.py" in args
            if kernel and cwd.is_relative_to(self.root.resolve()):
                found.append(int(proc.name))
        return found

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.root / name
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {name}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def start(
        self, *args: str, out: str = "_build/html", env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            # a CI runner may set FORCE_COLOR or CI=true, with which Sphinx redraws one
            # line ("\r") even into a pipe; tests read the log as a plain file would hold it
            [sys.executable, "-m", "sphinx", "-b", "html", "--no-color", *args, self.root, out],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
            preexec_fn=_answer_ctrl_c if sys.platform != "win32" else None,
        )

    def build(
        self, *args: str, out: str = "_build/html", env: dict[str, str] | None = None
    ) -> Build:
        process = self.start(*args, out=out, env=env)
        stdout, stderr = process.communicate(timeout=300)
        return Build(process.returncode, stdout, stderr, self.root / out)


def nbcache(
    project: Project, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``nbcache`` command, run in the project's folder."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx_nbcache", *args],
        cwd=cwd or project.root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


R = TypeVar("R")


def build_interrupted(
    project: Project, after: str, at_interrupt: Callable[[int], R]
) -> tuple[Build, R]:
    """Start a build and press Ctrl-C once a line of its output contains ``after``;
    ``at_interrupt(pid)`` runs just before, and its value comes back with the build."""
    process = project.start(env={"PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if after in line:
                break
        seen = at_interrupt(process.pid)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Build(process.returncode, stdout, stderr, project.root / "_build/html"), seen


def _answer_ctrl_c() -> None:
    """Builds answer SIGINT as under a terminal, even when the tests themselves run as a
    background job, which starts every child with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


ProjectFactory = Callable[..., Project]
