"""The only module that touches diskcache: JSON entries, checked on every read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import diskcache

from sphinx_nbcache.execute import ExecutionResult

STORE_SCHEMA = 1
"""Bump when the entry layout changes; entries of another schema are misses."""
PARSED_SCHEMA = 1
PARSED_FOLDER = "parsed"
"""Beside the entries: :class:`ParsedStore`'s files."""


class DamagedEntryError(Exception):
    """An entry exists but cannot be trusted; the caller treats it as a miss."""


def _canonical(payload: dict[str, Any]) -> bytes:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(payload)).hexdigest()


class Store:
    """A diskcache directory of execution results keyed by notebook key.

    Values go through diskcache's ``JSONDisk`` (zlib-compressed JSON): a cache restored from
    a shared CI cache can never unpickle code. Eviction is off, so a build never silently
    loses entries it still needs; diskcache reconnects by itself after ``fork``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: diskcache.Cache | None = None

    @property
    def cache(self) -> diskcache.Cache:
        if self._cache is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                disk=diskcache.JSONDisk,
                disk_compress_level=6,
                eviction_policy="none",
                statistics=False,
            )
        return self._cache

    def __contains__(self, key: str) -> bool:
        return key in self.cache

    def get(self, key: str) -> ExecutionResult | None:
        """The stored result, or None if there is none.

        :raises DamagedEntryError: if an entry is there but unreadable or inconsistent.
        """
        return self.load(key)[0]

    def load(self, key: str) -> tuple[ExecutionResult | None, int]:
        """:meth:`get`, with the size of the result as JSON (0 when there is none), for a
        caller that keeps results in memory within a budget."""
        try:
            envelope = self.cache.get(key, default=None, retry=True)
        except Exception as exc:
            raise DamagedEntryError(f"cannot be loaded ({type(exc).__name__}: {exc})") from exc
        if envelope is None:
            return None, 0
        try:
            if envelope["schema"] != STORE_SCHEMA:
                raise DamagedEntryError(f"has schema {envelope['schema']}, not {STORE_SCHEMA}")
            if envelope["key"] != key:
                raise DamagedEntryError("is stored under another key")
            payload = envelope["result"]
            canonical = _canonical(payload)
            if envelope["digest"] != hashlib.sha256(canonical).hexdigest():
                raise DamagedEntryError("does not match its checksum")
            result = ExecutionResult.from_json(payload)
        except DamagedEntryError:
            raise
        except Exception as exc:
            raise DamagedEntryError(f"is malformed ({type(exc).__name__}: {exc})") from exc
        if result.key != key:
            raise DamagedEntryError("holds the result of another notebook")
        return result, len(canonical)

    def put(self, result: ExecutionResult, material: dict[str, Any] | None = None) -> None:
        """Store ``result`` atomically (one SQLite transaction; large values go to a file
        written before the row points to it), replacing any entry under the same key.

        ``material`` (what the key was made of) is kept beside the result, outside its
        checksum, only to explain later why a notebook no longer matches it.
        """
        payload = result.to_json()
        envelope = {
            "schema": STORE_SCHEMA,
            "key": result.key,
            "digest": _digest(payload),
            "result": payload,
            "material": material,
        }
        self.cache.set(result.key, envelope, retry=True)

    def material(self, key: str) -> dict[str, Any] | None:
        """What the key of an entry was made of, if the entry recorded it."""
        try:
            envelope = self.cache.get(key, default=None, retry=True)
        except Exception:
            return None
        material = envelope.get("material") if isinstance(envelope, dict) else None
        return material if isinstance(material, dict) else None

    def all_keys(self) -> list[str]:
        return [str(key) for key in self.cache]

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.cache.delete(key, retry=True)

    def compact(self) -> None:
        """Give the space of deleted entries back to the file system; skipped while
        another process (a running build) holds the database, which then reuses it."""
        self.close()
        with (
            contextlib.suppress(sqlite3.OperationalError),
            contextlib.closing(sqlite3.connect(self.directory / "cache.db", timeout=5)) as db,
        ):
            db.execute("VACUUM")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


class ParsedStore:
    """Notebooks as a reader made them from a text source, one JSON file per source in the
    cache's ``parsed`` folder, each valid for one key (what the reading depended on).

    The file is named after the source's path under the project's source folder, so that
    editing a notebook replaces its file rather than adding one, and a copy of the project
    elsewhere finds it. Best effort on both sides: a file that is missing or fails its
    checks is a miss, and one that cannot be written is not kept.
    """

    def __init__(self, cache_path: Path, srcdir: Path) -> None:
        self.folder = cache_path / PARSED_FOLDER
        self.root = srcdir.resolve()

    def _file(self, source: Path) -> Path:
        resolved = source.resolve()
        where = resolved.relative_to(self.root) if resolved.is_relative_to(self.root) else resolved
        return self.folder / f"{hashlib.sha256(where.as_posix().encode()).hexdigest()[:32]}.json"

    def get(self, source: Path, key: str) -> dict[str, Any] | None:
        envelope = read_json_file(self._file(source))
        try:
            if envelope["schema"] != PARSED_SCHEMA or envelope["key"] != key:
                return None
            notebook = envelope["notebook"]
            if not isinstance(notebook, dict) or envelope["digest"] != _digest(notebook):
                return None
            return notebook
        except (KeyError, TypeError):
            return None

    def prune(self, sources: Iterable[Path]) -> int:
        """Remove the files of sources other than ``sources`` (notebooks deleted or renamed
        since; an edited notebook's file is replaced, never left behind); how many."""
        keep = {self._file(source) for source in sources}
        removed = 0
        for path in self.folder.glob("*.json"):
            if path not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def put(self, source: Path, key: str, notebook: dict[str, Any]) -> None:
        """Keep ``notebook`` unless it holds what JSON cannot (front matter YAML can give
        dates), as reading it back would not give the same notebook."""
        try:
            digest = _digest(notebook)
        except (TypeError, ValueError):
            return
        envelope = {"schema": PARSED_SCHEMA, "key": key, "digest": digest, "notebook": notebook}
        write_json_file(self._file(source), envelope)


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
        ) as file:
            json.dump(value, file)
        Path(file.name).replace(path)
    except OSError:
        return
