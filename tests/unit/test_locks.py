"""The per-key locks builds sharing a cache take (Store.lock): who holds one, when a
holder no longer counts, and what a lock row from an untrusted cache can do (delay, never
break anything). No kernels: a second process is a plain Python holding a lock."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import diskcache
from diskcache.core import MODE_PICKLE

from sphinx_nbcache.cache.disk import LOCK_PREFIX, JSONOnlyDisk
from sphinx_nbcache.cache.store import Store

KEY = "k" * 64
HOLD = """\
import sys, time
from pathlib import Path
from sphinx_nbcache.cache.store import Store
assert Store(Path(sys.argv[1])).lock(sys.argv[2], 600) is True
print("held", flush=True)
time.sleep(600)
"""


def forge(folder: Path, value: object, expire: float | None = None) -> None:
    """A lock row as anyone with write access to the cache folder could write it."""
    with diskcache.Cache(str(folder), disk=JSONOnlyDisk) as cache:
        cache.set(LOCK_PREFIX + KEY, value, expire=expire)


def test_a_lock_held_by_a_live_process_waits_and_a_killed_one_does_not(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), KEY], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        store = Store(tmp_path)
        assert store.lock(KEY, 600) is False
        assert store.holder(KEY).startswith(f"process {holder.pid} on ")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert store.lock(KEY, 600) is True
        assert store.all_keys() == [] and len(store) == 0  # a lock is not an entry
        store.unlock(KEY)
        assert not store.locked(KEY)
    finally:
        holder.kill()
        holder.wait()


def test_unlock_leaves_a_lock_another_process_took_over(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.lock(KEY, 600) is True
    forge(tmp_path, {"host": "elsewhere", "pid": 1, "started": 0.0})
    store.unlock(KEY)
    assert store.locked(KEY)


def test_forged_lock_rows_delay_at_most_until_taken_over(tmp_path: Path) -> None:
    store = Store(tmp_path)
    forge(tmp_path, {"host": "elsewhere", "pid": 1, "started": 0.0})  # never expires
    assert store.lock(KEY, 600) is False
    assert store.lock(KEY, 600, take=True) is True  # after the build's time limit
    forge(tmp_path, {"host": "elsewhere", "pid": 1, "started": 0.0}, expire=0.1)
    time.sleep(0.2)
    assert store.lock(KEY, 600) is True  # expired
    for garbage in ("x", [1], {"host": "h", "pid": True, "started": 0}, None):
        forge(tmp_path, garbage)
        assert store.lock(KEY, 600) is True, garbage


def test_a_pickled_lock_row_is_never_unpickled(tmp_path: Path) -> None:
    forge(tmp_path, "x")
    evil = tmp_path / "evil"
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute(
            "UPDATE Cache SET mode = ?, value = ?, filename = ? WHERE key != ''",
            (MODE_PICKLE, b"cos\nsystem\n(S'touch " + str(evil).encode() + b"'\ntR.", "../x"),
        )
    store = Store(tmp_path)
    assert store.lock(KEY, 600) is True
    assert store.holder(KEY).startswith("process ")
    assert not evil.exists()
