"""Switching from myst-nb's cache mode: its jupyter-cache is imported, and its folder kept.

The jupyter-cache in these tests is made by myst-nb itself: a small book built with plain
myst-nb in ``cache`` mode, then switched to sphinx-nbcache.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from helpers import BASE_CONF, Project, code, ipynb, myst_notebook, nbcache

NOTEBOOK = ipynb(code("print('from ipynb', 6 * 7)"), code("'the last value ' * 2"))
MYST = myst_notebook(
    """\
    # Story

    ```{code-cell} ipython3
    print('from myst markdown')
    ```
    """
)
OUTPUTS = {"notebook": ["from ipynb 42", "the last value the last value"], "story": ["from myst"]}
INDEX = "# Index\n\n```{toctree}\nnotebook\nstory\n```\n"
MYST_NB_CONF = BASE_CONF.replace('extensions = ["sphinx_nbcache"]', 'extensions = ["myst_nb"]')


def build_with_mystnb(root: Path, conf_extra: str = "") -> Project:
    """A book built by plain myst-nb in cache mode: its jupyter-cache holds both notebooks."""
    project = Project(root)
    project.write("conf.py", MYST_NB_CONF + conf_extra)
    project.write("index.md", INDEX)
    project.write("notebook.ipynb", NOTEBOOK)
    project.write("story.md", MYST)
    built = project.build()
    assert built.returncode == 0, built.stderr
    assert built.stdout.count("Cached executed notebook") == 2, built.stdout
    return project


def switch_to_nbcache(project: Project) -> None:
    project.edit("conf.py", 'extensions = ["myst_nb"]', 'extensions = ["sphinx_nbcache"]')


@pytest.fixture(scope="module")
def mystnb_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_with_mystnb(tmp_path_factory.mktemp("mystnb") / "book").root


@pytest.fixture
def switched(mystnb_book: Path, tmp_path: Path) -> Project:
    """A copy of the myst-nb book (elsewhere: jupyter-cache's paths no longer hold),
    its conf.py switched to sphinx-nbcache."""
    project = Project(tmp_path / "book")
    shutil.copytree(mystnb_book, project.root, symlinks=True)
    switch_to_nbcache(project)
    return project


def assert_every_output_rendered(project: Project) -> None:
    for docname, outputs in OUTPUTS.items():
        html = (project.root / "_build/html" / f"{docname}.html").read_text(encoding="utf-8")
        for output in outputs:
            assert output in html.replace("&#39;", "'"), (docname, output)
    text = (project.root / "_build/html/notebook.html").read_text(encoding="utf-8")
    assert "the last value the last value" in text, "an execute_result, not only the source"


def test_import_command_then_build_executes_nothing(switched: Project) -> None:
    done = nbcache(switched, "import-jupyter-cache")
    assert done.returncode == 0, done.stderr
    folder = (switched.root / "_build/.jupyter_cache").resolve()
    assert done.stdout.splitlines()[0] == f"imported 2 of 2 notebook(s) from {folder}"
    status = nbcache(switched, "status")
    assert status.returncode == 0, status.stdout
    build = switched.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    assert "nbcache: notebook.ipynb: Using cached notebook" in build.stdout
    assert "imported" not in build.stdout, "nothing left to import on the build"
    assert_every_output_rendered(switched)
    again = nbcache(switched, "import-jupyter-cache")
    assert again.stdout.splitlines()[0].startswith("imported 0 of 2 notebook(s)")
    assert "notebook.ipynb  already in the cache" in again.stdout


def test_first_build_imports_automatically_with_one_line(switched: Project) -> None:
    build = switched.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == []
    folder = (switched.root / "_build/.jupyter_cache").resolve()
    lines = [line for line in build.stdout.splitlines() if "jupyter-cache" in line]
    assert lines == [
        f"nbcache: imported 2 of 2 notebook(s) from myst-nb's jupyter-cache at {folder}"
    ]
    assert_every_output_rendered(switched)
    second = switched.build("-E")
    assert second.executed == []
    assert "jupyter-cache" not in second.stdout, "only a cache that never stored is filled"


def test_notebook_edited_after_mystnb_build_is_not_imported_and_executes(
    switched: Project,
) -> None:
    switched.edit("notebook.ipynb", "6 * 7", "6 * 9")
    done = nbcache(switched, "import-jupyter-cache")
    assert done.stdout.splitlines()[0].startswith("imported 1 of 2 notebook(s)")
    assert "notebook.ipynb  no executed notebook with the same code" in done.stdout
    build = switched.build()
    assert build.executed == ["notebook.ipynb"]
    assert "from ipynb 54" in (switched.root / "_build/html/notebook.html").read_text()


def test_no_automatic_import_while_a_secret_signs_the_cache(switched: Project) -> None:
    """Entries made from an unsigned folder would be signed: importing is a deliberate act."""
    build = switched.build(env={"NBCACHE_SECRET": "s3cret"})
    assert build.executed == ["notebook.ipynb", "story.md"]
    assert "is not imported automatically while $NBCACHE_SECRET signs the cache" in build.stdout


def unreadable_entries(folder: Path) -> None:
    """One row names a folder outside the cache, the other's notebook links out of it."""
    with sqlite3.connect(folder / "global.db") as db:
        (first, second) = [row[0] for row in db.execute("SELECT hashkey FROM nbcache")]
        db.execute("UPDATE nbcache SET hashkey = '../../../conf' WHERE hashkey = ?", (first,))
    notebook = folder / "executed" / second / "base.ipynb"
    outside = folder.parents[2] / "outside.ipynb"  # beside the project, not in it
    shutil.copy(notebook, outside)
    notebook.unlink()
    notebook.symlink_to(outside)


def test_a_tampered_jupyter_cache_imports_nothing_it_should_not(switched: Project) -> None:
    folder = switched.root / "_build/.jupyter_cache"
    unreadable_entries(folder)
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    done = nbcache(switched, "import-jupyter-cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("imported 0 of 2 notebook(s)")
    assert "skipped 2 entry(ies) of the jupyter-cache that could not be read" in done.stdout
    after = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    assert after == before, "the jupyter-cache is only read"
    build = switched.build()
    assert build.executed == ["notebook.ipynb", "story.md"]


def test_not_a_jupyter_cache_is_a_one_line_error(switched: Project, tmp_path: Path) -> None:
    done = nbcache(switched, "import-jupyter-cache", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert done.stderr.startswith("nbcache: no jupyter-cache at ")


def test_nb_execution_cache_path_holds_the_cache(tmp_path: Path) -> None:
    """A CI recipe persisting myst-nb's folder keeps working: the cache lives inside it,
    and what myst-nb left there is imported."""
    conf = 'nb_execution_cache_path = "_build/persisted"\n'
    project = build_with_mystnb(tmp_path / "book", conf)
    persisted = project.root / "_build/persisted"
    assert (persisted / "global.db").is_file(), "myst-nb's jupyter-cache went there"
    switch_to_nbcache(project)
    build = project.build()
    assert build.executed == []
    assert f"from myst-nb's jupyter-cache at {persisted.resolve()}" in build.stdout
    assert (persisted / "sphinx-nbcache" / "cache.db").is_file()
    assert not (project.root / ".nbcache").exists()
    info = nbcache(project, "info")
    assert f"cache:   {(persisted / 'sphinx-nbcache').resolve()}" in info.stdout
    # CI: only the persisted folder comes back
    for folder in (project.root / "_build").iterdir():
        if folder.name != "persisted":
            shutil.rmtree(folder)
    project.edit("story.md", "from myst markdown", "from myst markdown, edited")
    again = project.build()
    assert again.executed == ["story.md"], "the rest comes from the persisted cache"
    project.edit("conf.py", conf, conf + 'nbcache_path = "explicit"\n')
    explicit = nbcache(project, "info")
    assert f"cache:   {(project.root / 'explicit').resolve()}" in explicit.stdout
