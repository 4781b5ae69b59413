"""Sizes, ages and tables for the command line's output and arguments."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sphinx_nbcache.cache.disk import DATABASE
from sphinx_nbcache.cache.store import Store

if TYPE_CHECKING:
    pass


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [[str(c).ljust(w) for c, w in zip(row, widths, strict=True)] for row in [header, *rows]]
    return "\n".join("  ".join(line).rstrip() for line in lines)


@dataclasses.dataclass(frozen=True)
class Usage:
    """A folder's size as ``du -s`` (on disk: allocated blocks) and ``du -s --apparent-size``
    (bytes of data) count it: the folder and everything in it, each file once however many
    links it has, symbolic links not followed."""

    disk: int
    apparent: int

    def __str__(self) -> str:
        return f"{human_size(self.disk)} on disk ({human_size(self.apparent)} apparent)"


def usage(folder: Path) -> Usage:
    seen: set[tuple[int, int]] = set()
    disk = apparent = 0
    for current, folders, files in os.walk(folder):
        links = [name for name in folders if Path(current, name).is_symlink()]
        for path in [Path(current), *(Path(current, name) for name in [*files, *links])]:
            try:
                found = path.lstat()
            except OSError:
                continue  # gone meanwhile
            if (found.st_dev, found.st_ino) in seen:
                continue
            seen.add((found.st_dev, found.st_ino))
            disk += getattr(found, "st_blocks", 0) * 512 or found.st_size
            apparent += found.st_size
    return Usage(disk, apparent)


def close_store(store: Store) -> None:
    """Close the store and leave the folder as ``du`` should find it between commands:
    SQLite keeps a write-ahead log and a shared-memory index (32 KiB) beside an open
    database, and a read-only connection, the last to close, leaves them behind; one that
    may write takes them away as it closes (unless a build still has the database open)."""
    store.close()
    database = store.directory / DATABASE
    if database.is_file():
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(database, timeout=1)) as db,
        ):
            db.execute("PRAGMA schema_version").fetchone()


def measured(store: Store) -> Usage:
    """The cache folder's size, as ``du`` finds it once the command has finished."""
    close_store(store)
    return usage(store.directory)


def removed_line(count: int, before: Usage, after: Usage) -> str:
    """What ``clear`` or ``prune`` did, and only that: the size before and after only when
    it changed (compacting the database may free space even when nothing was removed)."""
    noun = "entry" if count == 1 else "entries"
    removed = f"removed {count} {noun}" if count else "removed nothing"
    if after.disk == before.disk:
        return f"{removed}; {after}"
    return f"{removed}; {human_size(before.disk)} -> {after}"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``800k`` or bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500M or 2G")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h or 2w")
    return float(match[1]) * AGE_UNITS[match[2]]
