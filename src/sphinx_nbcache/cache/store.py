"""The only module that touches diskcache: JSON entries, checked on every read.

The cache folder may come from a place nobody here controls (a CI cache that a pull
request's job wrote), so what it holds is data and nothing else: no row is ever unpickled
(value or key, whatever its ``mode`` says), no file outside the folder is opened, written
or deleted because a row names it, and with a secret set, an entry is used only when its
signature says this project wrote it. See "Security" in docs/cache.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import diskcache
import psutil
from diskcache.core import DEFAULT_SETTINGS, METADATA

from sphinx_nbcache.cache.disk import (
    BUSY_TIMEOUT,
    COMPRESS_LEVEL,
    DATABASE,
    LOCK_PREFIX,
    JSONOnlyDisk,
    Rows,
    UnsafeRowError,
)
from sphinx_nbcache.cache.jsonfile import canonical_json, json_digest
from sphinx_nbcache.cache.payload import DamagedEntryError, _number, check_payload
from sphinx_nbcache.cache.signing import sign, verify
from sphinx_nbcache.model import ExecutionResult

STORE_SCHEMA = 1
"""Bump when the entry layout changes; entries of another schema are misses."""

SETTINGS: dict[str, Any] = {
    **{name: value for name, value in DEFAULT_SETTINGS.items() if name != "disk_pickle_protocol"},
    "eviction_policy": "none",
    "statistics": 0,
    "disk_compress_level": COMPRESS_LEVEL,
    "tag_index": 1,
}
"""Every setting diskcache would otherwise take from the database's own Settings table,
given explicitly. Eviction is off, so a build never silently loses entries it needs; the
tag index finds a source's entries (each is tagged with its source) without a scan."""


class UnsignedEntryError(DamagedEntryError):
    """With a secret set, an entry that no holder of the secret signed."""


class StoreWriteError(Exception):
    """The cache cannot be written (read-only folder, full disk, locked past the timeout)."""


class Store:
    """A diskcache directory of execution results keyed by notebook key.

    Values are compressed JSON (:class:`JSONOnlyDisk`), each entry carrying a checksum
    that tells damage and, with ``secret``, an HMAC-SHA256 signature that tells forgery.
    Reads go through a read-only connection, so a cache that cannot be written still
    serves what it holds; writes through diskcache (atomic, safe across processes and
    ``fork``), opened only when the build has something to write.
    """

    def __init__(self, directory: Path, secret: bytes | None = None) -> None:
        self.directory = directory
        self.secret = secret
        self._cache: diskcache.Cache | None = None
        self._rows = Rows(directory, JSONOnlyDisk(str(directory)))
        self._given_up: str | None = None
        """Why writing stopped being tried until :meth:`close`: the cache could not be
        opened for writing, or stayed locked past the timeout. Each further try would
        only wait as long again."""
        self._holder: tuple[int, dict[str, Any]] | None = None
        """(pid, what this process writes into the locks it takes), made once per process
        (a forked ``-j`` reader is another holder)."""

    @property
    def cache(self) -> diskcache.Cache:
        """The writable diskcache, opened on first use.

        :raises StoreWriteError: if the folder or its database cannot be written.
        """
        if self._given_up is not None:
            raise StoreWriteError(self._given_up)
        if self._cache is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                _forget_foreign_settings(self.directory / DATABASE)
                self._cache = diskcache.Cache(
                    str(self.directory), timeout=BUSY_TIMEOUT, disk=JSONOnlyDisk, **SETTINGS
                )
            except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
                self._given_up = _why_unwritable(exc)
                raise StoreWriteError(self._given_up) from None
        return self._cache

    def __contains__(self, key: str) -> bool:
        try:
            return self._rows.has(key)
        except sqlite3.Error:
            return False

    def __len__(self) -> int:
        return sum(1 for _ in self._rows.scan())

    def get(self, key: str) -> ExecutionResult | None:
        """The stored result, or None if there is none.

        :raises DamagedEntryError: if an entry is there but unreadable or inconsistent.
        """
        return self.load(key)[0]

    def load(self, key: str) -> tuple[ExecutionResult | None, int]:
        """:meth:`get`, with the size of the result as JSON (0 when there is none), for a
        caller that keeps results in memory within a budget."""
        envelope = self._envelope(key)
        if envelope is None:
            return None, 0
        try:
            payload = envelope["result"]
            canonical = canonical_json(payload)
            digest = hashlib.sha256(canonical).hexdigest()
            if envelope["digest"] != digest:
                raise DamagedEntryError("does not match its checksum")
            self._check_signature(envelope, key, digest)
            check_payload(payload)
            result = ExecutionResult.from_json(payload)
        except DamagedEntryError:
            raise
        except Exception as exc:
            raise DamagedEntryError(f"is malformed ({exc})") from exc
        if result.key != key:
            raise DamagedEntryError("holds the result of another notebook")
        return result, len(canonical)

    def _envelope(self, key: str) -> dict[str, Any] | None:
        try:
            envelope = self._rows.get(key)
        except UnsafeRowError as exc:
            raise DamagedEntryError(f"is refused: its database row {exc}") from None
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise DamagedEntryError(f"cannot be read ({exc})") from None
        if envelope is None:
            return None
        if not isinstance(envelope, dict):
            raise DamagedEntryError("is not an entry sphinx-nbcache wrote")
        if envelope.get("schema") != STORE_SCHEMA:
            raise DamagedEntryError(f"has schema {envelope.get('schema')!r}, not {STORE_SCHEMA}")
        if envelope.get("key") != key:
            raise DamagedEntryError("is stored under another key")
        return envelope

    def _signed_parts(self, envelope: dict[str, Any], key: str, digest: str) -> tuple[str, ...]:
        return (str(STORE_SCHEMA), key, digest, json_digest(envelope.get("material")))

    def _check_signature(self, envelope: dict[str, Any], key: str, digest: str) -> None:
        if self.secret is None:
            return
        signature = envelope.get("signature")
        if signature is None:
            raise UnsignedEntryError("is not signed (written without the secret, or forged)")
        if not verify(self.secret, signature, *self._signed_parts(envelope, key, digest)):
            raise UnsignedEntryError("has a wrong signature (another secret, or forged)")

    def put(self, result: ExecutionResult, material: dict[str, Any] | None = None) -> None:
        """Store ``result`` atomically (one SQLite transaction; large values go to a file
        written before the row points to it), replacing any entry under the same key.

        ``material`` (what the key was made of) is kept beside the result, outside its
        checksum, only to explain later why a notebook no longer matches it.

        :raises StoreWriteError: if the cache cannot be written.
        """
        payload = result.to_json()
        envelope: dict[str, Any] = {
            "schema": STORE_SCHEMA,
            "key": result.key,
            "digest": json_digest(payload),
            "result": payload,
            "material": material,
        }
        if self.secret is not None:
            parts = self._signed_parts(envelope, result.key, envelope["digest"])
            envelope["signature"] = sign(self.secret, *parts)
        cache = self.cache
        try:
            cache.set(result.key, envelope, tag=result.source)
        except diskcache.Timeout as exc:
            self._given_up = _why_unwritable(exc)
            raise StoreWriteError(self._given_up) from None
        except (OSError, sqlite3.Error) as exc:  # a full disk: a smaller entry may still fit
            raise StoreWriteError(_why_unwritable(exc)) from None

    def material(self, key: str) -> dict[str, Any] | None:
        """What the key of an entry was made of, if the entry recorded it (and, with a
        secret, is signed)."""
        try:
            envelope = self._envelope(key)
            if envelope is None:
                return None
            self._check_signature(envelope, key, str(envelope.get("digest")))
        except DamagedEntryError:
            return None
        material = envelope.get("material")
        return material if isinstance(material, dict) else None

    def all_keys(self) -> list[str]:
        """Every key this store could have written; rows with other keys are
        :meth:`remove_unsafe`'s."""
        return [key for _, key in self._rows.scan() if key is not None]

    def keys_of(self, source: str) -> list[str]:
        """Keys of the entries executed from ``source`` (as the project names it), found
        through their tag; entries written before tags existed come along untagged. Tags
        are data like the rest of the row: the caller checks the loaded result's source."""
        try:
            return self._rows.tagged(source)
        except sqlite3.Error:
            return []

    def size_of(self, key: str) -> int:
        """Bytes an entry takes, compressed as stored."""
        try:
            return self._rows.size(key)
        except sqlite3.Error:
            return 0

    def delete(self, keys: Iterable[str]) -> None:
        """:raises StoreWriteError: if the cache cannot be written."""
        try:
            for key in keys:
                self.cache.delete(key)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise StoreWriteError(_why_unwritable(exc)) from None

    def remove_unsafe(self) -> int:
        """Delete the rows no lookup would read (see :meth:`Rows.unsafe`), and their
        files where those lie inside the folder; how many.

        :raises StoreWriteError: if the cache cannot be written.
        """
        rows = self._rows.unsafe()
        if not rows:
            return 0
        disk = self._rows.disk
        try:
            with (
                contextlib.closing(
                    sqlite3.connect(self.directory / DATABASE, timeout=BUSY_TIMEOUT)
                ) as db,
                db,
            ):
                for rowid in rows:
                    found = db.execute("SELECT filename FROM Cache WHERE rowid = ?", (rowid,))
                    for (filename,) in found.fetchall():
                        if filename is not None:
                            disk.remove(filename)
                    db.execute("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        except sqlite3.Error as exc:
            raise StoreWriteError(_why_unwritable(exc)) from None
        return len(rows)

    def stored_at(self, key: str) -> float | None:
        """When the entry under ``key`` was last written, to tell whether another build
        wrote it meanwhile; None if there is none (or it cannot be told)."""
        try:
            return self._rows.stored_at(key)
        except sqlite3.Error:
            return None

    def lock(self, key: str, expire: float, take: bool = False) -> bool | None:
        """Try once to take the lock on ``key`` that tells other builds sharing the cache
        that this process is executing its notebook: True if taken, False if a live build
        holds it, None if no lock is possible (the cache cannot be written): then nobody
        can store a result to wait for either, so the caller just executes.

        diskcache's ``Lock`` recipe (an atomic ``add`` of a row, deleted to release), with
        what its spinning ``acquire`` lacks: who holds it, and when a holder no longer
        counts. A lock is stale, and is taken over, when

        - its holder ran on this machine and that process is gone (killed, crashed: no
          process has its pid and start time, or only a zombie does), or
        - it is older than ``expire`` seconds (``add`` replaces an expired row): the only
          rule for a holder on another machine, whose processes cannot be seen from here.

        A row that is not a lock this module writes (forged, another version) is stale
        too: a lock row from an untrusted cache can at worst make a build wait
        ``expire`` seconds, never stop it. ``take`` takes the lock whoever holds it, for
        a build that waited ``expire`` seconds already.
        """
        name = LOCK_PREFIX + key
        holder = self._lock_holder()
        try:
            cache = self.cache
            if not take and cache.add(name, holder, expire=expire, retry=True):
                return True
            with cache.transact(retry=True):
                if not take and _holder_alive(self._read_lock(name), holder):
                    return False
                cache.set(name, holder, expire=expire)
            return True
        except (StoreWriteError, diskcache.Timeout, OSError, sqlite3.Error):
            return None

    def locked(self, key: str) -> bool:
        """Whether a lock row for ``key`` is there, expired or not: a look through the
        read-only connection, cheaper than :meth:`lock` while a build waits."""
        try:
            return self._rows.has(LOCK_PREFIX + key)
        except sqlite3.Error:
            return False

    def holder(self, key: str) -> str:
        """Who holds the lock on ``key``, in words for the log ("" if nobody does)."""
        try:
            found = self._read_lock(LOCK_PREFIX + key)
        except (StoreWriteError, diskcache.Timeout, OSError, sqlite3.Error):
            return ""
        if not isinstance(found, dict) or not _lock_value(found):
            return "" if found is None else "an unknown holder"
        return f"process {found['pid']} on {found['host']}"

    def unlock(self, key: str) -> None:
        """Release the lock on ``key`` if this process still holds it (a build that
        waited past the time limit may have taken it over). Never raises: a lock that
        cannot be released expires."""
        name = LOCK_PREFIX + key
        with contextlib.suppress(StoreWriteError, diskcache.Timeout, OSError, sqlite3.Error):
            cache = self.cache
            with cache.transact(retry=True):
                if self._read_lock(name) == self._lock_holder():
                    cache.delete(name)

    def _read_lock(self, name: str) -> object:
        """The value of a lock row; a row this store would not read counts as garbage."""
        try:
            return self.cache.get(name)
        except (UnsafeRowError, ValueError):
            return "unreadable"

    def _lock_holder(self) -> dict[str, Any]:
        if self._holder is None or self._holder[0] != os.getpid():
            pid = os.getpid()
            started = psutil.Process(pid).create_time()
            self._holder = (pid, {"host": socket.gethostname(), "pid": pid, "started": started})
        return self._holder[1]

    def compact(self) -> None:
        """Give the space of deleted entries back to the file system; skipped while
        another process (a running build) holds the database, which then reuses it."""
        self.close()
        with (
            contextlib.suppress(sqlite3.OperationalError),
            contextlib.closing(sqlite3.connect(self.directory / DATABASE, timeout=5)) as db,
        ):
            db.execute("VACUUM")

    def close(self) -> None:
        self._rows.close()
        self._given_up = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _lock_value(found: object) -> bool:
    """Whether ``found`` is a lock as :meth:`Store.lock` writes it."""
    return (
        isinstance(found, dict)
        and isinstance(found.get("host"), str)
        and isinstance(found.get("pid"), int)
        and not isinstance(found.get("pid"), bool)
        and _number(found.get("started"))
    )


def _holder_alive(found: object, me: dict[str, Any]) -> bool:
    """Whether the lock value ``found`` names a holder that may still be executing:
    another process of this machine that is running (same pid and start time, not a
    zombie), or any process of another machine (its lock's expiry decides)."""
    if not _lock_value(found) or found == me:
        return False
    assert isinstance(found, dict)
    if found["host"] != me["host"]:
        return True
    try:
        process = psutil.Process(found["pid"])
        same = abs(process.create_time() - found["started"]) < 0.01
        return same and bool(process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, ValueError, OverflowError):
        return False
    except psutil.Error:  # not ours to look at: it exists
        return True


def _forget_foreign_settings(database: Path) -> None:
    """Delete rows of diskcache's Settings table that diskcache itself never writes: it
    would run ``PRAGMA <name> = <value>`` for each ``sqlite_`` one, names and values
    taken from the database."""
    if not database.is_file():
        return
    known = sorted({*DEFAULT_SETTINGS, *METADATA, *SETTINGS})
    where = f"FROM Settings WHERE key NOT IN ({','.join('?' * len(known))})"
    with (
        contextlib.closing(sqlite3.connect(database, timeout=BUSY_TIMEOUT)) as db,
        db,
        contextlib.suppress(sqlite3.OperationalError),  # no Settings table yet, or read-only
    ):
        if db.execute(f"SELECT 1 {where} LIMIT 1", known).fetchone() is not None:
            db.execute(f"DELETE {where}", known)  # only then: a write waits for other builds


def _why_unwritable(exc: BaseException) -> str:
    if isinstance(exc, diskcache.Timeout):
        return f"the database stayed locked by another process for {BUSY_TIMEOUT:.0f} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
