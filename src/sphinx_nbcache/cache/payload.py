"""The shape of a stored entry, checked field by field before anything uses it: a row from
elsewhere is data, and data of the wrong shape is a damaged entry, not a crash."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any


class DamagedEntryError(Exception):
    """An entry exists but cannot be trusted; the caller treats it as a miss."""


def check_payload(payload: Any) -> None:
    """Refuse a stored result whose fields are not the types a build wrote, or whose paths
    (files it read, files it wrote) leave the project or the notebook's folder.

    :raises DamagedEntryError: naming the first field that is wrong.
    """

    def need(ok: bool, field: str) -> None:
        if not ok:
            raise DamagedEntryError(f"has a malformed {field!r} field")

    need(isinstance(payload, dict), "result")
    for field in ("key", "source", "finished", "worker"):
        need(isinstance(payload.get(field, ""), str), field)
    need(isinstance(payload.get("succeeded"), bool), "succeeded")
    need(_number(payload.get("runtime")), "runtime")
    outputs = payload.get("outputs")
    need(isinstance(outputs, list) and all(_list_of_dicts(cell) for cell in outputs), "outputs")
    counts = payload.get("execution_counts")
    need(isinstance(counts, list) and all(_count(c) for c in counts), "execution_counts")
    times = payload.get("cell_times")
    need(isinstance(times, list) and all(t is None or _number(t) for t in times), "cell_times")
    need(isinstance(payload.get("metadata"), dict), "metadata")
    need(isinstance(payload.get("environment", {}), dict), "environment")
    error = payload.get("error")
    need(error is None or isinstance(error, dict), "error")
    dependencies = payload.get("dependencies", {})
    need(isinstance(dependencies, dict), "dependencies")
    for path, digest in dependencies.items():
        need(_relative(path) and isinstance(digest, str), "dependencies")
    artefacts = payload.get("artefacts", {})
    need(isinstance(artefacts, dict), "artefacts")
    for path, artefact in artefacts.items():
        need(_relative(path) and isinstance(artefact, dict), "artefacts")
        need(all(isinstance(artefact.get(f), str) for f in ("sha256", "base64")), "artefacts")
    prefix = payload.get("prefix_keys", [])
    need(isinstance(prefix, list) and all(isinstance(key, str) for key in prefix), "prefix_keys")
    checkpoints = payload.get("checkpoints", [])
    need(_list_of_dicts(checkpoints), "checkpoints")
    for checkpoint in checkpoints:
        need(all(_index(checkpoint.get(f)) for f in ("cell", "executed", "bytes")), "checkpoints")
        need(_number(checkpoint.get("seconds")), "checkpoints")
    resumed = payload.get("resumed_from")
    need(resumed is None or _index(resumed), "resumed_from")
    for field in ("checkpoint_error", "resume_error"):
        need(isinstance(payload.get(field, ""), str), field)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list_of_dicts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _relative(path: Any) -> bool:
    """A relative POSIX path that does not climb out of where it is taken from."""
    if not isinstance(path, str) or not path or "\0" in path or "\\" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and not Path(path).drive
