"""What a user sees across builds: outputs rendered, and what executed or came from cache."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    Build,
    Project,
    ProjectFactory,
    code,
    ipynb,
    markdown,
    myst_notebook,
    percent_script,
)
from sphinx_nbcache.cache.parsed import PARSED_FOLDER, ParsedStore
from sphinx_nbcache.cache.signing import machine_secret

THREE_FORMATS = {
    "nb_ipynb.ipynb": ipynb(
        markdown("# An ipynb notebook\n\nSome prose."),
        code("print('hello from ipynb')"),
        code("6 * 7"),
    ),
    "nb_md.md": myst_notebook(
        """\
        # A MyST notebook

        Some prose.

        ```{code-cell} ipython3
        print('hello from md')
        ```
        """
    ),
    "nb_py.py": percent_script(
        """\
        # %% [markdown]
        # # A percent script
        #
        # Some prose.

        # %%
        print('hello from py')
        """
    ),
}
ALL = ["nb_ipynb.ipynb", "nb_md.md", "nb_py.py"]


@pytest.fixture
def project(make_project: ProjectFactory) -> Project:
    return make_project(THREE_FORMATS)


@pytest.fixture
def warm(project: Project) -> Project:
    """The project after one cold build."""
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert first.executed == ALL
    return project


def test_cold_build_renders_every_format(project: Project) -> None:
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == ALL
    assert "hello from ipynb" in build.html("nb_ipynb")
    assert "42" in build.html("nb_ipynb")
    assert "hello from md" in build.html("nb_md")
    assert "hello from py" in build.html("nb_py")
    written = json.loads((project.root / "_build/jupyter_execute/nb_md.ipynb").read_text())
    outputs = [cell["outputs"] for cell in written["cells"] if cell["cell_type"] == "code"]
    assert "".join(outputs[0][0]["text"]) == "hello from md\n"
    assert "nbcache: 3 notebook(s): 3 executed, 0 from cache, 0 failed;" in build.stdout


def test_fresh_build_with_warm_cache_executes_nothing(warm: Project) -> None:
    shutil.rmtree(warm.root / "_build")
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "hello from ipynb" in build.html("nb_ipynb")
    assert "hello from md" in build.html("nb_md")
    assert "hello from py" in build.html("nb_py")
    assert (
        "nbcache: 3 notebook(s): 0 executed, 3 from cache, 0 failed; 0.0 s executing"
        in build.stdout
    )
    written = json.loads((warm.root / "_build/jupyter_execute/nb_ipynb.ipynb").read_text())
    assert "".join(written["cells"][1]["outputs"][0]["text"]) == "hello from ipynb\n"


def test_pages_from_the_cache_match_myst_nb_rendering_the_executed_notebooks(
    warm: Project, make_project: ProjectFactory
) -> None:
    """A page served from the cache is the page myst-nb itself renders from the executed
    notebook: the same outputs, highlighted with the same lexers."""
    executed = warm.root / "_build" / "jupyter_execute"
    stems = [Path(name).stem for name in ALL]
    plain = make_project(
        {f"{stem}.ipynb": (executed / f"{stem}.ipynb").read_text("utf-8") for stem in stems},
        name="plain",
    )
    plain.edit("conf.py", '["sphinx_nbcache"]', '["myst_nb"]')
    plain.edit("conf.py", '"cache"', '"off"')
    ours = warm.build("-E", "-vv")
    theirs = plain.build()
    assert ours.executed == []
    assert theirs.returncode == 0, theirs.stderr
    for stem in stems:
        page = main_content(ours.html(stem))
        assert 'class="highlight-ipython3' in page
        assert "highlight-myst-ansi" in page
        assert page == main_content(theirs.html(stem))
    # the lexers were looked up once, for the build, not once per block
    registered = set(re.findall(r"adding lexer: \('([^']+)'", ours.stdout))
    assert {"ipython3", "myst-ansi", "ipythontb"} <= registered
    assert "adding lexer" not in warm.build("-vv").stdout, "a no-op rebuild writes nothing"


def main_content(html: str) -> str:
    """The page's own content, without the theme's links to its source file."""
    found = re.search(r'<div class="body" role="main">(.*?)<div class="sphinxsidebar"', html, re.S)
    assert found is not None
    return found.group(1)


def test_prose_edit_and_hide_input_execute_nothing(warm: Project) -> None:
    warm.edit("nb_md.md", "Some prose.", "Edited prose.")
    warm.edit("nb_py.py", "# Some prose.", "# Edited prose.")
    notebook = json.loads((warm.root / "nb_ipynb.ipynb").read_text())
    notebook["cells"][1]["metadata"]["tags"] = ["hide-input"]
    notebook["cells"][1]["id"] = "renamed-cell"
    warm.write("nb_ipynb.ipynb", json.dumps(notebook))
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "Edited prose." in build.html("nb_md")
    assert "Edited prose." in build.html("nb_py")
    html = build.html("nb_ipynb")
    assert "tag_hide-input" in html
    assert "hello from ipynb" in html


def test_code_edit_executes_exactly_that_notebook(warm: Project) -> None:
    warm.edit("nb_md.md", "print('hello from md')", "print('changed in md')")
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["nb_md.md"]
    assert "changed in md" in build.html("nb_md")


def test_copy_at_another_path_hits_the_same_cache(warm: Project) -> None:
    copy = Project(warm.root.parent / "elsewhere" / "checkout")
    shutil.copytree(warm.root, copy.root, ignore=shutil.ignore_patterns("_build"))
    build = copy.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "hello from py" in build.html("nb_py")


def test_parallel_read_on_empty_cache(project: Project) -> None:
    build = project.build("-j", "2")
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == ALL
    for docname in ("nb_ipynb", "nb_md", "nb_py"):
        assert "hello from" in build.html(docname)
    again = project.build("-j", "2", out="_build/second")
    assert again.executed == []
    assert "hello from md" in again.html("nb_md")


def test_two_builds_sharing_one_cache_at_once(project: Project) -> None:
    first = project.start(out="_build/one")
    second = project.start("-j", "2", out="_build/two")
    results = [process.communicate(timeout=300) for process in (first, second)]
    assert first.returncode == 0, results[0][1]
    assert second.returncode == 0, results[1][1]
    for out in ("one", "two"):
        html = (project.root / "_build" / out / "nb_md.html").read_text()
        assert "hello from md" in html
    assert "database is locked" not in results[0][1] + results[1][1]
    third = project.build(out="_build/three")
    assert third.executed == []


def test_vanished_cache_entries_reexecute_unchanged_documents(warm: Project) -> None:
    shutil.rmtree(warm.root / ".nbcache")
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ALL
    assert (warm.root / ".nbcache").is_dir()


def test_source_changed_by_another_extension_is_executed_as_read(
    make_project: ProjectFactory,
) -> None:
    conf = """\
    def rewrite(app, docname, source):
        source[0] = source[0].replace("hello from md", "rewritten by source-read")

    def setup(app):
        app.connect("source-read", rewrite)
    """
    project = make_project({"nb_md.md": THREE_FORMATS["nb_md.md"]}, conf)
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == ["nb_md.md", "nb_md.md"]  # as planned, then as read
    html = build.html("nb_md")
    assert html.count("rewritten by source-read") == 2  # the source and its output
    assert "hello from md" not in html


def _parsed_entry(project: Project) -> tuple[Path, dict[str, Any]]:
    (path,) = (project.root / ".nbcache" / PARSED_FOLDER).glob("*.json")
    return path, json.loads(path.read_text())


def test_myst_notebooks_are_read_from_the_cache_while_their_text_is_unchanged(
    warm: Project,
) -> None:
    """The kept reading of nb_md.md is what a fresh build renders, until the text changes.
    To tell it apart from a new reading, the test rewrites its prose under the same key."""
    _, entry = _parsed_entry(warm)
    notebook = entry["notebook"]
    notebook["cells"][0]["source"] = notebook["cells"][0]["source"].replace(
        "Some prose.", "Prose as kept."
    )
    store = ParsedStore(warm.root / ".nbcache", warm.root, machine_secret())
    store.put(warm.root / "nb_md.md", entry["key"], notebook)
    shutil.rmtree(warm.root / "_build")
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "Prose as kept." in build.html("nb_md")
    warm.edit("nb_md.md", "Some prose.", "Edited prose.")
    edited = warm.build()
    assert edited.executed == []
    assert "Edited prose." in edited.html("nb_md")
    assert _parsed_entry(warm)[1]["key"] != entry["key"]


def test_a_damaged_parsed_notebook_is_read_again(warm: Project) -> None:
    path, _ = _parsed_entry(warm)
    path.write_text('{"schema": 1, "key": "')
    shutil.rmtree(warm.root / "_build")
    build = warm.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == []
    assert "Some prose." in build.html("nb_md")
    assert "hello from md" in build.html("nb_md")
    assert _parsed_entry(warm)[1]["notebook"]["cells"]


def test_a_myst_notebook_loading_a_cell_from_a_file_sees_the_file_change(
    make_project: ProjectFactory,
) -> None:
    project = make_project(
        {
            "loads.md": myst_notebook(
                """\
                # Loads a cell

                ```{code-cell} ipython3
                :load: snippet.py
                ```
                """
            ),
            "snippet.py": "print('first snippet')\n",
        },
        'exclude_patterns.append("snippet.py")',
    )
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert "first snippet" in first.html("loads")
    project.write("snippet.py", "print('second snippet')\n")
    shutil.rmtree(project.root / "_build")
    second = project.build()
    assert second.executed == ["loads.md"]
    assert "second snippet" in second.html("loads")


def test_the_heap_is_frozen_before_the_build_and_at_exit(make_project: ProjectFactory) -> None:
    """What was loaded before the build is frozen by the time builders start, and
    everything at exit (conf.py's exit handler, registered first, runs last); with
    ``nbcache_gc_freeze`` off, the collector sees everything."""
    project = make_project(
        {"page.md": "# A page\n"},
        conf_extra="""
        import atexit, gc, sys

        def setup(app):
            def started(app):
                print("frozen at start:", gc.get_freeze_count())

            app.connect("builder-inited", started)

        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), file=sys.stderr))
        """,
    )

    def frozen(build: Build, when: str) -> int:
        found = re.search(rf"frozen at {when}: (\d+)", build.stdout + build.stderr)
        assert found is not None, build.stderr
        return int(found[1])

    build = project.build()
    assert build.returncode == 0, build.stderr
    assert 0 < frozen(build, "start") < frozen(build, "exit")
    build = project.build("-E", "-D", "nbcache_gc_freeze=0")
    assert build.returncode == 0, build.stderr
    assert frozen(build, "start") == frozen(build, "exit") == 0
