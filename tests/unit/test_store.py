"""The store keeps JSON only, checks every entry, and survives damage."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pickle
import sqlite3
import time
import zlib
from pathlib import Path

import pytest

from sphinx_nbcache.cache import store as store_module
from sphinx_nbcache.cache.disk import JSONOnlyDisk, UnsafeRowError
from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.cache.payload import DamagedEntryError
from sphinx_nbcache.cache.store import Store, StoreWriteError
from sphinx_nbcache.cli.project import entries_of
from sphinx_nbcache.model import CellError, ExecutionResult


def make_result(key: str = "k" * 64, big: bool = False) -> ExecutionResult:
    text = os.urandom(50_000).hex() if big else "hello\n"
    return ExecutionResult(
        key=key,
        source="docs/nb.ipynb",
        succeeded=False,
        error=CellError("ZeroDivisionError", "division by zero", "Traceback...", 3),
        outputs=[[{"output_type": "stream", "name": "stdout", "text": text}], []],
        execution_counts=[1, None],
        metadata={"language_info": {"name": "python"}},
        runtime=1.5,
        cell_times=[0.1, None],
        finished="2026-11-21T10:00:00+00:00",
    )


@pytest.mark.parametrize("big", [False, True], ids=["row", "file"])
def test_round_trip(tmp_path: Path, big: bool) -> None:
    store = Store(tmp_path / "cache")
    result = make_result(big=big)
    store.put(result)
    assert result.key in store
    assert Store(tmp_path / "cache").get(result.key) == result


def test_missing_key_is_a_plain_miss(tmp_path: Path) -> None:
    assert Store(tmp_path).get("nothing") is None


def test_values_are_compressed_json_never_pickles(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(make_result())
    store.put(make_result("b" * 64, big=True))
    store.close()
    rows = sqlite3.connect(tmp_path / "cache.db").execute("SELECT value, filename FROM Cache")
    for value, filename in rows:
        raw = value if filename is None else (tmp_path / filename).read_bytes()
        envelope = json.loads(zlib.decompress(raw))
        assert envelope["schema"] == 1


def test_tampered_entry_is_detected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    result = make_result()
    store.put(result)
    raw = Store(tmp_path).cache
    envelope = raw[result.key]
    envelope["result"]["outputs"][0][0]["text"] = "forged\n"
    raw[result.key] = envelope
    with pytest.raises(DamagedEntryError, match="checksum"):
        store.get(result.key)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"schema": 99}, id="schema"),
        pytest.param({"unexpected": True}, id="shape"),
        pytest.param([1, 2], id="type"),
    ],
)
def test_malformed_entries_are_detected(tmp_path: Path, value: object) -> None:
    Store(tmp_path).cache["key"] = value
    with pytest.raises(DamagedEntryError):
        Store(tmp_path).get("key")


def test_truncated_file_entry_is_detected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    result = make_result(big=True)
    store.put(result)
    store.close()
    (filename,) = (
        sqlite3.connect(tmp_path / "cache.db").execute("SELECT filename FROM Cache").fetchone()
    )
    path = tmp_path / filename
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DamagedEntryError):
        Store(tmp_path).get(result.key)


def test_entry_under_the_wrong_key_is_detected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(make_result("a" * 64))
    raw = Store(tmp_path).cache
    raw["b" * 64] = raw["a" * 64]
    with pytest.raises(DamagedEntryError, match="another key"):
        store.get("b" * 64)


def test_a_reading_that_json_cannot_hold_is_not_kept(tmp_path: Path) -> None:
    """MyST front matter parsed by YAML can hold a date; keeping it as JSON would give
    back another notebook, so it is left out rather than failing the build."""
    store = ParsedStore(tmp_path / "cache", tmp_path, b"secret")
    source = tmp_path / "dated.md"
    store.put(source, "key", {"metadata": {"date": datetime.date(2024, 5, 1)}, "cells": []})
    assert store.get(source, "key") is None
    store.put(source, "key", {"metadata": {}, "cells": []})
    assert store.get(source, "key") == {"metadata": {}, "cells": []}
    assert store.get(source, "another key") is None


def test_a_reading_signed_with_another_secret_is_a_miss(tmp_path: Path) -> None:
    source = tmp_path / "nb.md"
    ParsedStore(tmp_path / "cache", tmp_path, b"theirs").put(source, "key", {"cells": []})
    assert ParsedStore(tmp_path / "cache", tmp_path, b"ours").get(source, "key") is None
    assert ParsedStore(tmp_path / "cache", tmp_path, b"theirs").get(source, "key") is not None


class Marker:
    """Unpickling it would create a file: the store must never get that far."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


@pytest.mark.parametrize("where", ["row", "file"])
def test_a_row_in_pickle_mode_is_refused_unread(tmp_path: Path, where: str) -> None:
    store = Store(tmp_path / "cache")
    store.put(make_result())
    store.close()
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Marker(marker))
    (tmp_path / "cache" / "p.val").write_bytes(payload)
    with contextlib.closing(sqlite3.connect(tmp_path / "cache" / "cache.db")) as db, db:
        if where == "row":
            db.execute("UPDATE Cache SET mode = 4, value = ?", (payload,))
        else:
            db.execute("UPDATE Cache SET mode = 4, value = NULL, filename = 'p.val'")
    with pytest.raises(DamagedEntryError, match="never writes"):
        store.get(make_result().key)
    assert store.remove_unsafe() == 1
    assert not marker.exists()
    assert store.all_keys() == []


def test_the_store_never_touches_a_file_a_row_names_outside_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    disk = JSONOnlyDisk(str(tmp_path / "cache"))
    for name in (str(victim), "../victim", "a/../../victim"):
        disk.remove(name)
        with pytest.raises(UnsafeRowError):
            disk.fetch(2, name, None, False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeRowError, match="link out"):
        disk.fetch(2, "link/victim", None, False)
    disk.remove("link/victim")
    assert victim.read_text() == "keep"


def test_keys_are_text_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Store(tmp_path).cache.set(("a", "tuple"), {})


def test_a_cache_locked_past_the_timeout_is_given_up_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the database: the write fails after the timeout, later
    writes of the same build fail at once instead of waiting as long again, and reads
    go on (WAL readers are not blocked)."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 2.0)
    store = Store(tmp_path)
    store.put(make_result("a" * 64))
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.db", isolation_level=None)) as db:
        db.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreWriteError, match="locked by another process"):
            store.put(make_result("b" * 64))
        started = time.monotonic()
        with pytest.raises(StoreWriteError, match="locked by another process"):
            store.put(make_result("c" * 64))
        assert time.monotonic() - started < 1.0, "given up, not waited for again"
        assert store.get("a" * 64) == make_result("a" * 64)
        db.execute("ROLLBACK")
    store.close()
    store.put(make_result("b" * 64))
    assert sorted(store.all_keys()) == ["a" * 64, "b" * 64]


def test_a_sources_entries_are_found_by_their_tag_through_the_index(tmp_path: Path) -> None:
    store = Store(tmp_path)
    mine = [dataclasses.replace(make_result(c * 64), source="a.ipynb") for c in "ab"]
    for result in [*mine, make_result("c" * 64)]:
        store.put(result)
    # an entry written before tags existed has none, and is still found
    store.cache.set("d" * 64, store.cache.get("a" * 64))
    assert sorted(store.keys_of("a.ipynb")) == ["a" * 64, "b" * 64, "d" * 64]
    assert sorted(store.keys_of("docs/nb.ipynb")) == ["c" * 64, "d" * 64]
    db = sqlite3.connect(tmp_path / "cache.db")
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "Cache_tag_rowid" in indexes


def test_a_tag_is_data_the_loaded_result_must_confirm(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(make_result("a" * 64))  # executed from docs/nb.ipynb
    store.cache.set("a" * 64, store.cache.get("a" * 64), tag="other.ipynb")
    assert store.keys_of("other.ipynb") == ["a" * 64]
    assert list(entries_of(store, "other.ipynb")) == []
    assert [key for key, _ in entries_of(store, "docs/nb.ipynb")] == []  # tagged elsewhere
