"""Resuming from the first changed cell, with real kernels and builds: which cells execute
after an edit (each cell writes a line to a log outside the project), execution counts,
outputs equal to a full run's, and the fallback when a kept state cannot be used."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from helpers import Build, Project, ProjectFactory, code, ipynb, markdown
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
    project = make_project({"analysis.ipynb": analysis(log)})
    first = build(project, state)
    assert first.returncode == 0, first.stderr
    assert runs(log) == ["load", "model", "report"]
    entry = stored(project, "analysis.ipynb")
    assert [c["cell"] for c in entry.checkpoints] == [0, 1], entry.checkpoint_error
    assert all(c["bytes"] > 0 and c["seconds"] >= 0 for c in entry.checkpoints)
    full = entry.outputs

    # the last cell: only it executes, from the state after the second, counts go on
    project.edit("analysis.ipynb", "print('report',", "print('the report',")
    last = build(project, state)
    assert last.executed == ["analysis.ipynb"]
    assert runs(log) == ["report"]
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
