"""Resuming from the first changed cell, with real kernels and builds: which cells execute
after an edit (each cell writes a line to a log outside the project), execution counts,
outputs equal to a full run's, and the fallback when a kept state cannot be used."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from helpers import Build, Project, ProjectFactory, code, ipynb, markdown, nbcache
from sphinx_nbcache.cache.store import Store


def logged(log: Path, name: str, source: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """A code cell that appends ``name`` to ``log`` when it runs, then runs ``source``."""
    return code(
        f"with open({str(log)!r}, 'a') as _log:\n    _log.write('{name}\\n')\n{source}", tags
    )


def runs(log: Path) -> list[str]:
    """The cells that ran since the last call."""
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


RESUME = "nbcache_resume = True\n"


def build(project: Project, state: Path, *args: str) -> Build:
    """A build whose checkpoints go to ``state`` (the local state folder)."""
    return project.build(*args, env={"XDG_STATE_HOME": str(state)})


def stored(project: Project, source: str) -> Any:
    """The newest stored result of ``source``."""
    store = Store(project.root / ".nbcache")
    try:
        results = [store.get(key) for key in store.keys_of(source)]
        return max((r for r in results if r is not None), key=lambda r: r.finished)
    finally:
        store.close()


def counts(build: Build, docname: str) -> list[str]:
    """The execution counts the page shows, as myst-nb renders them."""
    return re.findall(r'data-execution-count="(\d+)"', build.html(docname)) or re.findall(
        r"\[(\d+)\]:", build.html(docname)
    )


def analysis(log: Path) -> str:
    return ipynb(
        markdown("# Analysis"),
        logged(
            log,
            "load",
            "import random\nimport numpy as np\nimport pandas as pd\n"
            "random.seed(1)\nnp.random.seed(2)\nframe = pd.DataFrame({'v': np.random.rand(5)})",
            ("checkpoint",),
        ),
        markdown("Some prose between the cells."),
        logged(
            log,
            "model",
            "total = frame['v'].sum()\nprint('model', round(total, 6))",
            ("checkpoint",),
        ),
        logged(
            log,
            "report",
            "print('report', round(total + random.random() + np.random.rand(), 6))",
        ),
    )


def test_an_edit_executes_from_the_first_changed_cell(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state, log = tmp_path / "state", tmp_path / "runs.log"
    project = make_project({"analysis.ipynb": analysis(log)}, conf_extra=RESUME)
    first = build(project, state)
    assert first.returncode == 0, first.stderr
    assert runs(log) == ["load", "model", "report"]
    entry = stored(project, "analysis.ipynb")
    assert [c["cell"] for c in entry.checkpoints] == [0, 1], entry.checkpoint_error
    assert all(c["bytes"] > 0 and c["seconds"] >= 0 for c in entry.checkpoints)
    full = entry.outputs

    # the last cell: only it executes, from the state after the second, counts go on
    project.edit("analysis.ipynb", "print('report',", "print('the report',")
    last = build(project, state, "-D", "nbcache_report=r.json", "-D", "nbcache_junit=j.xml")
    assert last.executed == ["analysis.ipynb"]
    assert runs(log) == ["report"]
    report, _ = last.reports("r.json", "j.xml")
    (page,) = report["notebooks"]
    assert page["resumed_from"] == 3
    assert page["resumed_seconds"] == round(sum(entry.cell_times[:2]), 3)
    assert [c["cell"] for c in page["checkpoints"]] == [1, 2]
    assert report["summary"]["resumed"] == 1
    assert "s by resuming 1 from checkpoints" in last.stdout
    assert "Cached executed notebook (executed from code cell 3 on" in last.stdout
    resumed = stored(project, "analysis.ipynb")
    assert resumed.resumed_from == 1
    assert resumed.execution_counts == [1, 2, 3]
    assert resumed.outputs[:2] == full[:2]
    assert [o["text"] for o in resumed.outputs[2]] == [
        o["text"].replace("report", "the report") for o in full[2]
    ]
    assert "the report" in last.html("analysis")
    assert not last.warnings, last.warnings

    # the middle cell: from the state after the first
    project.edit("analysis.ipynb", "print('model',", "print('the model',")
    middle = build(project, state)
    assert middle.executed == ["analysis.ipynb"]
    assert runs(log) == ["model", "report"]
    assert stored(project, "analysis.ipynb").resumed_from == 0

    # the first cell: from the start; a prose edit: nothing
    project.edit("analysis.ipynb", "random.seed(1)", "random.seed(1)  # seeded")
    assert build(project, state).executed == ["analysis.ipynb"]
    assert runs(log) == ["load", "model", "report"]
    project.edit("analysis.ipynb", "Some prose", "Other prose")
    assert build(project, state).executed == []
    assert runs(log) == []


FIGURES = ipynb(
    markdown("# Figures"),
    code(
        "import random\nimport numpy as np\nimport pandas as pd\nimport matplotlib\n"
        "import matplotlib.pyplot as plt\n"
        "random.seed(3)\nnp.random.seed(4)\n"
        "plt.rcParams['lines.linewidth'] = 4\n"
        "np.set_printoptions(precision=2)\nimport warnings\nwarnings.simplefilter('ignore')\n"
        "frame = pd.DataFrame({'x': np.arange(8), 'y': np.random.rand(8)})",
        ("checkpoint",),
    ),
    code(
        "frame['z'] = frame['y'].cumsum() + np.random.rand(8)\n"
        "fig, ax = plt.subplots(figsize=(3, 2), dpi=50)\nax.plot(frame['x'], frame['z'])\n"
        "frame.describe()",
        ("checkpoint",),
    ),
    code(
        "print(random.random(), np.random.rand(3))\nwarnings.warn('hidden')\n"
        "plt.plot(frame['y'])\nplt.show()"
    ),
)


def test_resumed_outputs_equal_a_full_run(make_project: ProjectFactory, tmp_path: Path) -> None:
    """Random numbers (Python's and NumPy's global generators), a data frame, matplotlib
    figures, and settings made in an earlier cell (``rcParams``, NumPy's print options,
    warning filters): what resuming gives is what a run from the first cell gives."""
    state = tmp_path / "state"
    resuming = make_project({"figures.ipynb": FIGURES}, conf_extra=RESUME, name="resuming")
    full = make_project(
        {"figures.ipynb": FIGURES}, conf_extra="nbcache_resume = False\n", name="full"
    )
    for project in (resuming, full):
        assert build(project, state).returncode == 0
        project.edit("figures.ipynb", "print(random.random()", "print('after', random.random()")
        again = build(project, state)
        assert again.executed == ["figures.ipynb"], again.stderr
    resumed, complete = stored(resuming, "figures.ipynb"), stored(full, "figures.ipynb")
    assert resumed.resumed_from == 1 and complete.resumed_from is None
    assert complete.checkpoints == []
    assert resumed.execution_counts == complete.execution_counts == [1, 2, 3]
    assert resumed.outputs == complete.outputs
    assert any("image/png" in o.get("data", {}) for o in resumed.outputs[2])
    assert "stderr" not in str(resumed.outputs[2])  # the warning stays hidden


def test_a_kept_state_that_cannot_be_used_falls_back_to_a_full_run(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state, log = tmp_path / "state", tmp_path / "runs.log"
    project = make_project({"analysis.ipynb": analysis(log)}, conf_extra=RESUME)
    assert build(project, state).returncode == 0
    runs(log)
    # checkpoints damaged on disk (or written by another machine: the signature fails)
    for kept in (state / "sphinx-nbcache" / "snapshots").glob("*.state"):
        kept.write_bytes(kept.read_bytes()[:-10] + b"0123456789")
    project.edit("analysis.ipynb", "print('report',", "print('the report',")
    fallback = build(project, state)
    assert fallback.executed == ["analysis.ipynb"]
    assert runs(log) == ["load", "model", "report"]
    assert "the report" in fallback.html("analysis")
    assert stored(project, "analysis.ipynb").resumed_from is None
    assert len(fallback.warnings) == 1, fallback.warnings
    assert (
        "analysis.ipynb: WARNING: the kernel state kept after code cell 2 does not verify "
        "(damaged, or not written on this machine); executing from its first cell "
        "[nbcache.resume]"
    ) in fallback.warnings[0]
    # the run kept new states: the next edit resumes again
    project.edit("analysis.ipynb", "print('the report',", "print('a report',")
    assert build(project, state).executed == ["analysis.ipynb"]
    assert runs(log) == ["report"]


def test_a_state_that_does_not_load_falls_back_to_a_full_run(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A kept state that verifies but cannot be loaded: it holds an object of a class
    that its module (outside the project, so not a dependency) no longer defines."""
    state, log, lib = tmp_path / "state", tmp_path / "runs.log", tmp_path / "lib"
    lib.mkdir()
    (lib / "shapes.py").write_text("class Square:\n    side = 2\n")
    notebook = ipynb(
        logged(
            log,
            "load",
            f"import sys\nsys.path.insert(0, {str(lib)!r})\nimport shapes\n"
            "shape = shapes.Square() if hasattr(shapes, 'Square') else None",
            ("checkpoint",),
        ),
        logged(log, "show", "print('shape', shape)"),
    )
    project = make_project({"shapes.ipynb": notebook}, conf_extra=RESUME)
    assert build(project, state).returncode == 0
    runs(log)
    (lib / "shapes.py").write_text("class Circle:\n    radius = 1\n")
    project.edit("shapes.ipynb", "print('shape',", "print('the shape',")
    fallback = build(project, state)
    assert fallback.executed == ["shapes.ipynb"]
    assert runs(log) == ["load", "show"]
    assert "the shape None" in fallback.html("shapes")
    assert len(fallback.warnings) == 1, fallback.warnings
    assert re.search(
        r"shapes.ipynb: WARNING: restoring the kernel state kept after code cell 1 failed: "
        r"AttributeError: .*Square.*; executed the notebook from its first cell \[nbcache.resume\]",
        fallback.warnings[0],
    ), fallback.warnings[0]
    entry = stored(project, "shapes.ipynb")
    assert entry.resumed_from is None and entry.execution_counts == [1, 2]


def test_what_cannot_be_pickled_and_opting_out_mean_no_resume(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state, log = tmp_path / "state", tmp_path / "runs.log"
    unpicklable = ipynb(
        logged(log, "one", "numbers = (n for n in range(3))", ("checkpoint",)),
        logged(log, "two", "print('two')"),
    )
    opted_out = ipynb(
        logged(log, "three", "x = 1", ("checkpoint",)),
        logged(log, "four", "print('four')"),
        metadata={"nbcache": {"resume": False}},
    )
    project = make_project({"gen.ipynb": unpicklable, "out.ipynb": opted_out}, conf_extra=RESUME)
    first = build(project, state)
    assert first.returncode == 0 and not first.warnings, first.warnings
    assert "gen.ipynb: no kernel state kept after code cell 1: numbers cannot be pickled" in (
        first.stdout
    )
    assert stored(project, "out.ipynb").checkpoints == []
    runs(log)
    project.edit("gen.ipynb", "print('two')", "print('2')")
    project.edit("out.ipynb", "print('four')", "print('4')")
    assert build(project, state).executed == ["gen.ipynb", "out.ipynb"]
    assert sorted(runs(log)) == ["four", "one", "three", "two"]


def test_slow_cells_keep_checkpoints(make_project: ProjectFactory, tmp_path: Path) -> None:
    """Without tags: after cells that took ``nbcache_checkpoint_after`` seconds since the
    last checkpoint."""
    state = tmp_path / "state"
    slow = ipynb(
        code("import time\ntime.sleep(0.3)"),
        code("time.sleep(0.1)"),
        code("time.sleep(0.25)"),
        code("print('done')"),
    )
    project = make_project(
        {"slow.ipynb": slow}, conf_extra=RESUME + "nbcache_checkpoint_after = 0.3\n"
    )
    assert build(project, state).returncode == 0
    assert [c["cell"] for c in stored(project, "slow.ipynb").checkpoints] == [0, 2]
    status = nbcache(project, "status", env={"XDG_STATE_HOME": str(state)})
    assert status.returncode == 0, status.stderr
    project.edit("slow.ipynb", "print('done')", "print('finished')")
    status = nbcache(project, "status", env={"XDG_STATE_HOME": str(state)})
    assert "would resume from code cell 4" in status.stdout, status.stdout


def test_verify_finds_a_notebook_that_resuming_changes(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """A module attribute set in an earlier cell is state a checkpoint does not carry
    (modules travel by name): resuming gives other outputs than a full run, and ``nbcache
    verify`` says so; a notebook whose state travels whole verifies."""
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    divergent = ipynb(
        code("import string\nstring.magic = 5", ("checkpoint",)),
        code("print('magic', getattr(string, 'magic', 0))"),
    )
    faithful = ipynb(
        code("magic = 5", ("checkpoint",)),
        code("print('magic', magic)"),
    )
    project = make_project(
        {"divergent.ipynb": divergent, "faithful.ipynb": faithful}, conf_extra=RESUME
    )
    assert build(project, state).returncode == 0
    nothing = nbcache(project, "verify", env=env)
    assert nothing.returncode == 0 and "nothing to verify" in nothing.stdout
    for name in ("divergent.ipynb", "faithful.ipynb"):
        project.edit(name, "print('magic',", "print('the magic',")
    edited = build(project, state)
    assert "the magic 0" in edited.html("divergent")  # resumed: the attribute is gone
    assert "the magic 5" in edited.html("faithful")
    verify = nbcache(project, "verify", env=env)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    rows = {line.split()[0]: line for line in verify.stdout.splitlines() if ".ipynb" in line}
    assert "DIFFERS from code cell 2" in rows["divergent.ipynb"]
    assert "same outputs" in rows["faithful.ipynb"]
    assert "1 of 2 notebook(s) differ" in verify.stdout
    # verifying stores nothing; a forced execution stores a full run
    assert nbcache(project, "verify", "faithful.ipynb", env=env).returncode == 0
    forced = nbcache(project, "execute", "--force", "divergent.ipynb", env=env)
    assert forced.returncode == 0, forced.stderr
    assert stored(project, "divergent.ipynb").resumed_from is None
    assert nbcache(project, "verify", env=env).returncode == 0


def test_prune_removes_the_checkpoints_no_entry_uses(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    state, log = tmp_path / "state", tmp_path / "runs.log"
    env = {"XDG_STATE_HOME": str(state)}
    project = make_project({"analysis.ipynb": analysis(log)}, conf_extra=RESUME)
    kept = state / "sphinx-nbcache" / "snapshots"
    assert build(project, state).returncode == 0
    # a resumed run shares the first run's checkpoint after cell 1 and keeps a new one
    project.edit("analysis.ipynb", "print('model',", "print('the model',")
    assert build(project, state).executed == ["analysis.ipynb"]
    assert len(list(kept.glob("*.state"))) == 3
    pruned = nbcache(project, "prune", "--unused", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 kernel state snapshot(s)" in pruned.stdout
    assert len(list(kept.glob("*.state"))) == 2
    # what is left is what the current entry resumes from
    project.edit("analysis.ipynb", "print('report',", "print('the report',")
    assert build(project, state).executed == ["analysis.ipynb"]
    assert runs(log)[-1:] == ["report"] and stored(project, "analysis.ipynb").resumed_from == 1
