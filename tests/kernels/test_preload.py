"""Forked kernels (the default) and ``nbcache_kernel_preload``: kernels forked from a
process that imported ipykernel, and the listed modules, once; and normal kernels when
``nbcache_fork_kernels = False``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import Project, ProjectFactory, build_interrupted, code, ipynb
from sphinx_nbcache.cache.store import Store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork()")

EXAMPLE_BOOK = Path(__file__).resolve().parents[2] / "example_book"
PRELOAD = 'nbcache_kernel_preload = ["numpy", "pandas", "matplotlib.pyplot"]\n'
NORMAL = "nbcache_fork_kernels = False\nnbcache_kernel_preload = []\n"


def stored_outputs(project: Path) -> dict[str, tuple[object, ...]]:
    """Every notebook's outputs, execution counts and metadata, as the cache holds them."""
    store = Store(project / ".nbcache")
    found = {}
    for key in store.all_keys():
        result = store.get(key)
        assert result is not None and result.succeeded, key
        found[result.source] = (result.outputs, result.execution_counts, result.metadata)
    return found


def test_forked_and_preloaded_kernels_give_the_example_book_the_same_outputs(
    tmp_path: Path,
) -> None:
    builds = {}
    settings = (("normal", NORMAL), ("forked", "nbcache_kernel_preload = []\n"), ("preloaded", ""))
    for name, extra in settings:  # the example book preloads numpy, pandas and matplotlib
        root = tmp_path / name
        shutil.copytree(EXAMPLE_BOOK, root, ignore=shutil.ignore_patterns("_build", ".nbcache"))
        with (root / "conf.py").open("a") as conf:
            conf.write(extra)
        build = Project(root).build()
        assert build.returncode == 0, build.stderr
        assert not build.warnings, build.warnings
        builds[name] = stored_outputs(root)
        report = build.html("index").split('class="nbcache-report', 1)[1].split("</table>")[0]
        for source in builds[name]:  # the report table links every notebook's page
            assert f'href="{Path(source).with_suffix(".html").as_posix()}' in report, source
    assert len(builds["normal"]) == 10  # six notebooks, the waves template and 3 instances
    assert builds["forked"] == builds["normal"]
    assert builds["preloaded"] == builds["normal"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_kernels_are_forked_and_a_module_that_fails_to_import_only_warns(
    make_project: ProjectFactory,
) -> None:
    files = {
        name: ipynb(code(f"# {name}\nprint(open('/proc/self/comm').read().strip())"))
        for name in ("a.ipynb", "b.ipynb")
    }
    conf = 'nbcache_kernel_preload = ["numpy", "broken_on_import"]\n'
    project = make_project(files, conf)
    modules = project.root.parent / "modules"
    modules.mkdir()
    (modules / "broken_on_import.py").write_text("raise ImportError('broken on purpose')\n")
    build = project.build(env={"PYTHONPATH": str(modules)})
    assert build.returncode == 0, build.stderr
    (warning,) = build.warnings
    assert "nbcache_kernel_preload: cannot import broken_on_import in " in warning
    assert "ImportError: broken on purpose" in warning
    assert warning.endswith("[nbcache.preload]")
    assert build.executed == ["a.ipynb", "b.ipynb"]
    for page in ("a", "b"):
        assert "nbcache-kernel" in build.html(page)
    assert project.kernels() == []


AHEAD = "no cache yet; starting the kernel fork server ahead"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_first_build_starts_the_fork_server_ahead_and_never_leaves_it_behind(
    make_project: ProjectFactory,
) -> None:
    comm = "print('ran in', open('/proc/self/comm').read().strip())"
    project = make_project({"a.ipynb": ipynb(code(comm))})
    first = project.build("-v")
    assert first.returncode == 0, first.stderr
    assert AHEAD in first.stdout
    assert first.executed == ["a.ipynb"]
    assert "ran in nbcache-kernel" in first.html("a")
    again = project.build("-v", "-E", "-D", "nb_execution_mode=force")
    assert AHEAD not in again.stdout  # the cache is there: edits rarely execute everything
    assert again.executed == ["a.ipynb"]

    shutil.rmtree(project.root / ".nbcache")  # nothing to execute: stopped once that is known
    printed = {"output_type": "stream", "name": "stdout", "text": "ran before\n"}
    project.write("a.ipynb", ipynb(code(comm, outputs=[printed])))
    nothing = project.build("-v", "-E", "-D", "nb_execution_mode=auto")
    assert nothing.returncode == 0, nothing.stderr
    assert AHEAD in nothing.stdout
    assert nothing.executed == []
    assert "ran before" in nothing.html("a")
    assert project.kernels() == []
    still = project.build("-v", "-E", "-D", "nb_execution_mode=auto")
    assert AHEAD not in still.stdout, "the build before had no cache and executed nothing"
    assert still.executed == []

    with (project.root / "conf.py").open("a") as conf:  # a server still importing these...
        conf.write(PRELOAD)
    bad = project.build("-D", "nbcache_workers=many")  # ...when the build stops at config-inited
    assert bad.returncode == 2
    assert "nbcache_workers" in bad.stderr
    assert project.kernels() == []


def test_numpy_random_numbers_differ_between_forked_kernels(make_project: ProjectFactory) -> None:
    files = {
        name: ipynb(code(f"# {name}\nimport numpy\nprint('draw', numpy.random.randint(10**9))"))
        for name in ("a.ipynb", "b.ipynb")
    }
    project = make_project(files, PRELOAD)
    build = project.build()
    assert build.returncode == 0, build.stderr
    draws = {page: build.html(page).split("draw ")[1].split()[0] for page in ("a", "b")}
    assert draws["a"] != draws["b"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_normal_kernels_fail_time_out_and_stop_like_forked_ones(
    make_project: ProjectFactory,
) -> None:
    files = {
        "good.ipynb": ipynb(code("print('ran in', open('/proc/self/comm').read().strip())")),
        "exits.ipynb": ipynb(code("import os\nos._exit(1)")),
        "slow.ipynb": ipynb(
            code("x = 1"),
            code("import time\ntime.sleep(60)"),
            metadata={"execution": {"timeout": 2}},
        ),
    }
    project = make_project(files, NORMAL + 'nbcache_report = "r.json"\n')
    build = project.build()
    assert build.returncode == 0, build.stderr
    report = json.loads((build.outdir / "r.json").read_text())
    assert {n["source"]: n["status"] for n in report["notebooks"]} == {
        "good.ipynb": "succeeded",
        "exits.ipynb": "kernel-error",
        "slow.ipynb": "timeout",
    }
    assert "ran in python" in build.html("good")
    assert project.kernels() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_ctrl_c_leaves_no_normal_kernel_behind(make_project: ProjectFactory) -> None:
    files = {
        "fast.ipynb": ipynb(code("print('good notebook ran')")),
        "slow1.ipynb": ipynb(code("import time\ntime.sleep(120)")),
        "slow2.ipynb": ipynb(code("import time\ntime.sleep(121)")),
    }
    project = make_project(files, NORMAL)
    build, alive = build_interrupted(project, "fast.ipynb executed", lambda pid: project.kernels())
    assert len(alive) == 2  # the two slow kernels
    assert build.returncode != 0, build.stdout + build.stderr
    assert project.kernels() == []


def test_kernels_with_their_own_pythonpath_fork_from_a_server_of_their_own(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A kernelspec's PYTHONPATH is read when the interpreter starts, so a kernel with one
    cannot come from the server of a kernel without it."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "only_here.py").write_text("WHERE = 'found on the extra path'\n")
    spec = tmp_path / "jupyter" / "kernels" / "withpath"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "With a path",
                "language": "python",
                "env": {"PYTHONPATH": str(extra)},
            }
        )
    )
    probe = "import importlib.util\nprint('extra path:', importlib.util.find_spec('only_here'))"
    files = {
        "a.ipynb": ipynb(code(probe)),
        "b.ipynb": ipynb(
            code("import only_here\nprint(only_here.WHERE)"),
            metadata={"kernelspec": {"name": "withpath", "display_name": "With a path"}},
        ),
    }
    project = make_project(files)
    build = project.build(env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == ["a.ipynb", "b.ipynb"]
    assert "extra path: None" in build.html("a")
    assert "found on the extra path" in build.html("b")
