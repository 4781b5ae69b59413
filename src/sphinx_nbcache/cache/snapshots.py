"""Kernel state snapshots: the final state of a notebook that others inherit from, kept on
this machine between builds.

A snapshot is a pickle, and loading a pickle runs whatever code it names. So snapshots
never go into the cache folder, which may come from elsewhere (a CI cache a pull request
wrote): they live in this user's local state folder, each signed with a secret that never
leaves this machine (:func:`~sphinx_nbcache.cache.signing.machine_secret`). One that does
not verify, whoever wrote it, is never handed to a kernel: it is a miss, and the notebook
it came from executes again. The folder is shared by every project of the user, so a
file is named by the notebook's key within its project's cache (the same notebook in two
projects, one with children and one without, must not replace each other's); the least
recently used go first once the folder holds more than its size cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Collection
from pathlib import Path

from sphinx_nbcache.cache.signing import sign, state_folder, verify

SNAPSHOT_FOLDER = "snapshots"
SUFFIX = ".state"
HEADER = b"sphinx-nbcache snapshot 1\n"
SIGNATURE_BYTES = 64
"""A hex HMAC-SHA256, right after :data:`HEADER`, then a newline, then the pickle."""
KEY = re.compile(r"^[0-9a-f]{64}$")


def snapshot_folder() -> Path:
    return state_folder() / SNAPSHOT_FOLDER


class SnapshotStore:
    """Signed snapshots by notebook key, for the cache at ``scope``, at most ``max_size``
    bytes in all in the folder."""

    def __init__(
        self, secret: bytes, max_size: int, scope: Path, folder: Path | None = None
    ) -> None:
        self.secret = secret
        self.max_size = max_size
        self.scope = str(scope.resolve())
        self.folder = folder or snapshot_folder()
        self.verified: set[str] = set()
        """Keys whose snapshot verified in this process (:meth:`has`)."""
        self.in_use: set[str] = set()
        """Keys this process's runs put or will load: a put never prunes them;
        :meth:`prune` at the end of a build does."""

    def path(self, key: str) -> Path:
        if not KEY.match(key):
            raise ValueError(f"not a notebook key: {key!r}")
        return self.folder / f"{self._name(key)}{SUFFIX}"

    def _name(self, key: str) -> str:
        return hashlib.sha256(f"{self.scope}\0{key}".encode()).hexdigest()

    def put(self, key: str, data: bytes) -> None:
        """Keep ``data`` for ``key``, then prune.

        :raises OSError: if it cannot be written (nothing is then kept for ``key``).
        """
        path = self.path(key)
        signature = sign(self.secret, *self._signed(key, data)).encode("ascii")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(HEADER + signature + b"\n" + data)
            temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)
        self.in_use.add(key)
        self.verified.add(key)
        self.prune(keep=self.in_use)

    def get(self, key: str) -> bytes | None:
        """The snapshot's pickle if one is kept and its signature is this machine's."""
        path = self.path(key)
        try:
            content = path.read_bytes()
        except OSError:
            return None
        start = len(HEADER) + SIGNATURE_BYTES + 1
        if not content.startswith(HEADER) or content[start - 1 : start] != b"\n":
            return None
        signature = content[len(HEADER) : start - 1].decode("ascii", errors="replace")
        data = content[start:]
        if not verify(self.secret, signature, *self._signed(key, data)):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        return data

    def has(self, key: str) -> bool:
        """Whether a snapshot that verifies is kept for ``key``; verified (read whole) once
        per process, as :meth:`get` verifies again whatever it hands out."""
        if key not in self.verified and self.get(key) is not None:
            self.verified.add(key)
        return key in self.verified and self.path(key).is_file()

    def remove(self, keys: Collection[str]) -> int:
        """Remove the snapshots of ``keys``; how many there were."""
        removed = 0
        for key in keys:
            with contextlib.suppress(OSError, ValueError):
                self.path(key).unlink()
                removed += 1
        return removed

    def prune(self, keep: Collection[str] = ()) -> list[str]:
        """Remove the least recently used snapshots of any project (not those of ``keep``,
        keys of this one) until the folder holds at most ``max_size`` bytes; the names of
        the files removed."""
        try:
            files = [(p.stat(), p) for p in self.folder.glob(f"*{SUFFIX}")]
        except OSError:
            return []
        total = sum(stat.st_size for stat, _ in files)
        removed = []
        kept = {self._name(key) for key in keep}
        for stat, path in sorted(files, key=lambda found: found[0].st_mtime):
            if total <= self.max_size:
                break
            name = path.name[: -len(SUFFIX)]
            if name in kept:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= stat.st_size
                removed.append(name)
        return removed

    def _signed(self, key: str, data: bytes) -> tuple[str, str, str]:
        """What a snapshot's signature covers; labelled, so that nothing else signed with
        the machine's secret can pass for one."""
        return "kernel state snapshot", self._name(key), hashlib.sha256(data).hexdigest()
