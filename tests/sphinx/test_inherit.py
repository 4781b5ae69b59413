"""Kernel state inheritance: a notebook starts from the final state of another, with real
kernels and builds: what it sees, what executes when either is edited, failures, cycles,
what cannot be carried, and snapshots that are not this machine's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import Build, Project, ProjectFactory, code, ipynb, markdown, nbcache

PARENT = ipynb(
    markdown("# Parent"),
    code(
        "import pandas as pd\n"
        "import os\n"
        "rows = 3\n"
        "frame = pd.DataFrame({'x': range(rows)})\n"
        "def double(v):\n"
        "    return 2 * v\n"
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "print('parent pid', os.getpid())"
    ),
    code("print('parent sees rows =', rows)"),
)


def child(name: str, parent: str, *cells: dict[str, object]) -> str:
    return ipynb(markdown(f"# {name.title()}"), *cells, metadata={"nbcache": {"inherit": parent}})


CHILD = child(
    "child",
    "parent.ipynb",
    code("print('child got', rows, double(rows), Point(5).x, frame['x'].sum())"),
    code("rows = 100\nprint('child set rows =', rows)"),
)


GRANDCHILD = """\
---
file_format: mystnb
kernelspec:
  name: python3
  display_name: Python 3
nbcache:
  inherit: ../child.ipynb
---
# Grandchild

```{code-cell} ipython3
print('grandchild got', rows)
```
"""
"""Any format: a MyST notebook inherits through its front matter."""


def text_of(build: Build, docname: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", build.html(docname)))


def build(project: Project, state: Path, *args: str) -> Build:
    """A build whose snapshots go to ``state`` (the local state folder)."""
    return project.build(*args, env={"XDG_STATE_HOME": str(state)})


def test_a_child_starts_from_its_parents_final_state(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    project = make_project(
        {
            "parent.ipynb": PARENT,
            "child.ipynb": CHILD,
            "sub/grandchild.md": GRANDCHILD,
        }
    )
    first = build(project, state, "-D", "nbcache_report=report.json")
    assert first.returncode == 0, first.stderr
    assert first.executed == ["child.ipynb", "parent.ipynb", "sub/grandchild.md"]
    assert not first.warnings, first.warnings
    shown = text_of(first, "child")
    assert "child got 3 6 5 3" in shown and "child set rows = 100" in shown
    assert "Starts from the final kernel state of Parent ." in shown
    assert 'href="parent.html"' in first.html("child")
    assert "parent sees rows = 3" in text_of(first, "parent")
    # a chain: the grandchild gets what the child left
    assert "grandchild got 100" in text_of(first, "sub/grandchild")
    assert len(list((state / "sphinx-nbcache" / "snapshots").glob("*.state"))) == 2
    # the summary says what inheriting saved: the parent's run for the child, both runs
    # for the grandchild
    report = json.loads((first.outdir / "report.json").read_text())
    runtime = {n["docname"]: n["runtime"] for n in report["notebooks"]}
    inherited = {n["docname"]: n["inherited_seconds"] for n in report["notebooks"]}
    assert inherited["child"] == round(runtime["parent"], 3)
    assert inherited["sub/grandchild"] == round(runtime["parent"] + runtime["child"], 3)
    assert f"{report['summary']['inherited_seconds']:.1f} s by inheriting" in first.stdout

    assert build(project, state).executed == []
    # a prose edit in the parent: pages read again, nothing executes
    project.edit("parent.ipynb", "# Parent", "# The parent")
    prose = build(project, state)
    assert prose.executed == []
    assert "child got 3 6 5 3" in text_of(prose, "child")
    # a child's edit executes that child and what inherits from it, from kept states
    project.edit("child.ipynb", "rows = 100", "rows = 200")
    edited = build(project, state)
    assert edited.executed == ["child.ipynb", "sub/grandchild.md"]
    assert "grandchild got 200" in text_of(edited, "sub/grandchild")
    # the parent's code: all three
    project.edit("parent.ipynb", "rows = 3", "rows = 4")
    again = build(project, state)
    assert again.executed == ["child.ipynb", "parent.ipynb", "sub/grandchild.md"]
    assert "child got 4 8 5 6" in text_of(again, "child")


RENDEZVOUS = (
    "import pathlib, time\n"
    "pathlib.Path('{me}.ready').touch()\n"
    "waited = 0\n"
    "while not pathlib.Path('{other}.ready').exists() and waited < 60:\n"
    "    time.sleep(0.1)\n"
    "    waited += 0.1\n"
    "print('{me} met {other}:', pathlib.Path('{other}.ready').exists())"
)
"""Each of two children waits for the other to start: both finish only side by side."""


def test_children_run_side_by_side_each_with_its_own_copy(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project(
        {
            "parent.ipynb": PARENT,
            "one.ipynb": child(
                "one",
                "parent.ipynb",
                code("rows = 100\nframe['x'] = 0"),
                code(RENDEZVOUS.format(me="one", other="two")),
            ),
            "two.ipynb": child(
                "two",
                "parent.ipynb",
                code(RENDEZVOUS.format(me="two", other="one")),
                code("print('two got', rows, frame['x'].sum())"),
            ),
        },
        "nbcache_workers = 2\n",
    )
    first = build(project, tmp_path / "state")
    assert first.returncode == 0, first.stderr
    assert first.executed == ["one.ipynb", "parent.ipynb", "two.ipynb"]
    assert "one met two: True" in text_of(first, "one")
    assert "two met one: True" in text_of(first, "two")
    # what one changed is not what two got, nor what the parent's page shows
    assert "two got 3 3" in text_of(first, "two")
    assert "parent sees rows = 3" in text_of(first, "parent")
    # one child edited: that child alone; the parent's code: all three
    project.edit("two.ipynb", "two got", "two has")
    assert build(project, tmp_path / "state").executed == ["two.ipynb"]
    project.edit("parent.ipynb", "rows = 3", "rows = 5")
    again = build(project, tmp_path / "state")
    assert again.executed == ["one.ipynb", "parent.ipynb", "two.ipynb"]
    assert "two has 5 10" in text_of(again, "two")


def test_failures_cycles_and_what_cannot_be_carried(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    project = make_project(
        {
            "broken.ipynb": ipynb(markdown("# Broken"), code("x = 1"), code("1 / 0")),
            "orphan.ipynb": child("orphan", "broken.ipynb", code("print(x)")),
            "a.ipynb": child("a", "b.ipynb", code("print('a')")),
            "b.ipynb": child("b", "a.ipynb", code("print('b')")),
            "lost.ipynb": child("lost", "nowhere/nothing.ipynb", code("print('lost')")),
            "odd.ipynb": ipynb(
                markdown("# Odd"),
                code("import threading\nlock = threading.Lock()\ngen = (i for i in range(3))"),
                code("kept = 7"),
            ),
            "heir.ipynb": child("heir", "odd.ipynb", code("print('heir got', kept)")),
        }
    )
    reports = ("-D", "nbcache_report=report.json", "-D", "nbcache_junit=junit.xml")
    first = build(project, state, *reports)
    assert first.returncode == 0, first.stderr
    assert first.executed == ["broken.ipynb", "heir.ipynb", "odd.ipynb"]
    report, suite = first.reports("report.json", "junit.xml")
    statuses = {n["docname"]: n["status"] for n in report["notebooks"]}
    assert statuses["orphan"] == "not-executed" and statuses["broken"] == "cell-error"
    assert suite.get("skipped") == "1"
    assert "orphan.ipynb not executed: inherits from broken.ipynb" in first.stdout
    warnings = first.warnings
    [orphan] = [w for w in warnings if "orphan.ipynb" in w]
    assert (
        "WARNING: Notebook not executed: inherits from broken.ipynb, which failed in code "
        "cell 2 (ZeroDivisionError: division by zero)"
    ) in orphan
    [cycle_a] = [w for w in warnings if "a.ipynb" in w and "cycle" in w]
    assert "the notebooks inherit in a cycle: a -> b -> a" in cycle_a
    [lost] = [w for w in warnings if "lost.ipynb" in w]
    assert "'nowhere/nothing.ipynb' is not a notebook of the project" in lost
    [odd] = [w for w in warnings if "do not get" in w]
    assert "odd.ipynb: WARNING: the notebooks inheriting from this one do not get gen:" in odd
    assert "heir got 7" in text_of(first, "heir")

    # the parent's failure comes from the cache: the orphan is still not executed
    project.edit("orphan.ipynb", "print(x)", "print(x + 1)")
    second = build(project, state)
    assert second.executed == []
    assert any("orphan.ipynb" in w and "which failed in code cell 2" in w for w in second.warnings)
    # fixed, the parent executes and the orphan with it
    project.edit("broken.ipynb", "1 / 0", "1 / 1")
    fixed = build(project, state)
    assert fixed.executed == ["broken.ipynb", "orphan.ipynb"]
    assert " 2 " in text_of(fixed, "orphan")


def test_a_snapshot_from_elsewhere_is_never_loaded(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A snapshot signed with another machine's secret (copied in, or forged) is a miss:
    the parent executes again for its state, once for all its children."""
    state = tmp_path / "state"
    project = make_project(
        {
            "parent.ipynb": PARENT,
            "child.ipynb": CHILD,
            "other.ipynb": child("other", "parent.ipynb", code("print('other got', rows)")),
        }
    )
    assert build(project, state).returncode == 0
    [snapshot] = (state / "sphinx-nbcache" / "snapshots").glob("*.state")
    # this machine's secret is now another one: the kept snapshot is as good as one
    # signed on another machine and copied in
    (state / "sphinx-nbcache" / "secret").write_bytes(b"x" * 32)
    project.edit("child.ipynb", "rows = 100", "rows = 101")
    project.edit("other.ipynb", "other got", "other has")
    forged = build(project, state)
    assert forged.executed == ["child.ipynb", "other.ipynb", "parent.ipynb"]
    assert "executing it again for its final state" in forged.stdout + forged.stderr
    assert "other has 3" in text_of(forged, "other")
    assert snapshot.exists()  # rewritten, signed with the secret now in force
    # the parent ran for its state only: its stored result stays, nothing is stale
    assert build(project, state, "-E").executed == []


def test_a_file_the_parent_reads_changes_what_its_children_start_from(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """Same code, same keys, another state: the children execute again after the parent."""
    state = tmp_path / "state"
    project = make_project(
        {
            "parent.ipynb": ipynb(
                markdown("# Parent"), code("size = len(open('data.txt').read())")
            ),
            "child.ipynb": child("child", "parent.ipynb", code("print('size', size)")),
        }
    )
    project.write("data.txt", "abc")
    assert build(project, state).executed == ["child.ipynb", "parent.ipynb"]
    project.write("data.txt", "abcdef")
    changed = build(project, state)
    assert changed.executed == ["child.ipynb", "parent.ipynb"]
    assert "size 6" in text_of(changed, "child")
    assert build(project, state, "-E").executed == []


def test_the_command_line_lists_the_chain_and_executes_what_a_build_would(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    project = make_project({"parent.ipynb": PARENT, "child.ipynb": CHILD})
    executed = nbcache(project, "execute", env=state)
    assert executed.returncode == 0, executed.stderr
    assert "nbcache: [2/2]" in executed.stdout
    status = nbcache(project, "status", env=state)
    assert status.returncode == 0, status.stdout
    assert re.search(r"child\.ipynb\s+cached, up to date\s+[\d.]+\s+parent\.ipynb", status.stdout)
    shown = json.loads(nbcache(project, "show", "child.ipynb", "--json", env=state).stdout)
    assert shown["inherits"] == ["parent.ipynb"]
    assert "inherits: parent.ipynb" in nbcache(project, "show", "child.ipynb", env=state).stdout
    # a build after the command executes nothing, and the child starts from the kept state
    assert project.build(env=state).executed == []
    project.edit("child.ipynb", "rows = 100", "rows = 300")
    assert "1 of 2 notebook(s) would execute" in nbcache(project, "status", env=state).stdout
    again = nbcache(project, "execute", env=state)
    assert "nbcache: [1/1] child.ipynb executed" in again.stdout
    # pruning an entry removes the kernel state kept for it
    snapshots = tmp_path / "state" / "sphinx-nbcache" / "snapshots"
    assert len(list(snapshots.glob("*.state"))) == 1
    pruned = nbcache(project, "prune", "--max-size", "1k", env=state)
    assert "removed 1 kernel state snapshot(s)" in pruned.stdout
    assert list(snapshots.glob("*.state")) == []


SAME_APP_TWICE = """\
import sys
from pathlib import Path

from sphinx.application import Sphinx

app = Sphinx(".", ".", "_build/html", "_build/doctrees", "html", status=None)
app.build()
parent = Path("parent.ipynb")
parent.write_text(parent.read_text().replace("rows = 3", "rows = 8"))
app.build()
"""


def test_two_builds_of_one_application_plan_from_the_parent_as_it_is_now(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """An editor's preview builds again in the same process: the second build must not
    plan the child from the first build's reading of its parent."""
    project = make_project({"parent.ipynb": PARENT, "child.ipynb": CHILD})
    script = tmp_path / "twice.py"
    script.write_text(SAME_APP_TWICE)
    subprocess.run(
        [sys.executable, str(script)],
        cwd=project.root,
        check=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
        timeout=300,
    )
    html = (project.root / "_build" / "html" / "child.html").read_text()
    assert "child got 8 16 5 28" in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


FILES_AND_TEMP = ipynb(
    markdown("# Parent"),
    code("log = open('log.txt', 'w')\nlog.write('the parent wrote this')\nlog.flush()\nkept = 1"),
)


def test_open_files_stay_behind_and_states_never_reach_the_working_folder(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A file open for writing is not reopened (and emptied) by each child; with a temporary
    working folder, whose files come back from the cache, no state file is among them."""
    project = make_project(
        {
            "parent.ipynb": FILES_AND_TEMP,
            "child.ipynb": child("child", "parent.ipynb", code("print('kept', kept)")),
        },
        "nb_execution_in_temp = True\n",
    )
    first = build(project, tmp_path / "state")
    assert first.returncode == 0, first.stderr
    assert "kept 1" in text_of(first, "child")
    [left] = [w for w in first.warnings if "do not get" in w]
    assert "do not get log:" in left
    assert (project.root / "log.txt").read_text() == "the parent wrote this"
    assert ".state" not in first.stdout  # "restored final.state from the cache" would be
    assert sorted(p.name for p in project.root.iterdir() if "state" in p.name) == []
