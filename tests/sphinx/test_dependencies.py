"""The cache follows what a notebook reads: local modules it imports, files it opens."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from helpers import BASE_CONF, Project, ProjectFactory, code, ipynb, myst_notebook, nbcache
from sphinx_nbcache.cache.store import Store
from sphinx_nbcache.config import build_settings
from sphinx_nbcache.inputs import discover
from sphinx_nbcache.inputs.artefacts import restore_artefacts
from sphinx_nbcache.inputs.environment import ENVIRONMENTS_FILE, kernel_environment, normal
from sphinx_nbcache.plan import declared_inputs

CONF = 'exclude_patterns.append("lib")\n'


def uses(n: int) -> str:
    source = (
        f"import sys\nsys.path.insert(0, 'lib')\nfrom helpers import double\nprint(double({n}))"
    )
    return ipynb(code(source))


PLAIN = ipynb(code("print('independent')"))
READS = ipynb(
    code("print(open('data.csv').read().strip())"),
    code("with open('made.txt', 'w') as f:\n    f.write('x')\nprint(open('made.txt').read())"),
)


def make(make_project: ProjectFactory) -> Project:
    project = make_project(
        {
            "uses1.ipynb": uses(21),
            "uses2.ipynb": uses(1),
            "plain.ipynb": PLAIN,
            "reads.ipynb": READS,
        },
        CONF,
    )
    project.write("lib/helpers.py", "def double(x):\n    return 2 * x\n")
    project.write("data.csv", "a,b\n1,2\n")
    first = project.build()
    assert first.executed == ["plain.ipynb", "reads.ipynb", "uses1.ipynb", "uses2.ipynb"]
    assert "42" in first.html("uses1")
    return project


def test_editing_an_imported_module_executes_exactly_its_importers(
    make_project: ProjectFactory,
) -> None:
    project = make(make_project)
    project.write("lib/helpers.py", "def double(x):\n    return x * 2 + 1000\n")
    incremental = project.build()
    assert incremental.executed == ["uses1.ipynb", "uses2.ipynb"]
    assert "1042" in incremental.html("uses1")
    assert "nbcache: uses1.ipynb: lib/helpers.py changed since it was executed" in (
        incremental.stdout
    )
    project.write("lib/helpers.py", "def double(x):\n    return x * 2 + 2000\n")
    assert project.build("-E").executed == ["uses1.ipynb", "uses2.ipynb"]


def test_data_files_by_content_and_files_the_notebook_wrote_are_not_inputs(
    make_project: ProjectFactory,
) -> None:
    project = make(make_project)
    project.write("data.csv", "a,b\n1,2\n")  # same content, new mtime
    project.write("made.txt", "changed by hand")
    project.write("unrelated.txt", "nobody reads this")
    assert project.build().executed == []
    project.write("data.csv", "a,b\n3,4\n")
    status = subprocess.run(
        [sys.executable, "-m", "sphinx_nbcache", "status", "--json"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 1
    listing = {entry["source"]: entry for entry in json.loads(status.stdout)}
    assert (listing["reads.ipynb"]["state"], listing["reads.ipynb"]["why"]) == (
        "stale",
        "data.csv changed",
    )
    build = project.build()
    assert build.executed == ["reads.ipynb"]
    assert "3,4" in build.html("reads")


def test_discovery_leaves_no_trace_in_the_notebook(make_project: ProjectFactory) -> None:
    notebook = ipynb(
        code("print([name for name in globals() if 'nbcache' in name.lower()])"),
        code("print(len(In), len(Out))"),  # no history from the hidden requests
    )
    project = make_project({"nb.ipynb": notebook})
    build = project.build()
    executed = json.loads((project.root / "_build/jupyter_execute/nb.ipynb").read_text())
    cells = [cell for cell in executed["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in cells] == [1, 2]
    assert ["".join(cell["outputs"][0]["text"]) for cell in cells] == ["[]\n", "3 0\n"]
    assert [len(cell["outputs"]) for cell in cells] == [1, 1]
    assert build.warnings == []
    store = Store(project.root / ".nbcache")
    (result,) = map(store.get, store.all_keys())
    store.close()
    assert result is not None
    assert result.environment["python"] == platform.python_version(), "discovery did run"


def test_an_imported_package_at_another_version_invalidates(make_project: ProjectFactory) -> None:
    notebook = ipynb(code("import diskcache\nprint('imported', diskcache.__name__)"))
    project = make_project({"nb.ipynb": notebook})
    assert project.build().executed == ["nb.ipynb"]
    store = Store(project.root / ".nbcache")
    (key,) = store.all_keys()
    result = store.get(key)
    assert result is not None
    packages = result.environment["packages"]
    assert packages["diskcache"] == version("diskcache")
    assert "jupytext" not in packages, "installed, but this notebook did not import it"
    assert result.environment["python"] == platform.python_version()
    assert project.build("-E").executed == []

    older = {**result.environment, "packages": {**packages, "diskcache": "0.0.1"}}
    store.put(dataclasses.replace(result, environment=older), store.material(key))
    store.close()
    build = project.build("-E")
    assert build.executed == ["nb.ipynb"]
    assert f"nb.ipynb: diskcache 0.0.1 -> {version('diskcache')} since it was executed" in (
        build.stdout
    )


def install_fake_package(site: Path, version: str) -> None:
    """A distribution on PYTHONPATH, as pip would leave it: a module and its metadata."""
    site.mkdir(exist_ok=True)
    for old in site.glob("nbcache_fake_pkg-*.dist-info"):
        shutil.rmtree(old)
    (site / "nbcache_fake_pkg.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"nbcache_fake_pkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: nbcache-fake-pkg\nVersion: {version}\n"
    )
    (info / "top_level.txt").write_text("nbcache_fake_pkg\n")


def test_an_upgraded_package_executes_its_importers_again_in_an_incremental_build(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """Also when the package was imported before the notebook ran (preloaded in the
    kernels' fork server), directly or by a local module the notebook imports."""
    site = tmp_path / "site"
    install_fake_package(site, "1.0")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    notebooks = {
        "direct.ipynb": ipynb(code("import nbcache_fake_pkg\nprint(nbcache_fake_pkg.VERSION)")),
        "through.ipynb": ipynb(
            code("import sys\nsys.path.insert(0, 'lib')\nimport user\nprint(user.VERSION)")
        ),
        "plain.ipynb": PLAIN,
    }
    project = make_project(notebooks, CONF + 'nbcache_kernel_preload = ["nbcache_fake_pkg"]\n')
    project.write("lib/user.py", "import nbcache_fake_pkg\nVERSION = nbcache_fake_pkg.VERSION\n")
    first = project.build(env=env)
    assert first.executed == ["direct.ipynb", "plain.ipynb", "through.ipynb"]
    assert "nbcache.preload" not in first.stderr
    store = Store(project.root / ".nbcache")
    fake = {
        result.source: result.environment["packages"].get("nbcache-fake-pkg")
        for result in map(store.get, store.all_keys())
        if result is not None
    }
    store.close()
    assert fake == {"direct.ipynb": "1.0", "through.ipynb": "1.0", "plain.ipynb": None}
    assert project.build(env=env).executed == []

    install_fake_package(site, "2.0")
    status = nbcache(project, "status", "--json", env=env)
    assert status.returncode == 1, status.stderr
    why = {entry["source"]: entry["why"] for entry in json.loads(status.stdout)}
    assert why["direct.ipynb"] == why["through.ipynb"] == "nbcache-fake-pkg 1.0 -> 2.0"
    assert not why["plain.ipynb"]
    upgraded = project.build(env=env)
    assert upgraded.executed == ["direct.ipynb", "through.ipynb"], "without -E"
    assert "direct.ipynb: nbcache-fake-pkg 1.0 -> 2.0 since it was executed" in upgraded.stdout
    assert "2.0" in upgraded.html("direct") and "2.0" in upgraded.html("through")
    assert project.build(env=env).executed == []


def test_declared_files_and_environment_variables_are_part_of_the_key(
    make_project: ProjectFactory,
) -> None:
    reader = ipynb(code("import subprocess\nsubprocess.run(['cat', 'table.txt'])"))
    own = ipynb(code("print('own metadata')"), metadata={"nbcache": {"dependencies": ["*.cfg"]}})
    conf = (
        'nbcache_dependencies = {"reader*": ["table.txt"]}\n'
        'nbcache_env_vars = ["NBCACHE_TEST_LEVEL"]\n'
    )
    project = make_project({"reader.ipynb": reader, "own.ipynb": own, "plain.ipynb": PLAIN}, conf)
    project.write("table.txt", "one\n")
    project.write("settings.cfg", "a = 1\n")
    env = {"NBCACHE_TEST_LEVEL": "1"}
    assert project.build(env=env).executed == ["own.ipynb", "plain.ipynb", "reader.ipynb"]
    assert project.build(env=env).executed == []

    project.write("table.txt", "two\n")
    edited = project.build(env=env)
    assert edited.executed == ["reader.ipynb"], "without -E too"
    assert "reader.ipynb: declared file table.txt changed since it was executed" in edited.stdout
    project.write("settings.cfg", "a = 2\n")
    assert project.build(env=env).executed == ["own.ipynb"]
    changed = project.build(env={"NBCACHE_TEST_LEVEL": "2"})
    assert changed.executed == ["own.ipynb", "plain.ipynb", "reader.ipynb"]
    assert "environment variable NBCACHE_TEST_LEVEL changed" in changed.stdout


PNG = (
    "import base64\n"
    "pixel = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==')\n"
    "with open('figures/saved.png', 'wb') as f:\n"
    "    f.write(pixel)"
)


def test_a_saved_figure_comes_back_from_the_cache_in_a_fresh_copy(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    notebook = myst_notebook(
        f"""\
        # A figure

        ```{{code-cell}} ipython3
        import os
        os.makedirs('figures', exist_ok=True)
        ```

        ```{{code-cell}} ipython3
        {PNG.replace(chr(10), chr(10) + "        ")}
        ```

        ```{{code-cell}} ipython3
        for name, data in [('figures/scratch.tmp', b'x'), ('figures/big.bin', b'x' * 5000),
                           ('notes.txt', b'x')]:
            with open(name, 'wb') as f:
                f.write(data)
        ```

        The figure, embedded by the prose:

        ![a saved figure](figures/saved.png)
        """
    )
    conf = (
        "nbcache_artefact_include = ['figures/*']\n"
        "nbcache_artefact_exclude = ['*.tmp']\n"
        "nbcache_artefact_max_size = 1000\n"
    )
    project = make_project({"fig.md": notebook}, conf)
    first = project.build()
    assert first.executed == ["fig.md"]
    assert first.warnings == []

    copy = Project(tmp_path / "copy")
    skipped = shutil.ignore_patterns("_build", "figures", "notes.txt")
    shutil.copytree(project.root, copy.root, ignore=skipped)
    build = copy.build()
    assert build.executed == []
    assert build.warnings == []
    assert "nbcache: fig.md: restored figures/saved.png from the cache" in build.stdout
    saved = copy.root / "figures" / "saved.png"
    assert saved.read_bytes() == (project.root / "figures" / "saved.png").read_bytes()
    assert "saved.png" in build.html("fig")
    assert list((build.outdir / "_images").glob("saved*.png"))
    assert sorted(p.name for p in saved.parent.iterdir()) == ["saved.png"], (
        "excluded (*.tmp) and too big (over 1000 bytes) were not kept"
    )
    assert not (copy.root / "notes.txt").exists(), "not included (figures/*)"

    saved.write_bytes(b"changed by hand")
    again = copy.build("-E")
    assert again.executed == []
    assert "nbcache: fig.md: restored figures/saved.png from the cache" in again.stdout
    assert saved.read_bytes() == (project.root / "figures" / "saved.png").read_bytes()


def test_declared_files_are_copied_into_a_temporary_working_folder(
    make_project: ProjectFactory,
) -> None:
    notebook = ipynb(
        code("import os\nprint(sorted(os.listdir('.')), open('inputs/a.txt').read())"),
        metadata={"nbcache": {"dependencies": ["inputs/*.txt"]}},
    )
    project = make_project({"nb.ipynb": notebook}, "nb_execution_in_temp = True\n")
    project.write("inputs/a.txt", "declared input")
    build = project.build()
    assert build.warnings == []
    assert "['inputs'] declared input" in build.html("nb")


def test_installed_packages_are_listed_again_only_when_the_environment_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    first = kernel_environment("python3", cache)
    assert first["packages"]["diskcache"] == version("diskcache")
    remembered = cache / ENVIRONMENTS_FILE
    written = remembered.stat().st_mtime_ns
    assert kernel_environment("python3", cache) == first
    assert remembered.stat().st_mtime_ns == written, "unchanged: nothing listed or written"

    info = site / "nbcache_fake_pkg-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nbcache-fake-pkg\nVersion: 1.2.3\n"
    )
    (info / "top_level.txt").write_text("nbcache_fake_pkg\n")
    changed = kernel_environment("python3", cache)
    assert changed["packages"]["nbcache-fake-pkg"] == "1.2.3"
    assert changed["owners"]["nbcache_fake_pkg"] == ["nbcache-fake-pkg"]


def test_inputs_are_the_files_under_the_project_that_paths_resolve_to(tmp_path: Path) -> None:
    """What the kernel reported, filtered as realpath would see it: symlinks followed in
    and out of the project, tools' folders and compiled files left out."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    for folder in (root / "real", root / ".venv", root / "pkg" / "__pycache__", outside):
        folder.mkdir(parents=True)
    for file in (root / "data.csv", root / "real" / "x.py", root / "mod.py", outside / "lib.py"):
        file.write_text("")
    (root / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"")
    (root / ".venv" / "tool.py").write_text("")
    (root / "out.txt").write_text("")
    (root / "linked").symlink_to(root / "real")
    (root / "lib.py").symlink_to(outside / "lib.py")
    (outside / "into.py").symlink_to(root / "mod.py")
    reported = [
        str(root / "data.csv"),
        str(root / "linked" / "x.py"),
        str(root / "lib.py"),
        str(outside / "into.py"),
        str(outside / "lib.py"),
        str(root / "pkg" / "__pycache__" / "m.cpython-311.pyc"),
        str(root / ".venv" / "tool.py"),
        str(root / "out.txt"),
        str(root / "missing.csv"),
    ]
    found = discover.relevant(reported, root.resolve(), [str(root / "out.txt")])
    assert found == ["data.csv", "mod.py", "real/x.py"]


def test_a_file_read_by_many_notebooks_is_hashed_once_while_it_stays_as_it_was(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    digests = discover.FileDigests()
    first = digests(data)
    assert first == discover.file_digest(data)
    stat = data.stat()
    data.write_text("a,b\n3,4\n")  # same size; times put back: not looked at again
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert digests(data) == first
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert digests(data) == discover.file_digest(data) != first, "rewritten: hashed again"


def test_declared_patterns_may_reach_the_repository_but_not_beyond(tmp_path: Path) -> None:
    """``../scripts/convert.sh`` from a docs folder is the project's own file; a pattern
    that is absolute or climbs out of the repository is left out with a warning."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "scripts").mkdir()
    (repo / "scripts" / "convert.sh").write_text("echo\n")
    (tmp_path / "secret.txt").write_text("not the project's\n")
    docs = repo / "docs"
    docs.mkdir()
    settings = build_settings(
        {"nbcache_dependencies": {"*": ["../scripts/*.sh", "../../secret.txt", "/etc/hosts"]}},
        docs,
        docs,
    )
    warned: list[str] = []
    declared, files = declared_inputs(
        settings, docs, "nb.ipynb", {}, lambda message, subtype, source: warned.append(message)
    )
    assert list(declared["files"]) == ["../scripts/convert.sh"]
    assert files == (docs / "../scripts/convert.sh",)
    assert warned == [
        "dependency pattern '../../secret.txt' in nbcache_dependencies is ignored: "
        "it reaches outside the project",
        "dependency pattern '/etc/hosts' in nbcache_dependencies is ignored: it is an "
        "absolute path; patterns are relative to the notebook's folder",
    ]


def test_a_data_file_in_a_folder_linked_into_the_source_tree_is_followed(tmp_path: Path) -> None:
    """numpy-tutorials' layout: the Sphinx folder ``site`` links ``content -> ../content``,
    where the notebooks and their data live, outside the source folder."""
    book = tmp_path / "book"
    (book / "content").mkdir(parents=True)
    site = Project(book / "site")
    site.write("conf.py", BASE_CONF)
    site.write("index.md", "# Index\n\n```{toctree}\ncontent/reader\n```\n")
    (site.root / "content").symlink_to("../content", target_is_directory=True)
    (book / "content/data.csv").write_text("1,2\n3,4\n", encoding="utf-8")
    reader = ipynb(code("import numpy as np\nprint(np.loadtxt('data.csv', delimiter=',').sum())"))
    (book / "content/reader.ipynb").write_text(reader, encoding="utf-8")
    first = site.build()
    assert first.executed == ["content/reader.ipynb"]
    assert "10.0" in first.html("content/reader")

    (book / "content/data.csv").write_text("1,2\n3,5\n", encoding="utf-8")
    status = nbcache(site, "status", "--json")
    assert [(n["source"], n["state"], n["why"]) for n in json.loads(status.stdout)] == [
        ("content/reader.ipynb", "stale", "content/data.csv changed")
    ]
    second = site.build()
    assert second.executed == ["content/reader.ipynb"]
    assert "11.0" in second.html("content/reader")
    assert site.build().executed == []
    shown = json.loads(nbcache(site, "show", "--json", "content/reader.ipynb").stdout)
    assert shown["dependencies"]["files"].keys() == {"content/data.csv"}

    # every command takes the document by the path status lists, and by its real path
    for path in ("content/reader.ipynb", "content/reader", str(book / "content/reader.ipynb")):
        shown = nbcache(site, "show", "--json", path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "fresh"
    merged = nbcache(site, "--project", "site", "merge", "content/reader.ipynb", cwd=book)
    assert merged.returncode == 0, merged.stderr
    assert "11.0" in merged.stdout


def test_inputs_behind_a_linked_folder_are_named_through_the_link(tmp_path: Path) -> None:
    """Only folders the source tree links to are followed: a file outside the project
    read by its own path is not an input."""
    root, elsewhere = tmp_path / "site", tmp_path / "content"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "data.csv").write_text("x", encoding="utf-8")
    (tmp_path / "outside.csv").write_text("x", encoding="utf-8")
    (root / "sub/content").symlink_to(elsewhere, target_is_directory=True)
    links = discover.linked_folders(root, root)
    assert links == {str(elsewhere): "sub/content"}
    reported = [str(elsewhere / "data.csv"), str(tmp_path / "outside.csv")]
    assert discover.relevant(reported, root, [], links) == ["sub/content/data.csv"]
    assert discover.relevant(reported, root, []) == []
    # a notebook behind the link declares its files through it, and cannot climb out
    metadata = {"nbcache": {"dependencies": ["data.csv", "../../../outside.csv"]}}
    settings = build_settings({}, root, root)
    warned: list[str] = []
    declared, _ = declared_inputs(
        settings, root, "sub/content/nb.ipynb", metadata, lambda m, s, n: warned.append(m)
    )
    assert list(declared["files"]) == ["sub/content/data.csv"]
    assert len(warned) == 1
    assert "'../../../outside.csv' in its metadata is ignored: it reaches outside" in warned[0]


def test_packages_are_the_notebooks_imports_not_those_ipython_loads_for_a_traceback(
    make_project: ProjectFactory,
) -> None:
    """IPython imports stack_data, executing, asttokens, pure_eval and pygments to show a
    traceback, outside the notebook's code: they are not packages the notebook uses."""
    errors = ipynb(
        code("import importlib\nformat_module = importlib.import_module('nbformat')"),
        code("1 / 0", tags=["raises-exception"]),
        code(
            "def fails():\n    raise ValueError('with a traceback')\nfails()", ["raises-exception"]
        ),
    )
    project = make_project({"errors.ipynb": errors})
    build = project.build()
    assert build.executed == ["errors.ipynb"]
    assert "ZeroDivisionError" in build.html("errors")
    shown = json.loads(nbcache(project, "show", "--json", "errors.ipynb").stdout)
    packages = {normal(name) for name in shown["dependencies"]["packages"]}
    assert "nbformat" in packages, "a module imported through importlib counts"
    helpers = {"ipython", "stack-data", "executing", "asttokens", "pure-eval", "pygments"}
    assert packages & helpers == set()


def test_artefacts_of_a_notebook_behind_a_link_go_to_its_folder_and_nowhere_else(
    tmp_path: Path,
) -> None:
    """Following links is for reading: a restored artefact lands in the notebook's own
    folder (where the link points), and neither ``..`` nor a link inside it lead out."""
    site, content, elsewhere = tmp_path / "site", tmp_path / "content", tmp_path / "elsewhere"
    for folder in (site, content, elsewhere):
        folder.mkdir()
    (site / "content").symlink_to(content, target_is_directory=True)
    (content / "escape").symlink_to(elsewhere, target_is_directory=True)
    data = b"made by the notebook"
    artefact = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "base64": base64.b64encode(data).decode(),
    }
    wanted = {"fig.txt": artefact, "../site.txt": artefact, "escape/out.txt": artefact}
    restored, refused = restore_artefacts(wanted, site / "content")
    assert restored == ["fig.txt"]
    assert (content / "fig.txt").read_bytes() == data
    assert refused == {
        "../site.txt": "outside the notebook's folder",
        "escape/out.txt": "outside the notebook's folder",
    }
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "site.txt").exists()
