"""What diskcache writes and reads, made safe for a cache from elsewhere: a disk that
stores compressed JSON only and never unpickles a row, value files only inside the folder,
and a read-only view of the rows for lookups that must not open the cache for writing."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW

DATABASE = "cache.db"
LOCK_PREFIX = "lock:"
"""Rows under keys with this prefix are locks (:meth:`Store.lock`), not entries."""
BUSY_TIMEOUT = 60.0
"""Seconds a write waits for another build's transaction before it gives up."""

COMPRESS_LEVEL = 6


MAX_VALUE_BYTES = 2**30
"""A value that decompresses to more than this is refused rather than filling memory."""


class UnsafeRowError(ValueError):
    """A database row says what sphinx-nbcache never writes: a pickle, a key that is not
    text, a file outside the cache folder. Refused, never acted on."""


def _encode(value: Any) -> bytes:
    return zlib.compress(json.dumps(value).encode("utf-8"), COMPRESS_LEVEL)


def _decode(data: object) -> Any:
    if not isinstance(data, bytes):
        raise UnsafeRowError(f"holds {type(data).__name__}, not compressed JSON")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_VALUE_BYTES)
    except zlib.error as exc:
        raise UnsafeRowError(f"is not compressed JSON ({exc})") from None
    if inflater.unconsumed_tail:
        raise UnsafeRowError(f"decompresses to more than {MAX_VALUE_BYTES} bytes")
    return json.loads(raw.decode("utf-8"))


def inside(folder: Path, name: object) -> Path:
    """``folder / name`` if ``name`` is a relative path that stays inside ``folder`` once
    links are followed.

    :raises UnsafeRowError: for anything else (absolute, ``..``, a link pointing out).
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafeRowError(f"names the file {name!r}")
    relative = PurePosixPath(name.replace(os.sep, "/"))
    if relative.is_absolute() or ".." in relative.parts or Path(name).is_absolute():
        raise UnsafeRowError(f"names the file {name!r} outside the cache folder")
    target = folder / relative
    root = folder.resolve()
    if not target.resolve().is_relative_to(root):
        raise UnsafeRowError(f"names the file {name!r}, a link out of the cache folder")
    return target


class JSONOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's serialiser, reduced to what sphinx-nbcache writes: text keys and
    compressed JSON values, in the database or in files inside the cache folder.

    diskcache's own ``JSONDisk`` only changes how values are written: its ``fetch`` still
    unpickles a row whose mode says pickle, and ``remove`` deletes whatever file a row
    names. Here every other row is an :class:`UnsafeRowError`, and a file a row names is
    only touched when it lies inside the folder.
    """

    def __init__(self, directory: str, min_file_size: int = 2**15, **ignored: Any) -> None:
        super().__init__(directory, min_file_size=min_file_size)
        self.folder = Path(directory)

    def put(self, key: Any) -> tuple[sqlite3.Binary, bool]:
        if not isinstance(key, str):
            raise TypeError(f"cache keys are text, not {type(key).__name__}")
        return sqlite3.Binary(_encode(key)), True

    def get(self, key: Any, raw: Any) -> str:
        if raw != 1 or not isinstance(key, bytes):
            raise UnsafeRowError("has a key that is not text (a pickle?)")
        found = _decode(key)
        if not isinstance(found, str):
            raise UnsafeRowError(f"has a key that is {type(found).__name__}, not text")
        return found

    def store(self, value: Any, read: bool, key: Any = None) -> tuple[int, int, Any, Any]:
        if read:
            raise TypeError("values are JSON, not files")
        data = _encode(value)
        if len(data) < self.min_file_size:
            return 0, MODE_RAW, None, sqlite3.Binary(data)
        filename, full_path = self.filename(key, value)
        try:
            self._write(full_path, iter([data]), "xb")
        except OSError:
            self.remove(filename)  # half a file (a full disk) helps no one
            raise
        return len(data), MODE_BINARY, filename, None

    def fetch(self, mode: Any, filename: Any, value: Any, read: bool) -> Any:
        if read:
            raise TypeError("values are JSON, not files")
        file = self.value_file(mode, filename, value)
        return _decode(value if file is None else file.read_bytes())

    def value_file(self, mode: Any, filename: Any, value: Any) -> Path | None:
        """Where a row's value is: None for one inline in the row, else its file inside
        the folder.

        :raises UnsafeRowError: for any other mode, or a file outside the folder.
        """
        if mode == MODE_RAW and filename is None:
            return None
        if mode == MODE_BINARY and value is None:
            return inside(self.folder, filename)
        raise UnsafeRowError(f"is stored in mode {mode!r}, which sphinx-nbcache never writes")

    def remove(self, file_path: Any) -> None:
        try:
            target = inside(self.folder, file_path)
        except UnsafeRowError:
            return  # a row naming a file elsewhere: that file is none of the cache's business
        with contextlib.suppress(OSError):
            target.unlink()
        with contextlib.suppress(OSError):
            os.removedirs(target.parent)


class Rows:
    """Reads rows the way :class:`JSONOnlyDisk` decodes them, through a read-only
    connection of this process's own: the same whether or not the cache can be written
    (a read-only folder, a full disk), and never writing while it reads."""

    def __init__(self, folder: Path, disk: JSONOnlyDisk) -> None:
        self.folder = folder
        self.disk = disk
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a connection inherited through fork is not this process's to use
        path = self.folder / DATABASE
        if not path.is_file():
            return None
        uri = path.resolve().as_uri()
        problem = ""
        for options in ("mode=ro", "mode=ro&immutable=1"):  # the second: a read-only folder
            db = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=BUSY_TIMEOUT)
            try:
                db.execute("SELECT key, raw, mode, filename, value, size FROM Cache LIMIT 1")
            except sqlite3.Error as exc:
                db.close()
                problem = problem or str(exc)
                continue
            self._db, self._pid = db, os.getpid()
            return db
        raise sqlite3.OperationalError(f"not a cache sphinx-nbcache can read: {problem}")

    def get(self, key: str) -> Any:
        """The value under ``key``, None if there is none.

        :raises UnsafeRowError: for a row this store never writes.
        """
        db = self._connection()
        if db is None:
            return None
        found = db.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
            (self.disk.put(key)[0],),
        ).fetchone()
        if found is None:
            return None
        mode, filename, value = found
        try:
            return self.disk.fetch(mode, filename, value, False)
        except FileNotFoundError:
            return None  # replaced by another build between the row and its file

    def stored_at(self, key: str) -> float | None:
        """When the row under ``key`` was last written (diskcache's ``store_time``); None
        if there is none."""
        db = self._connection()
        if db is None:
            return None
        found = db.execute(
            "SELECT store_time FROM Cache WHERE key = ? AND raw = 1", (self.disk.put(key)[0],)
        ).fetchone()
        return None if found is None else found[0]

    def has(self, key: str) -> bool:
        db = self._connection()
        query = "SELECT 1 FROM Cache WHERE key = ? AND raw = 1"
        return db is not None and db.execute(query, (self.disk.put(key)[0],)).fetchone() is not None

    def size(self, key: str) -> int:
        """Bytes the value under ``key`` takes as stored, compressed; 0 if none."""
        db = self._connection()
        if db is None:
            return 0
        found = db.execute(
            "SELECT CASE WHEN filename IS NULL THEN length(value) ELSE size END"
            " FROM Cache WHERE key = ? AND raw = 1",
            (self.disk.put(key)[0],),
        ).fetchone()
        return int(found[0] or 0) if found is not None else 0

    def tagged(self, tag: str) -> list[str]:
        """Keys of the rows tagged ``tag`` or untagged, through diskcache's tag index;
        rows whose key this store never writes are left out, as are locks."""
        db = self._connection()
        if db is None:
            return []
        found = db.execute(
            "SELECT key, raw FROM Cache WHERE tag = ? OR tag IS NULL", (tag,)
        ).fetchall()
        keys = (self._key(key, raw) for key, raw in found)
        return [key for key in keys if key is not None and not key.startswith(LOCK_PREFIX)]

    def scan(self) -> Iterator[tuple[int, str | None]]:
        """(rowid, key) of every row; key None for a row whose key is not one this store
        writes."""
        db = self._connection()
        if db is None:
            return
        for rowid, key, raw in db.execute("SELECT rowid, key, raw FROM Cache").fetchall():
            found = self._key(key, raw)
            if found is None or not found.startswith(LOCK_PREFIX):
                yield rowid, found

    def _key(self, key: Any, raw: Any) -> str | None:
        """A row's key as this store writes it (a lock's too); None for any other key."""
        try:
            return self.disk.get(key, raw)
        except (UnsafeRowError, ValueError):
            return None

    def unsafe(self) -> list[int]:
        """Rows a lookup would refuse to read: a key or a mode this store never writes, or
        a file outside the folder."""
        db = self._connection()
        if db is None:
            return []
        refused = []
        for rowid, key, raw, mode, filename, value in db.execute(
            "SELECT rowid, key, raw, mode, filename, value FROM Cache"
        ):
            try:
                self.disk.get(key, raw)
                self.disk.value_file(mode, filename, value)
            except (UnsafeRowError, ValueError):
                refused.append(rowid)
        return refused

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None
