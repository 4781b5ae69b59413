"""Files a notebook writes (figures, data) kept with its entry and restored on a cache
hit, within size limits and never outside the project or as code."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from sphinx_nbcache.inputs.discover import file_digest


def capture_artefacts(
    written: Iterable[str],
    folder: Path,
    max_size: int,
    include: Iterable[str],
    exclude: Iterable[str],
) -> dict[str, dict[str, str]]:
    """Files the notebook wrote inside ``folder`` (its working directory) and that still
    exist, by path relative to it: their sha256 and base64 content. Files over
    ``max_size`` bytes, or not matching ``include`` or matching ``exclude``, are left out."""
    include, exclude = list(include), list(exclude)
    folder = folder.resolve()
    captured = {}
    for path in sorted({os.path.realpath(p) for p in written}):
        file = Path(path)
        try:
            relative = file.relative_to(folder).as_posix()
        except ValueError:
            continue
        if not file.is_file() or file.stat().st_size > max_size:
            continue
        if not any(fnmatch.fnmatchcase(relative, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(relative, p) for p in exclude):
            continue
        data = file.read_bytes()
        captured[relative] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "base64": base64.b64encode(data).decode("ascii"),
        }
    return captured


CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyd", ".pyw", ".so", ".pth", ".dll", ".dylib"})
"""Files Python would import or load: never restored, whatever an entry says, so that a
cache from elsewhere cannot put code where the next notebook imports it."""


def restore_artefacts(
    artefacts: dict[str, dict[str, str]],
    folder: Path,
    protected: Callable[[Path], str | None] = lambda path: None,
) -> tuple[list[str], dict[str, str]]:
    """Write back the artefacts that are missing or differ under ``folder``.

    Only where the notebook itself may write: a relative path that stays inside
    ``folder`` once links are followed, not Python code (:data:`CODE_SUFFIXES`), and not a
    file ``protected`` gives a reason to keep (a source of the project, ``conf.py``, a file
    under version control). Returns the paths written, and those refused with why.
    """
    restored, refused = [], {}
    folder = folder.resolve()
    for relative, artefact in sorted(artefacts.items()):
        target = (folder / relative).resolve()
        why = None
        if not target.is_relative_to(folder) or Path(relative).is_absolute():
            why = "outside the notebook's folder"
        elif target.suffix.lower() in CODE_SUFFIXES:
            why = protected(target) or "Python code"
        else:
            why = protected(target)
        if why is not None:
            refused[relative] = why
            continue
        try:
            if target.is_file() and file_digest(target) == artefact["sha256"]:
                continue
            data = base64.b64decode(artefact["base64"], validate=True)
            if hashlib.sha256(data).hexdigest() != artefact["sha256"]:
                refused[relative] = "its content does not match its checksum"
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except (OSError, ValueError) as exc:
            refused[relative] = f"cannot be written ({exc})"
            continue
        restored.append(relative)
    return restored, refused
