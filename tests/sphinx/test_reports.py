"""Execution reports: JSON, JUnit XML, the ``nbcache-report`` table and the summary line."""

from __future__ import annotations

import json
import re
import shutil

import jsonschema

from helpers import REPORT_SCHEMA, ProjectFactory, code, ipynb, markdown, myst_notebook, nbcache

GOOD = ipynb(code("print('good')"), code("import time\ntime.sleep(1)"))
BAD = myst_notebook(
    """\
    # Bad

    ```{code-cell} ipython3
    x = 1
    ```

    ```{code-cell} ipython3
    raise KeyError('missing on purpose')
    ```
    """
)
CONF = 'nbcache_report = "reports/nbcache.json"\nnbcache_junit = "junit.xml"\n'
REPORT_PAGE = "# Execution\n\n```{nbcache-report}\n```\n"


def test_json_report_has_every_notebook_with_status_cells_and_error(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.md": BAD, "execution.md": REPORT_PAGE}, CONF)
    build = project.build()
    assert build.returncode == 0, build.stderr
    report = json.loads((build.outdir / "reports" / "nbcache.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert report["schema"] == 1
    assert report["project"] == "test"
    assert report["summary"] == {
        **report["summary"],
        "notebooks": 2,
        "executed": 2,
        "from_cache": 0,
        "failed": 1,
        "timed_out": 0,
    }
    good, bad = report["notebooks"][1], report["notebooks"][0]
    assert (good["docname"], good["source"], good["status"]) == ("good", "good.ipynb", "succeeded")
    assert good["origin"] == "executed" and good["this_build"]
    assert [c["index"] for c in good["cells"]] == [1, 2]
    slowest = max(good["cells"], key=lambda c: c["seconds"])
    assert slowest["index"] == 2 and slowest["seconds"] >= 1
    assert bad["status"] == "cell-error"
    assert bad["error"]["name"] == "KeyError"
    assert bad["error"]["cell_index"] == 2
    assert bad["error"]["line"] == 14
    assert "missing on purpose" in bad["error"]["traceback"]
    assert "\x1b[" not in bad["error"]["traceback"], "colour codes are stripped"
    assert re.search(
        r"nbcache: 2 notebook\(s\): 2 executed, 0 from cache, 1 failed; [\d.]+ s executing, "
        r"0\.0 s saved by the cache",
        build.stdout,
    )

    shutil.rmtree(build.outdir)
    again = project.build()
    report = json.loads((again.outdir / "reports" / "nbcache.json").read_text())
    assert report["summary"]["from_cache"] == 2
    assert report["summary"]["saved_seconds"] >= 1
    assert {n["origin"] for n in report["notebooks"]} == {"cache"}

    project.edit("bad.md", "missing on purpose", "still missing")
    incremental = project.build()
    report = json.loads((incremental.outdir / "reports" / "nbcache.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert [(n["docname"], n["this_build"]) for n in report["notebooks"]] == [
        ("bad", True),
        ("good", False),
    ]
    assert report["summary"]["executed"] == 1


def test_junit_report_validates_and_marks_the_failure(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.md": BAD}, CONF)
    build = project.build()
    _, suite = build.reports("reports/nbcache.json", "junit.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["good"].find("failure") is None
    failure = cases["bad"].find("failure")
    assert failure is not None
    assert failure.get("type") == "KeyError"
    assert failure.get("message") == "KeyError: 'missing on purpose' (code cell 2)"
    assert "raise KeyError" in (failure.text or "")
    assert cases["bad"].get("file") == "bad.md"


def test_report_directive_renders_a_linked_table_kept_up_to_date(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.md": BAD, "execution.md": REPORT_PAGE}, CONF)
    build = project.build()
    page = build.html("execution")
    rows = re.findall(r"<tr class=\"row-(?:odd|even)\">(.*?)</tr>", page, re.S)
    assert len(rows) == 3  # the header and two notebooks
    assert 'href="bad.html"' in rows[1] and "cell error" in rows[1]
    assert 'href="good.html"' in rows[2] and "succeeded" in rows[2]
    assert re.search(r"code cell 2: 1\.\d\d s", rows[2]), "slowest cell first"

    project.edit("bad.md", "raise KeyError('missing on purpose')", "print('fixed')")
    fixed = project.build()
    assert fixed.executed == ["bad.md"]
    rows = re.findall(r"<tr class=\"row-(?:odd|even)\">(.*?)</tr>", fixed.html("execution"), re.S)
    assert "succeeded" in rows[1], "the unchanged report page is written again"


PROSE_BETWEEN = ipynb(
    code("x = 1"),
    markdown("Prose between code cells."),
    code("import time\ntime.sleep(0.3)"),
    markdown("More prose."),
    code("x = 2\nraise KeyError('third code cell')"),
)


def test_every_message_numbers_a_cell_as_jupyter_does(make_project: ProjectFactory) -> None:
    """The failing cell is the third code cell and the sixth cell: every message says
    ``code cell 3``, as its traceback says ``Cell In[3]``."""
    files = {"prose.ipynb": PROSE_BETWEEN, "execution.md": REPORT_PAGE}
    project = make_project(files, CONF)
    build = project.build()
    (warning,) = [w for w in build.warnings if "prose.ipynb" in w]
    assert "Executing notebook failed in code cell 3: KeyError: 'third code cell'" in warning
    assert "(code cell 3): KeyError" in build.stdout
    report, suite = build.reports("reports/nbcache.json", "junit.xml")
    (notebook,) = report["notebooks"]
    assert (notebook["error"]["cell"], notebook["error"]["cell_index"]) == (3, 5)
    assert "Cell In[3], line 2" in notebook["error"]["traceback"]
    assert [(c["cell"], c["index"]) for c in notebook["cells"]] == [(1, 1), (2, 3), (3, 5)]
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "KeyError: 'third code cell' (code cell 3)"
    assert re.search(r"code cell 2: 0\.[3-9]\d s", build.html("execution"))
    shown = nbcache(project, "show", "prose.ipynb")
    assert "KeyError: 'third code cell' (in code cell 3)" in shown.stdout
    rows = re.findall(r"^(\d)\s+[\d.]+$", shown.stdout, re.M)
    assert rows == ["1", "2", "3"]
    assert json.loads(nbcache(project, "show", "--json", "prose.ipynb").stdout)["error_cell"] == 3


def test_time_saved_counts_only_successful_results(make_project: ProjectFactory) -> None:
    """A timed-out notebook from the cache saves nothing: its runtime is its time limit."""
    slow = ipynb(code("import time\ntime.sleep(30)"))
    project = make_project(
        {"good.ipynb": GOOD, "slow.ipynb": slow}, CONF + "nb_execution_timeout = 2\n"
    )
    first = project.build()
    assert first.executed == ["good.ipynb", "slow.ipynb"]
    shutil.rmtree(first.outdir)
    again = project.build()
    assert again.executed == []
    summary = json.loads((again.outdir / "reports" / "nbcache.json").read_text())["summary"]
    runtimes = {
        n["docname"]: n["runtime"]
        for n in json.loads((again.outdir / "reports" / "nbcache.json").read_text())["notebooks"]
    }
    assert (summary["from_cache"], summary["timed_out"]) == (2, 1)
    assert runtimes["slow"] >= 2
    assert summary["saved_seconds"] == round(runtimes["good"], 3)
    assert f"{runtimes['good']:.1f} s saved by the cache" in again.stdout
