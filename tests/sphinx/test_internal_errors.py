"""An error of sphinx-nbcache itself while a notebook executes is reported as ours, with
its traceback, and never stored as the notebook's failure."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from helpers import ProjectFactory, code, ipynb, nbcache
from sphinx_nbcache.model import CellError, ExecutionResult
from sphinx_nbcache.run.driver import CellClock, _kernels_failure

BUG = """
import os


def setup(app):
    \"\"\"A slip in our own code, as a refactoring could make it: the cell clock looks up
    the start of the next cell; only buggy.ipynb's kernel runs normally into it.\"\"\"
    if not os.environ.get("INJECT_BUG"):
        return
    import time

    from sphinx_nbcache.run.driver import CellClock

    def on_cell_executed(self, cell, cell_index, execute_reply):
        index = cell_index + 1 if self.job.source == "buggy.ipynb" else cell_index
        self.times[cell_index] = time.perf_counter() - self.started[index]

    CellClock.on_cell_executed = on_cell_executed
"""
REPORTS = 'nbcache_report = "report.json"\nnbcache_junit = "junit.xml"\n'
BUGGY = ipynb(code("print('buggy', 'output')"), code("print('second cell')"))
GOOD = ipynb(code("print('good notebook ran')"))


def test_an_error_of_ours_is_reported_as_ours_and_never_cached(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"buggy.ipynb": BUGGY, "good.ipynb": GOOD}, REPORTS + BUG)
    bug = {"INJECT_BUG": "1"}
    build = project.build(env=bug)
    assert build.returncode == 0, build.stderr
    assert build.executed == ["buggy.ipynb", "good.ipynb"]
    (error,) = [w for w in build.warnings if "buggy.ipynb" in w]
    assert "buggy.ipynb: ERROR: sphinx-nbcache failed while executing the notebook" in error
    assert "please report this bug): KeyError: 2;" in error
    assert "Traceback (most recent call last):" in error
    assert error.endswith("[nbcache.internal]")
    traceback = build.stderr.split("Traceback (most recent call last):")[1]
    assert "in on_cell_executed\n" in traceback and "KeyError: 2\n" in traceback
    assert "Executing notebook failed" not in build.stderr
    assert "failed in code cell" not in build.html("buggy")
    assert "buggy output" not in build.html("buggy")  # no outputs of a run we broke
    assert "good notebook ran" in build.html("good")
    report, suite = build.reports("report.json", "junit.xml")
    assert {n["source"]: n["status"] for n in report["notebooks"]} == {
        "buggy.ipynb": "extension-error",
        "good.ipynb": "succeeded",
    }
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")

    # the command line: the same error, as ours, and a non-zero exit status
    cli = nbcache(project, "execute", env=bug)
    assert cli.returncode == 1, cli.stderr
    assert "0 succeeded, 0 failed, 1 error(s) of sphinx-nbcache" in cli.stdout
    assert "error of sphinx-nbcache while executing buggy.ipynb" in cli.stderr
    assert "KeyError: 2" in cli.stderr and "in on_cell_executed" in cli.stderr

    fixed = project.build()
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.executed == ["buggy.ipynb"]  # nothing was stored; good.ipynb was
    assert not fixed.warnings
    assert "buggy output" in fixed.html("buggy")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes, as test_dask")
def test_an_error_of_ours_on_a_dask_worker_comes_back_as_ours(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker runs in this process (a cluster without processes), the build in its
    own: the bug is injected where the notebook executes, on the worker."""
    from distributed import LocalCluster

    def on_cell_executed(self: CellClock, cell: Any, cell_index: int, execute_reply: Any) -> None:
        index = cell_index + 1 if self.job.source == "buggy.ipynb" else cell_index
        self.times[cell_index] = time.perf_counter() - self.started[index]

    monkeypatch.setattr(CellClock, "on_cell_executed", on_cell_executed)
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        conf = (
            f'nbcache_executor = "dask"\nnbcache_dask_scheduler = "{cluster.scheduler_address}"\n'
        )
        project = make_project({"buggy.ipynb": BUGGY, "good.ipynb": GOOD}, conf)
        build = project.build()
    assert build.returncode == 0, build.stderr
    (error,) = [w for w in build.warnings if "buggy.ipynb" in w]
    assert "ERROR: sphinx-nbcache failed while executing the notebook" in error
    assert error.endswith("[nbcache.internal]")
    assert "in on_cell_executed\n" in build.stderr.split("Traceback")[1]
    assert "good notebook ran" in build.html("good")


def test_the_mark_of_an_error_of_ours_survives_json_and_stored_failures_keep_their_format() -> None:
    """Results come back from a Dask worker as JSON; stored entries never carry the mark."""
    fields = {
        "key": "k",
        "source": "a.ipynb",
        "succeeded": False,
        "outputs": [[]],
        "execution_counts": [None],
        "metadata": {},
        "runtime": 0.0,
        "cell_times": [None],
        "finished": "2024-01-01T00:00:00+00:00",
    }
    ours = ExecutionResult(**fields, error=CellError("KeyError", "2", "tb", None, internal=True))
    back = ExecutionResult.from_json(json.loads(json.dumps(ours.to_json())))
    assert back.error is not None and back.error.status == "extension-error"
    cell = ExecutionResult(**fields, error=CellError("KeyError", "2", "tb", 1))
    assert "internal" not in cell.to_json()["error"]
    assert ExecutionResult.from_json(cell.to_json()).error == cell.error


def test_kernel_failures_are_the_notebooks_and_our_runtime_errors_are_ours() -> None:
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError

    def raised(exc: Exception) -> Exception:
        try:
            raise exc
        except Exception as caught:
            return caught

    assert _kernels_failure(DeadKernelError("Kernel died"))
    assert _kernels_failure(NoSuchKernel("nope"))
    assert _kernels_failure(FileNotFoundError("no such kernel executable"))
    assert not _kernels_failure(raised(RuntimeError("dictionary changed size")))
    assert not _kernels_failure(raised(KeyError(2)))
    assert not _kernels_failure(raised(AttributeError("x")))
