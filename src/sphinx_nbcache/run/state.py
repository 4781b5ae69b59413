"""A kernel's state, taken as a snapshot: a notebook's final state for the notebooks that
inherit from it, put into theirs before their first cell; and checkpoints after its slow
cells, which a later run of the notebook resumes from.

The state is the user namespace: variables, functions and classes defined in cells (by
value), imported modules (by name: the child imports them again); and, outside it, the
working directory when the notebook changed it, ``sys.path``, the warning filters, the
global random generators of ``random`` and NumPy, NumPy's print options and matplotlib's
``rcParams``. It is pickled with
dill in the kernel itself, one pickle for all names, so that objects shared between names
stay shared. What cannot be pickled (generators, sockets, connections, some C objects) is
left out and named, and so are open files, which dill would open again (truncating a file
open for writing). IPython's own names (``In``, ``Out``, ``_``, ``_i1``...) are not state.
Both requests run silently in a namespace of their own: no output, no execution count,
nothing added to the user's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sphinx_nbcache.model import (
    INHERITANCE_ERROR,
    ExecutionJob,
    ExecutionResult,
    unrun_result,
)
from sphinx_nbcache.notebook.cells import cell_label

SNAPSHOT = """\
import io, json, os, re, sys
import dill
from IPython import get_ipython

shell = get_ipython()
hidden = set(shell.user_ns_hidden) | {"In", "Out", "exit", "quit", "get_ipython"}
ipython_names = re.compile(r"_(i{1,3}|i?[0-9]+|oh|ih|dh)?$|_{2,3}$")
state, left = {}, []
for name, value in list(shell.user_ns.items()):
    if name in hidden or ipython_names.match(name):
        continue
    if isinstance(value, io.IOBase):  # dill would open it again, truncating what is written
        if not getattr(value, "closed", False):  # a closed one is no loss
            left.append(name)
    else:
        state[name] = value
cwd = os.getcwd()
# state outside the namespace that cells commonly depend on
carried = {"sys.path": list(sys.path), "cwd": cwd if cwd != start else None}
carried["warnings"] = list(sys.modules["warnings"].filters)
if "random" in sys.modules:
    carried["random"] = sys.modules["random"].getstate()
if "numpy.random" in sys.modules:
    carried["numpy.random"] = sys.modules["numpy.random"].get_state()
    carried["numpy.printoptions"] = sys.modules["numpy"].get_printoptions()
if "matplotlib" in sys.modules:
    params = sys.modules["matplotlib"].rcParams
    carried["rcParams"] = {k: v for k, v in params.items() if not k.startswith("backend")}


def dump():
    with open(path, "wb") as file:
        dill.dump(carried, file)
        dill.dump(state, file)


try:  # all at once; one name at a time only to find what cannot be pickled
    dump()
except Exception:
    for name, value in list(state.items()):
        try:
            dill.dumps(value)
        except Exception:
            left.append(name)
            del state[name]
    dump()
with open(path + ".left", "w") as file:
    json.dump(sorted(left), file)
"""
"""Run in the kernel with ``path`` (where to write) and ``start`` (its working directory
at start) defined. The carried state comes first, so that what the names need to load
(a module found through ``sys.path``) is there when they do."""

RESTORE = """\
import os, sys
import dill
from IPython import get_ipython

with open(path, "rb") as file:
    carried = dill.load(file)
    sys.path[:] = carried["sys.path"]
    if carried["cwd"] is not None and os.path.isdir(carried["cwd"]):
        os.chdir(carried["cwd"])
    names = dill.load(file)
shell = get_ipython()
shell.user_ns.update(names)
if "random" in carried:
    import random
    random.setstate(carried["random"])
if "numpy.random" in carried:
    import numpy
    numpy.random.set_state(carried["numpy.random"])
    numpy.set_printoptions(**carried["numpy.printoptions"])
if "warnings" in carried:
    import warnings
    warnings.filters[:] = carried["warnings"]
if "rcParams" in carried:
    import matplotlib
    matplotlib.rcParams.update(carried["rcParams"])
if executed is not None:
    shell.execution_count = executed + 1
"""
"""Run in the kernel with ``path`` (the snapshot) and ``executed`` (the code cells run
before it was taken, for execution counts to go on from; None to leave them) defined."""


def snapshot_request(path: Path, start: str) -> str:
    return f"exec({SNAPSHOT!r}, {{'path': {str(path)!r}, 'start': {start!r}}})"


def restore_request(path: Path, executed: int | None = None) -> str:
    count = None if executed is None else int(executed)  # code: never anything but a number
    return f"exec({RESTORE!r}, {{'path': {str(path)!r}, 'executed': {count!r}}})"


def left_out(path: Path) -> list[str]:
    """The names the snapshot at ``path`` could not carry."""
    try:
        names = json.loads(Path(f"{path}.left").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(name) for name in names] if isinstance(names, list) else []


def reply_error(reply: dict[str, Any] | None) -> str | None:
    """What went wrong in a request, from its reply; None if it succeeded."""
    if reply is None:
        return "the kernel did not answer"
    content = reply.get("content", {})
    if content.get("status") == "ok":
        return None
    return f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"


def parent_failed(
    job: ExecutionJob, parent: ExecutionResult, cells: Sequence[Any]
) -> ExecutionResult:
    """The result of a notebook not executed because the one it inherits from failed
    (``cells``: that one's); never stored, so it executes once its parent succeeds."""
    error = parent.error
    where = (
        ""
        if error is None or error.cell_index is None
        else f" in {cell_label(cells, error.cell_index)}"
    )
    what = "" if error is None else f" ({error.name}: {error.value})"
    value = f"inherits from {parent.source}, which failed{where}{what}"
    return unrun_result(job, INHERITANCE_ERROR, value)
