"""What a notebook reads, found while it executes: local modules it imports and files it
opens, so that the cache can tell when they change.

A hidden setup request installs an audit hook in the kernel (Python kernels only) before
the first cell; a hidden collection request after the last cell reads what it saw. Both are
``silent`` requests: no output, no execution count, no history, and no name left in the
notebook's namespace. The hook also tells whose each import is: the notebook's when a frame
of its code (globals: IPython's ``user_ns``) is on the stack, IPython's own otherwise (the
modules it loads to show a traceback), so that only the notebook's count as its packages.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

SETUP = r"""
def _setup():
    import os, sys, types
    state = types.ModuleType("_nbcache_discover")
    state.before = set(sys.modules)
    state.read, state.written = set(), set()
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    user_ns = getattr(shell, "user_ns", None)
    state.own, state.others, state.collecting = set(), set(), False

    def by_notebook():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_globals is user_ns:
                return True
            frame = frame.f_back
        return False

    def hook(event, args):
        if event == "import" and args and user_ns is not None and not state.collecting:
            (state.own if by_notebook() else state.others).add(args[0])
            return
        if event != "open" or not args:
            return
        path = args[0]
        if isinstance(path, int):
            return
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        try:
            (state.written if writes else state.read).add(os.path.abspath(os.fsdecode(path)))
        except Exception:
            pass

    def collect():
        state.collecting = True
        import ast, json, platform
        modules, tops, noted = set(), set(), set()
        # loaded by IPython's own machinery (a traceback's stack_data, pygments, ...),
        # outside the notebook's code; without an import event (importlib), a module counts
        theirs = state.others - state.own

        def note(name, package=True):
            file = getattr(sys.modules.get(name), "__file__", None)
            if not isinstance(file, str):
                return
            if name not in noted:
                noted.add(name)
                modules.add(os.path.abspath(file))
            if package:
                tops.add(name.partition(".")[0])

        def note_with_parents(name):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                note(".".join(parts[:end]))

        name_of = types.ModuleType.__getattribute__  # a lazy module's own would load it
        for name in set(sys.modules) - state.before:
            package = name not in theirs
            note(name, package)
            for value in list(getattr(sys.modules.get(name), "__dict__", {}).values()):
                if isinstance(value, types.ModuleType):
                    note(name_of(value, "__name__"), package)
        shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
        for source in getattr(getattr(shell, "history_manager", None), "input_hist_parsed", []):
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        note_with_parents(alias.name)
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    note_with_parents(node.module)
                    for alias in node.names:
                        note(f"{node.module}.{alias.name}")
        return json.dumps({
            "modules": sorted(modules),
            "read": sorted(state.read),
            "written": sorted(state.written),
            "imported": sorted(tops),
            "python": platform.python_version(),
        })

    state.collect = collect
    sys.modules["_nbcache_discover"] = state
    sys.addaudithook(hook)
_setup()
del _setup
"""
"""Runs in the kernel; ``exec`` in a fresh namespace keeps the notebook's own clean."""

SETUP_REQUEST = f"exec({SETUP!r}, {{}})"
COLLECT_EXPRESSION = '__import__("sys").modules["_nbcache_discover"].collect()'

SKIPPED_PARTS = frozenset({"__pycache__", "_build", "jupyter_execute", ".nbcache"})


def relevant(
    paths: Iterable[str],
    root: Path,
    ignore: Iterable[str],
    links: Mapping[str, str] | None = None,
    excluded: Iterable[str] = (),
) -> list[str]:
    """Files inside ``root`` that are inputs: not in hidden folders, caches, build output
    or a virtual environment under the project, not among the ``ignore``d files (those
    the notebook wrote itself), and not under the ``excluded`` folders (the cache, wherever
    ``nbcache_path`` puts it: its database changes with every entry written). A file
    outside ``root`` in a folder the source tree reaches through a symbolic link
    (``links``, see :func:`linked_folders`) is named by the path through the link, as the
    project uses it."""
    skipped = {os.path.realpath(path) for path in ignore}
    outside = tuple(os.path.realpath(folder).rstrip(os.sep) + os.sep for folder in excluded)
    inside = str(root).rstrip(os.sep) + os.sep
    through = sorted((links or {}).items(), key=lambda link: -len(link[0]))
    known: dict[str, str] = {}
    found = set()
    for path in paths:
        if path.endswith(".pyc"):  # what the import system read for a module listed itself
            continue
        real = _resolved(path, known)
        if real in skipped or not (real.startswith(inside) or through) or not Path(real).is_file():
            continue
        if outside and real.startswith(outside):
            continue
        if real.startswith(inside):
            relative = PurePosixPath(Path(real).relative_to(root).as_posix())
        else:
            shown = _through_link(real, through)
            if shown is None:
                continue
            relative = PurePosixPath(shown)
        parts = relative.parts
        if any(part.startswith(".") or part in SKIPPED_PARTS for part in parts[:-1]):
            continue
        if "site-packages" in parts or relative.suffix == ".pyc":
            continue
        found.add(relative.as_posix())
    return sorted(found)


def _through_link(real: str, links: list[tuple[str, str]]) -> str | None:
    """``real`` as the project names it through the first of ``links`` (real folder, path
    the project uses; longest first) that holds it; None if none does."""
    for folder, used in links:
        if real.startswith(folder.rstrip(os.sep) + os.sep):
            return used + "/" + Path(real[len(folder) :].lstrip(os.sep)).as_posix()
    return None


def linked_folders(srcdir: Path, root: Path) -> dict[str, str]:
    """Folders of the source tree that are symbolic links (numpy-tutorials' ``site/content
    -> ../content``): the real folder, as the kernel reports the paths of files in it,
    -> the path the project uses, relative to ``root``. Sphinx reads documents through
    such links, so files read through them are the project's too; links inside a linked
    folder are not looked for. Only reading is at stake: nothing is written through them
    (artefacts are restored only under a notebook's own folder)."""
    found: dict[str, str] = {}
    for current, folders, _ in os.walk(srcdir):
        kept = []
        for name in folders:
            if name.startswith(".") or name in SKIPPED_PARTS:
                continue
            path = os.path.join(current, name)  # noqa: PTH118 (walking, as os.walk gives it)
            if not os.path.islink(path):  # noqa: PTH114
                kept.append(name)
                continue
            used = os.path.relpath(path, root)
            real = os.path.realpath(path)
            if not used.startswith("..") and os.path.isdir(real):  # noqa: PTH112
                found.setdefault(real, Path(used).as_posix())
        folders[:] = kept
    return found


def _resolved(path: str, known: dict[str, str]) -> str:
    """``os.path.realpath`` of an absolute, normalised path, each folder resolved once: a
    notebook importing pandas and matplotlib reports over a thousand module files in a few
    hundred folders, and resolving every path from the top took a tenth of a second."""
    found = known.get(path)
    if found is None:
        parent, name = os.path.split(path)
        if not name:
            return path
        # strings, not Path objects: this runs for every path of every notebook
        joined = os.path.join(_resolved(parent, known), name)  # noqa: PTH118
        found = os.path.realpath(joined) if os.path.islink(joined) else joined  # noqa: PTH114
        known[path] = found
    return found


def parse_collected(reply: dict[str, Any]) -> dict[str, Any] | None:
    """The collection request's answer, from its ``user_expressions``; None if missing."""
    value = reply.get("content", {}).get("user_expressions", {}).get("discovered", {})
    if value.get("status") != "ok":
        return None
    text = value.get("data", {}).get("text/plain")
    try:
        data = json.loads(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


class FileDigests:
    """sha256 of files for one run, each file hashed once while it stays as it was:
    notebooks that read the same data file or import the same module share one hash. A
    file whose size or modification time moved since (a notebook rewrote it) is hashed
    again; the contents decide, the times only say when to look again."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, int, str]] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        known = self._known.get(path)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = file_digest(path)
        self._known[path] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest


def dependencies(
    collected: dict[str, Any],
    root: Path,
    digest: Callable[[Path], str] = file_digest,
    links: Mapping[str, str] | None = None,
    excluded: Iterable[str] = (),
) -> dict[str, str]:
    """Project-relative path -> sha256 of every module and file the notebook read
    (``links`` and ``excluded`` as for :func:`relevant`)."""
    inputs = relevant(
        [*collected.get("modules", []), *collected.get("read", [])],
        root,
        collected.get("written", []),
        links,
        excluded,
    )
    return {path: digest(root / path) for path in inputs}
