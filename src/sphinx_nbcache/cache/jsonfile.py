"""Canonical JSON, its digest, and small JSON files written atomically (no diskcache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any


def canonical_json(payload: Any) -> bytes:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def json_digest(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object kept in a file beside the entries; empty if missing or unreadable."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_json_file(path: Path, value: dict[str, Any]) -> None:
    """Atomically (a concurrent build reads the old or the new file, never half of one);
    best effort, since such files only save time."""
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
        ) as file:
            temporary = Path(file.name)
            json.dump(value, file)
        temporary.replace(path)
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
