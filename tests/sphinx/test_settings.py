"""myst-nb's execution settings behave as documented when sphinx-nbcache executes."""

from __future__ import annotations

import json
import shutil

from helpers import ProjectFactory, code, ipynb, markdown, myst_notebook

PRINTS = ipynb(code("print('computed', 2 + 3)"))
PRESET = ipynb(
    code(
        "print('computed', 2 + 3)",
        outputs=[{"output_type": "stream", "name": "stdout", "text": "stored output\n"}],
    )
)


def test_off_executes_nothing_and_stores_nothing(make_project: ProjectFactory) -> None:
    project = make_project({"nb.ipynb": PRINTS}, 'nb_execution_mode = "off"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "computed 5" not in build.html("nb")
    assert not (project.root / ".nbcache").exists()


def test_inline_is_left_to_myst_nb(make_project: ProjectFactory) -> None:
    project = make_project({"nb.ipynb": PRINTS}, 'nb_execution_mode = "inline"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "computed 5" in build.html("nb")
    assert not (project.root / ".nbcache").exists()


def test_auto_keeps_notebooks_that_have_all_outputs(make_project: ProjectFactory) -> None:
    files = {"preset.ipynb": PRESET, "fresh.ipynb": PRINTS}
    project = make_project(files, 'nb_execution_mode = "auto"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["fresh.ipynb"]
    assert "stored output" in build.html("preset")
    assert "computed 5" in build.html("fresh")
    shutil.rmtree(project.root / "_build")
    assert project.build().executed == []


def test_force_executes_every_time_and_still_stores(make_project: ProjectFactory) -> None:
    project = make_project({"nb.ipynb": PRINTS}, 'nb_execution_mode = "force"\n')
    assert project.build().executed == ["nb.ipynb"]
    shutil.rmtree(project.root / "_build")
    again = project.build()
    assert again.executed == ["nb.ipynb"]
    assert "computed 5" in again.html("nb")
    project.edit("conf.py", 'nb_execution_mode = "force"', 'nb_execution_mode = "cache"')
    shutil.rmtree(project.root / "_build")
    assert project.build().executed == []


def test_excluded_notebooks_are_not_executed(make_project: ProjectFactory) -> None:
    files = {"skip/nb.ipynb": PRESET, "run.ipynb": PRINTS}
    project = make_project(files, 'nb_execution_excludepatterns = ["skip/*"]\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["run.ipynb"]
    assert "stored output" in build.html("skip/nb")


def test_kernel_aliases_apply(make_project: ProjectFactory) -> None:
    notebook = PRINTS.replace('"name": "python3"', '"name": "my-custom-python"')
    project = make_project({"nb.ipynb": notebook}, 'nb_kernel_rgx_aliases = {"my-.*": "python3"}\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert "computed 5" in build.html("nb")


def test_working_directory_is_the_notebook_folder(make_project: ProjectFactory) -> None:
    notebook = ipynb(code("print(open('data.txt').read().strip())"))
    project = make_project({"sub/nb.ipynb": notebook})
    project.write("sub/data.txt", "read relative to the notebook\n")
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "read relative to the notebook" in build.html("sub/nb")


def test_in_temp_runs_in_a_temporary_folder(make_project: ProjectFactory) -> None:
    notebook = ipynb(code("import os\nprint('cwd', os.listdir('.'))\nopen('out.txt', 'w')"))
    project = make_project(
        {"nb.ipynb": notebook}, "nb_execution_in_temp = True\nnbcache_artefact_max_size = 0\n"
    )
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "cwd []" in build.html("nb")
    assert not (project.root / "out.txt").exists()
    project.edit("conf.py", "nbcache_artefact_max_size = 0", "")
    project.edit("nb.ipynb", "open('out.txt', 'w')", "open('out.txt', 'w').write('made')")
    assert project.build().executed == ["nb.ipynb"]
    assert (project.root / "out.txt").read_text() == "made", "written in temp, restored here"


def test_execution_metadata_allows_errors(make_project: ProjectFactory) -> None:
    notebook = ipynb(
        code("1 / 0"),
        code("print('after the error')"),
        metadata={"execution": {"allow_errors": True}},
    )
    build = make_project({"nb.ipynb": notebook}).build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    html = build.html("nb")
    assert "ZeroDivisionError" in html
    assert "after the error" in html


def test_mystnb_metadata_overrides_apply(make_project: ProjectFactory) -> None:
    notebook = myst_notebook(
        """\
        ---
        mystnb:
          execution_allow_errors: true
        ---
        # Errors allowed

        ```{code-cell} ipython3
        raise ValueError('shown, not fatal')
        ```
        """
    ).replace("---\n---\n", "")
    build = make_project({"nb.md": notebook}).build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert "shown, not fatal" in build.html("nb")


def test_glue_and_execution_table_work_from_the_cache(make_project: ProjectFactory) -> None:
    notebook = ipynb(
        code("from myst_nb import glue\nglue('answer', 6 * 7)"),
        markdown("The answer is {glue}`answer`."),
    )
    project = make_project(
        {"nb.ipynb": notebook, "table.md": "# Table\n\n```{nb-exec-table}\n```\n"}
    )
    first = project.build()
    assert first.returncode == 0, first.stderr
    shutil.rmtree(project.root / "_build")
    build = project.build()
    assert build.executed == []
    assert "The answer is" in build.html("nb")
    assert "42" in build.html("nb")
    rendered = build.html("table")
    assert "nb" in rendered
    assert "cache" in rendered


def test_raises_exception_tag_renders_the_error_and_counts_as_succeeded(
    make_project: ProjectFactory,
) -> None:
    notebook = ipynb(code("1 / 0", tags=["raises-exception"]), code("print('went on')"))
    project = make_project({"nb.ipynb": notebook}, 'nbcache_report = "report.json"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert "ZeroDivisionError" in build.html("nb")
    assert "went on" in build.html("nb")
    report = json.loads((build.outdir / "report.json").read_text())
    assert [n["status"] for n in report["notebooks"]] == ["succeeded"]


def test_stderr_follows_nb_output_stderr_and_can_be_silenced(make_project: ProjectFactory) -> None:
    notebook = ipynb(code("import sys\nprint('on stderr', file=sys.stderr)"))
    project = make_project({"nb.ipynb": notebook}, 'nb_output_stderr = "remove-warn"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    (warning,) = build.warnings
    assert "nb.ipynb" in warning
    assert warning.endswith("[mystnb.stderr]")
    assert build.html("nb").count("on stderr") == 1, "the source only: the output is removed"
    quiet = project.build("-E", "-D", "suppress_warnings=mystnb.stderr")
    assert quiet.executed == []
    assert quiet.warnings == []
