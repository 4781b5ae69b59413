"""Bad input gets a located message and the rest of the build goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from helpers import (
    BASE_CONF,
    Build,
    Project,
    ProjectFactory,
    build_interrupted,
    code,
    ipynb,
    myst_notebook,
    nbcache,
    percent_script,
)
from sphinx_nbcache.cache.store import Store
from sphinx_nbcache.notebook.read import code_cell_lines

RETRY = "nbcache_retry_failed = True\n"
GOOD = ipynb(code("print('good notebook ran')"))
BAD_IPYNB = ipynb(code("x = 1"), code("1 / 0"), code("print('never')"))
BAD_MD = myst_notebook(
    """\
    # Failing

    ```{code-cell} ipython3
    x = 1
    ```

    ```{code-cell} ipython3
    raise ValueError('broken on purpose')
    ```
    """
)
BAD_PY = percent_script(
    """    # %% [markdown]
    # # Failing script
    # x = 1

    # %%
    x = 1
    # %time x

    # %%
    x = 1
    raise ValueError('broken script')
    """
)


def test_failing_cell_warns_at_its_location(make_project: ProjectFactory) -> None:
    files = {"good.ipynb": GOOD, "bad.ipynb": BAD_IPYNB, "badmd.md": BAD_MD, "badpy.py": BAD_PY}
    project = make_project(files)
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "good notebook ran" in build.html("good")
    md_warning = [w for w in build.warnings if "badmd.md" in w]
    assert len(md_warning) == 1
    assert (
        "badmd.md:14: WARNING: Executing notebook failed in code cell 2: ValueError: "
        in md_warning[0]
    )
    assert md_warning[0].endswith("[nbcache.cell]")
    (py_warning,) = [w for w in build.warnings if "badpy.py" in w]
    assert "badpy.py:18: WARNING: Executing notebook failed in code cell 2: ValueError: broken" in (
        py_warning
    )
    ipynb_warning = [w for w in build.warnings if "bad.ipynb" in w]
    assert len(ipynb_warning) == 1
    assert (
        "Executing notebook failed in code cell 2: ZeroDivisionError: division by zero"
        in (ipynb_warning[0])
    )
    assert "ZeroDivisionError" in build.html("bad")
    assert build.html("bad").count("never") == 1  # the source, not an output
    assert (build.outdir / "reports" / "bad.err.log").read_text().count("ZeroDivisionError")


def test_jupytext_cells_are_found_by_their_code_in_order() -> None:
    """The line of each code cell of a jupytext file, where no reader keeps a source map."""
    text = "x = 1\n\n# +\na = 1\n\nb = 2\n# -\n\n# x = 1\n# %time a\n\nx = 1\n"
    notebook = jupytext.reads(text, fmt="py:light")
    assert [cell.source for cell in notebook.cells] == [
        "x = 1",
        "a = 1\n\nb = 2",
        "# x = 1\n%time a",
        "x = 1",
    ]
    assert code_cell_lines(notebook, text) == {0: 1, 1: 4, 2: 9, 3: 12}
    notebook.cells[1].source = "changed = True"  # not in the text: no line, the rest found
    assert code_cell_lines(notebook, text) == {0: 1, 2: 9, 3: 12}


def test_failures_are_cached_and_retried_only_when_asked(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.ipynb": BAD_IPYNB})
    assert project.build().executed == ["bad.ipynb", "good.ipynb"]
    shutil.rmtree(project.root / "_build")
    cached = project.build()
    assert cached.executed == []
    assert any("ZeroDivisionError" in w for w in cached.warnings)
    shutil.rmtree(project.root / "_build")
    project.edit(
        "conf.py",
        'nb_execution_mode = "cache"',
        'nb_execution_mode = "cache"\nnbcache_retry_failed = True',
    )
    retried = project.build()
    assert retried.executed == ["bad.ipynb"]


def test_raise_on_error_fails_the_build_after_reporting_every_failure(
    make_project: ProjectFactory,
) -> None:
    files = {"good.ipynb": GOOD, "bad.ipynb": BAD_IPYNB, "badmd.md": BAD_MD}
    project = make_project(
        files, 'nb_execution_raise_on_error = True\nnbcache_report = "report.json"\n'
    )
    build = project.build()
    assert build.returncode == 1
    errors = [w for w in build.warnings if "ERROR: Executing notebook failed in code cell 2" in w]
    assert len(errors) == 2, "every failure is reported, not only the first"
    assert "good notebook ran" in build.html("good")
    assert (build.outdir / "report.json").is_file()
    assert build.stderr.rstrip().endswith(
        "Notebook execution failed:\n2 notebook(s) failed with nb_execution_raise_on_error"
        " = True (each reported above): bad.ipynb, badmd.md"
    )
    assert "Traceback" not in build.stderr
    status = nbcache(project, "status", "--json")
    states = {n["source"]: n["state"] for n in json.loads(status.stdout)}
    assert states == {"bad.ipynb": "failed", "badmd.md": "failed", "good.ipynb": "fresh"}


API_BUILD = """\
import sys
from myst_nb.core.execute.base import ExecutionError
from sphinx.application import Sphinx

app = Sphinx(".", ".", "_build/api", "_build/api-doctrees", "html", status=None)
try:
    app.build()
except ExecutionError as error:
    print("raised", type(error).__name__, error.docnames)
else:
    print("returned", app.statuscode)
"""


def test_raise_on_error_makes_app_build_raise_mystnbs_execution_error(
    make_project: ProjectFactory,
) -> None:
    """As under myst-nb, a program building through Sphinx's API gets an exception."""
    files = {"good.ipynb": GOOD, "bad.ipynb": BAD_IPYNB, "badmd.md": BAD_MD}
    project = make_project(files, "nb_execution_raise_on_error = True\n")
    run = subprocess.run(
        [sys.executable, "-c", API_BUILD],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout.splitlines()[-1] == "raised NotebookExecutionError ['bad', 'badmd']"
    assert run.stderr.count("ERROR: Executing notebook failed in code cell 2") == 2
    assert "good notebook ran" in (project.root / "_build/api/good.html").read_text()


def test_log_lines_carry_mystnb_phrases(make_project: ProjectFactory) -> None:
    """CI scripts written for myst-nb's cache mode look for its words in the log."""
    project = make_project({"good.ipynb": GOOD, "bad.ipynb": BAD_IPYNB})
    first = project.build()
    assert "nbcache: good.ipynb: Cached executed notebook (executed in " in first.stdout
    assert "bad.ipynb: WARNING: Executing notebook failed in code cell 2: ZeroDivisionError" in (
        first.stderr
    )
    again = project.build("-E")
    assert again.executed == []
    assert "nbcache: good.ipynb: Using cached notebook (executed " in again.stdout
    assert "Cached executed notebook" not in again.stdout
    assert "bad.ipynb: WARNING: Executing notebook failed in code cell 2: ZeroDivisionError" in (
        again.stderr
    )


def test_unchanged_failure_fails_every_incremental_build_without_executing(
    make_project: ProjectFactory,
) -> None:
    allowed = ipynb(code("1 / 0", tags=["raises-exception"]))
    files = {"good.ipynb": GOOD, "badmd.md": BAD_MD, "allowed.ipynb": allowed}
    conf = 'nb_execution_raise_on_error = True\nnbcache_report = "report.json"\n'
    project = make_project(files, conf)
    first = project.build()
    assert first.returncode == 1
    assert first.executed == ["allowed.ipynb", "badmd.md", "good.ipynb"]

    again = project.build()  # the same _build, nothing changed
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.executed == []
    (error,) = again.warnings
    assert (
        "badmd.md:14: ERROR: Executing notebook failed in code cell 2: ValueError: broken" in error
    )
    assert "[nbcache.cell]\nNotebook execution failed:\n" in error
    assert "nbcache: 1 notebook(s): 0 executed, 1 from cache, 1 failed;" in again.stdout
    report = json.loads((again.outdir / "report.json").read_text())
    rows = [(n["docname"], n["status"], n["origin"], n["this_build"]) for n in report["notebooks"]]
    assert rows == [
        ("allowed", "succeeded", "executed", False),  # an allowed error is no failure
        ("badmd", "cell-error", "cache", True),
        ("good", "succeeded", "executed", False),  # not read again
    ]


def test_show_tb_puts_the_traceback_in_the_log(make_project: ProjectFactory) -> None:
    project = make_project({"bad.ipynb": BAD_IPYNB}, "nb_execution_show_tb = True\n")
    build = project.build()
    assert "Traceback" in build.stderr or "----> 1 1 / 0" in build.stderr
    assert "1 / 0" in build.stderr


def test_damaged_entry_is_reexecuted_not_rendered(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD})
    project.build()
    cache = Store(project.root / ".nbcache").cache
    (key,) = list(cache)
    envelope = cache[key]
    envelope["result"]["outputs"][0][0]["text"] = "forged output\n"
    cache[key] = envelope
    cache.close()
    shutil.rmtree(project.root / "_build")
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["good.ipynb"]
    assert "forged output" not in build.html("good")
    assert "good notebook ran" in build.html("good")
    (warning,) = build.warnings
    assert "good.ipynb: WARNING: cache entry does not match its checksum" in warning
    assert "[nbcache.cache]" in warning


def test_unreadable_notebook_warns_and_the_build_goes_on(make_project: ProjectFactory) -> None:
    project = make_project(
        {"good.ipynb": GOOD, "broken.ipynb": '{"cells": [ not json'},
        'nbcache_report = "report.json"\n',
    )
    build = project.build()
    assert build.returncode == 0, build.stderr
    (warning,) = [w for w in build.warnings if "broken.ipynb" in w]
    assert "notebook could not be read" in warning
    assert "[nbcache.read]" in warning
    assert "good notebook ran" in build.html("good")
    report = json.loads((build.outdir / "report.json").read_text())
    assert [(n["source"], n["status"], n["origin"]) for n in report["notebooks"]] == [
        ("broken.ipynb", "read-error", "none"),
        ("good.ipynb", "succeeded", "executed"),
    ]
    if sys.platform.startswith("linux"):
        assert project.kernels() == []
    strict = project.build("-E", "-D", "nb_execution_raise_on_error=1")
    assert strict.returncode == 1
    (error,) = [w for w in strict.warnings if "broken.ipynb" in w]
    assert ": ERROR: notebook could not be read" in error


def test_missing_kernel_fails_that_notebook_only(make_project: ProjectFactory) -> None:
    missing = GOOD.replace('"name": "python3"', '"name": "no-such-kernel"')
    project = make_project({"good.ipynb": GOOD, "missing.ipynb": missing})
    build = project.build()
    assert build.returncode == 0, build.stderr
    (warning,) = [w for w in build.warnings if "missing.ipynb" in w]
    assert "NoSuchKernel" in warning
    assert "good notebook ran" in build.html("good")
    again = project.build()
    assert again.executed == ["missing.ipynb"]  # not cached: the kernel may exist next time


def test_bad_config_values_fail_at_config_inited_one_line_each(
    make_project: ProjectFactory,
) -> None:
    project: Project = make_project(
        {"good.ipynb": GOOD},
        "nbcache_workers = 0\nnbcache_retry_failed = 'yes'\nnbcache_path = 3\n"
        "nbcache_env_vars = 'HOME'\nnbcache_artefact_max_size = -1\n"
        "nbcache_kernel_preload = ['numpy', 'not a module']\nnbcache_fork_kernels = False\n"
        "nbcache_secret_env = 'not a name'\n",
    )
    build = project.build()
    assert build.returncode == 2
    assert "nbcache_workers must be a positive integer or None" in build.stderr
    assert "nbcache_retry_failed must be True or False, not 'yes'" in build.stderr
    assert "nbcache_path must be a path" in build.stderr
    assert "nbcache_env_vars must be a list of environment variable names, not 'HOME'" in (
        build.stderr
    )
    assert "nbcache_artefact_max_size must be a number of bytes" in build.stderr
    assert "nbcache_kernel_preload must be a list of module names" in build.stderr
    assert "nbcache_kernel_preload needs nbcache_fork_kernels = True" in build.stderr
    assert "nbcache_secret_env must be the name of an environment variable" in build.stderr
    assert build.stderr.count("[nbcache.config]") == 8
    assert build.stderr.endswith(
        "\nConfiguration error:\n8 invalid nbcache configuration value(s), listed above\n"
    ), "one plain ending: no traceback, no request to report a bug to Sphinx"
    assert "Traceback" not in build.stderr and "open an issue" not in build.stderr
    assert not (project.root / ".nbcache").exists()
    project.write(
        "conf.py",
        BASE_CONF + "nbcache_kernel_preload = ['json', 'nmupy.linalg']\n",
    )
    missing = project.build()
    assert missing.returncode == 2
    assert "nbcache_kernel_preload names 'nmupy.linalg', which is not installed" in (missing.stderr)


def test_settings_can_be_given_on_the_command_line(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD})
    build = project.build("-D", "nbcache_workers=3", "-D", "nbcache_kernel_preload=json,csv")
    assert build.returncode == 0, build.stderr
    assert not build.warnings
    assert "3 at a time" in build.stdout
    assert "good notebook ran" in build.html("good")


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@LINUX_ONLY
def test_each_failure_kind_warns_where_it_happened_and_leaves_no_kernel(
    make_project: ProjectFactory,
) -> None:
    files = {
        "good.ipynb": GOOD,
        "error.md": BAD_MD,
        "slow.ipynb": ipynb(
            code("x = 1"),
            code("import time\ntime.sleep(60)"),
            metadata={"execution": {"timeout": 2}},
        ),
        "exits.ipynb": ipynb(code("import os\nos._exit(1)")),
        "segfault.ipynb": ipynb(code("import ctypes\nctypes.string_at(0)")),
        "killed.ipynb": ipynb(code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")),
        "asks.ipynb": ipynb(code("name = input('your name? ')")),
        "broken.ipynb": '{"cells": [ not json',
    }
    project = make_project(files, 'nbcache_report = "report.json"\nnbcache_junit = "junit.xml"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "good notebook ran" in build.html("good")
    report, suite = build.reports("report.json", "junit.xml")
    assert {n["source"]: n["status"] for n in report["notebooks"]} == {
        "good.ipynb": "succeeded",
        "error.md": "cell-error",
        "slow.ipynb": "timeout",
        "exits.ipynb": "kernel-error",
        "segfault.ipynb": "kernel-error",
        "killed.ipynb": "kernel-error",
        "asks.ipynb": "cell-error",
        "broken.ipynb": "read-error",
    }
    first = {n["source"]: n for n in report["notebooks"]}
    assert {source: n["origin"] for source, n in first.items()} == {
        **dict.fromkeys(files, "executed"),
        "broken.ipynb": "none",
    }
    assert first["slow.ipynb"]["runtime"] >= 2
    assert first["broken.ipynb"]["runtime"] == 0
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "2", "5")
    cases = {case.get("file"): case for case in suite.iter("testcase")}
    for source, kind in [
        ("slow.ipynb", "CellTimeoutError"),
        ("exits.ipynb", "DeadKernelError"),
        ("broken.ipynb", "NotebookReadError"),
    ]:
        error = cases[source].find("error")
        assert error is not None and error.get("type") == kind, source
    assert cases["broken.ipynb"].findtext("system-out") == "not executed"
    assert float(cases["slow.ipynb"].get("time", "")) >= 2

    def warning(name: str) -> str:
        (found,) = [w for w in build.warnings if f"{name}:" in w]
        return found

    def ours(run: Build) -> list[str]:
        """Not Sphinx's own."""
        return sorted(w for w in run.warnings if "[nbcache." in w)

    assert "error.md:14: WARNING: Executing notebook failed in code cell 2: ValueError: broken" in (
        warning("error.md")
    )
    assert warning("error.md").endswith("[nbcache.cell]")
    assert (
        "slow.ipynb: WARNING: Executing notebook failed (timed out) in code cell 2: "
        "CellTimeoutError: " in warning("slow.ipynb")
    )
    assert "the cell did not finish within 2 s\n" in warning("slow.ipynb")
    assert warning("slow.ipynb").endswith("slow.err.log) [nbcache.timeout]")
    for name in ("exits", "segfault", "killed"):
        assert (
            f"{name}.ipynb: WARNING: Executing notebook failed (lost its kernel) in code cell 1: "
            "DeadKernelError" in warning(f"{name}.ipynb")
        )
        assert warning(f"{name}.ipynb").endswith("[nbcache.kernel]")
    assert (
        "asks.ipynb: WARNING: Executing notebook failed in code cell 1: StdinNotImplementedError"
        in (warning("asks.ipynb"))
    )
    assert "(a notebook cannot read input() during a build)" in warning("asks.ipynb")
    assert "broken.ipynb:1: WARNING: notebook could not be read: not valid JSON: " in warning(
        "broken.ipynb"
    )
    assert project.kernels() == []

    incremental = project.build()
    assert incremental.executed == [], "failures are cached"
    assert ours(incremental) == ours(build)
    report, suite = incremental.reports("report.json", "junit.xml")
    assert {n["source"] for n in report["notebooks"] if n["this_build"]} == set(files) - {
        "good.ipynb"
    }
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("7", "2", "5")

    again = project.build("-E")
    assert again.executed == [], "failures are cached"
    assert ours(again) == ours(build)
    report, suite = again.reports("report.json", "junit.xml")
    cached = [n for n in report["notebooks"] if n["source"] != "broken.ipynb"]
    for notebook in cached:
        executed = first[notebook["source"]]
        assert notebook["origin"] == "cache"
        assert (notebook["runtime"], notebook["finished"], notebook["cells"]) == (
            executed["runtime"],
            executed["finished"],
            executed["cells"],
        )
    assert report["summary"] == {
        **report["summary"],
        "notebooks": 8,
        "executed": 0,
        "from_cache": 7,
        "failed": 7,
        "timed_out": 1,
        "execution_seconds": 0,
    }
    assert report["summary"]["saved_seconds"] == pytest.approx(
        sum(n["runtime"] for n in cached if n["status"] == "succeeded"), abs=0.001
    ), "failures from the cache save nothing"
    assert suite.get("time") == "0.000"
    for case in suite.iter("testcase"):
        if case.get("file") != "broken.ipynb":
            assert case.get("time") == "0.000"
            assert case.findtext("system-out", "").startswith("outputs from the cache, executed ")

    strict = project.build("-E", "-D", "nb_execution_raise_on_error=1")
    assert strict.returncode == 1
    assert len([w for w in strict.warnings if ": ERROR: Executing notebook failed" in w]) == 6
    assert "good notebook ran" in strict.html("good")

    quiet = project.build("-E", "-D", "suppress_warnings=nbcache.kernel,nbcache.timeout")
    assert sorted(w.split(":")[0].rsplit("/", 1)[-1] for w in ours(quiet)) == [
        "asks.ipynb",
        "broken.ipynb",
        "error.md",
    ]


def test_time_limits_per_cell_and_per_notebook(make_project: ProjectFactory) -> None:
    nap = "import time\ntime.sleep(1.5)"
    files = {
        "cell.md": myst_notebook(
            """\
            # A cell with its own limit

            ```{code-cell} ipython3
            ---
            mystnb:
              execution_timeout: 1
            ---
            import time
            time.sleep(60)
            ```
            """
        ),
        "whole.ipynb": ipynb(code(nap), code(nap), code(nap), code("print('all done')")),
    }
    project = make_project(files, "nb_execution_timeout = 60\nnbcache_notebook_timeout = 2\n")
    build = project.build()
    (cell,) = [w for w in build.warnings if "cell.md" in w]
    assert (
        "cell.md:10: WARNING: Executing notebook failed (timed out) in code cell 1: "
        "CellTimeoutError: "
        "the cell did not finish within 1 s" in cell
    )
    (whole,) = [w for w in build.warnings if "whole.ipynb" in w]
    assert (
        "(timed out) in code cell 2: NotebookTimeoutError: the notebook did not finish within 2 s"
        " (nbcache_notebook_timeout)" in whole
    )
    assert build.html("whole").count("all done") == 1, "the source only, never an output"

    unchanged = project.build("-E")
    assert unchanged.executed == []
    retried = project.build("-D", "nbcache_retry_failed=1")  # incremental: failures are read
    assert retried.executed == ["cell.md", "whole.ipynb"], "a cached timeout is retried too"
    assert len([w for w in retried.warnings if "[nbcache.timeout]" in w]) == 2
    more_time = project.build("-E", "-D", "nbcache_notebook_timeout=30")
    assert more_time.executed == ["whole.ipynb"], "only what ran out of that limit runs again"
    assert not [w for w in more_time.warnings if "whole.ipynb" in w]
    project.edit("cell.md", "execution_timeout: 1", "execution_timeout: 2")
    assert project.build().executed == ["cell.md"]


def test_notebook_limit_applies_when_cells_have_no_limit(make_project: ProjectFactory) -> None:
    """myst-nb spells "no limit per cell" -1 (the setting) or 0 (notebook metadata)."""
    sleeps = code("import time\ntime.sleep(60)")
    files = {
        "unlimited.ipynb": ipynb(code("x = 1"), sleeps),
        "zero.ipynb": ipynb(code("x = 1"), sleeps, metadata={"execution": {"timeout": 0}}),
    }
    project = make_project(files, "nb_execution_timeout = -1\nnbcache_notebook_timeout = 2\n")
    build = project.build()
    assert build.returncode == 0, build.stderr
    for name in files:
        (warning,) = [w for w in build.warnings if name in w]
        assert (
            f"{name}: WARNING: Executing notebook failed (timed out) in code cell 2: "
            "NotebookTimeoutError: the notebook did not finish within 2 s "
            "(nbcache_notebook_timeout)" in warning
        )
        assert warning.endswith("[nbcache.timeout]")


def test_kernel_that_dies_while_starting_is_started_again(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A real kernelspec whose first launch exits at once, as a port clash makes it do."""
    marker = tmp_path / "launched-once"
    launcher = tmp_path / "flaky_launcher.py"
    launcher.write_text(
        "import os, pathlib, runpy, sys\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    os._exit(1)\n"
        "sys.argv[0] = 'ipykernel_launcher'\n"
        "runpy.run_module('ipykernel_launcher', run_name='__main__')\n"
    )
    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    argv = [sys.executable, str(launcher), "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "display_name": "Flaky",
                "language": "python",
                "metadata": {"supported_encryption": ["curve"]},
            }
        )
    )
    notebook = GOOD.replace('"name": "python3"', '"name": "flaky"')
    project = make_project({"flaky.ipynb": notebook})
    build = project.build(env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
    assert build.returncode == 0, build.stderr
    assert marker.exists()
    assert build.warnings == []
    assert "good notebook ran" in build.html("flaky")


def _kernel_pids(parent: int) -> list[int]:
    """The build's kernel fork server and the kernels it forked (whose command line is the
    server's), or kernels the build started itself."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    rows = [line.split(None, 2) for line in table.stdout.splitlines()]
    mine = {
        int(pid)
        for pid, ppid, args in rows
        if int(ppid) == parent and ("ipykernel" in args or "_forkserver.py" in args)
    }
    return sorted(mine | {int(pid) for pid, ppid, _ in rows if int(ppid) in mine})


def _alive(pid: int) -> bool:
    """Running, that is: a zombie (exited, not yet reaped by whoever adopted it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_every_kernel_and_keeps_finished_results(
    make_project: ProjectFactory,
) -> None:
    slow1 = ipynb(code("import time\ntime.sleep(120)"))
    slow2 = ipynb(code("import time\ntime.sleep(121)"))
    project = make_project({"fast.ipynb": GOOD, "slow1.ipynb": slow1, "slow2.ipynb": slow2})
    build, kernels = build_interrupted(project, "fast.ipynb executed", _kernel_pids)
    assert len(kernels) == 3  # the fork server and the two slow notebooks' kernels
    assert build.returncode != 0, build.stdout + build.stderr
    assert "Interrupted" in build.stderr
    (told,) = [line for line in build.stdout.splitlines() if "nbcache: interrupted" in line]
    assert told.startswith("nbcache: interrupted; 1 of 3 notebook(s) finished; "), told
    assert "slow1.ipynb" in told or "2 not started" in told
    assert told.endswith("Finished ones are in the cache; the rest execute next time.")
    assert not [pid for pid in kernels if _alive(pid)], build.stdout + build.stderr
    if sys.platform.startswith("linux"):
        assert project.kernels() == []
    store = Store(project.root / ".nbcache")
    stored = [store.get(key) for key in store.cache]
    assert [result.source for result in stored if result] == ["fast.ipynb"]
