"""A cache folder from elsewhere is data: tampered rows, forged entries and forged readings
run no code, touch no file outside the folder, and cost a warning and a re-execution.

Each test plays the attacker on a real cache written by a real build, then runs the build
or the ``nbcache`` command a victim would, and checks what the victim would: no file made
by a payload, no file outside the cache gone or changed, every page rendered from the
notebook's own code.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pickle
import shutil
import sqlite3
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Project, ProjectFactory, code, ipynb, myst_notebook, nbcache

NOTEBOOK = ipynb(code("print('the notebook ran')"))
OTHER = ipynb(code("print('the other notebook ran')"))
MODE_PICKLE = 4


class Payload:
    """Unpickling it creates ``marker``: what an attacker's code would do first."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


@contextlib.contextmanager
def database(project: Project) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(project.root / ".nbcache" / "cache.db")) as db, db:
        yield db


def rows(project: Project) -> list[tuple[int, bytes, int, int, str | None, bytes | None]]:
    with database(project) as db:
        query = "SELECT rowid, key, raw, mode, filename, value FROM Cache ORDER BY rowid"
        return db.execute(query).fetchall()


def envelope(project: Project, rowid: int) -> dict[str, Any]:
    (row,) = [row for row in rows(project) if row[0] == rowid]
    raw = row[5] if row[4] is None else (project.root / ".nbcache" / str(row[4])).read_bytes()
    found: dict[str, Any] = json.loads(zlib.decompress(raw))
    return found


def forge(project: Project, rowid: int, change: Any) -> None:
    """Rewrite an entry as someone who read this project's code would: valid JSON, its
    checksum recomputed, stored inline in its row."""
    entry = envelope(project, rowid)
    change(entry["result"])
    canonical = json.dumps(
        entry["result"], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    entry["digest"] = hashlib.sha256(canonical).hexdigest()
    value = zlib.compress(json.dumps(entry).encode("utf-8"))
    with database(project) as db:
        db.execute(
            "UPDATE Cache SET mode = 1, filename = NULL, value = ? WHERE rowid = ?",
            (value, rowid),
        )


def rebuild(project: Project, env: dict[str, str] | None = None) -> Any:
    shutil.rmtree(project.root / "_build")
    build = project.build(env=env)
    assert build.returncode == 0, build.stderr
    return build


def test_a_pickled_value_runs_no_code_in_the_build_or_any_command(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK, "other.ipynb": OTHER})
    assert project.build().returncode == 0
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker))
    (first, _, _, _, _, _), (second, _, _, _, _, _) = rows(project)
    inside = project.root / ".nbcache" / "ab" / "cd" / "payload.val"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(payload)
    with database(project) as db:  # one pickle inline, one in a value file
        db.execute(
            "UPDATE Cache SET mode = ?, filename = NULL, value = ? WHERE rowid = ?",
            (MODE_PICKLE, payload, first),
        )
        db.execute(
            "UPDATE Cache SET mode = ?, filename = ?, value = NULL WHERE rowid = ?",
            (MODE_PICKLE, "ab/cd/payload.val", second),
        )
    for command in (("status",), ("show", "nb.ipynb"), ("merge", "nb.ipynb"), ("info",)):
        result = nbcache(project, *command)
        assert "Traceback" not in result.stderr, command
        assert not marker.exists(), command
    build = rebuild(project)
    assert not marker.exists()
    assert build.executed == ["nb.ipynb", "other.ipynb"]
    assert "the notebook ran" in build.html("nb")
    assert "the other notebook ran" in build.html("other")
    refused = [w for w in build.warnings if "[nbcache.cache]" in w]
    assert len(refused) == 2
    assert all("cache entry is refused" in w and "never writes" in w for w in refused)
    assert not marker.exists()


def test_a_pickled_key_is_removed_by_clear_and_prune_without_running(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK})
    assert project.build().returncode == 0
    marker = tmp_path / "pwned"
    with database(project) as db:
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, access_time, mode, value)"
            " VALUES (?, 0, 0, 0, 1, ?)",
            (pickle.dumps(Payload(marker)), zlib.compress(b"{}")),
        )
    assert len(rows(project)) == 2
    status = nbcache(project, "status")
    assert status.returncode == 0, status.stderr
    pruned = nbcache(project, "prune", "--unused")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 entry" in pruned.stdout
    assert len(rows(project)) == 1, "the row with a pickled key is gone"
    with database(project) as db:
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, access_time, mode, value)"
            " VALUES (?, 0, 0, 0, 1, ?)",
            (pickle.dumps(Payload(marker)), zlib.compress(b"{}")),
        )
    cleared = nbcache(project, "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "removed 2 entries" in cleared.stdout
    assert rows(project) == []
    assert not marker.exists()
    assert "Traceback" not in status.stderr + pruned.stderr + cleared.stderr


def test_a_row_naming_a_file_outside_the_cache_never_deletes_it(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK, "other.ipynb": OTHER})
    assert project.build().returncode == 0
    absolute = tmp_path / "victim-absolute.txt"
    relative = tmp_path / "victim-relative.txt"
    for victim in (absolute, relative):
        victim.write_text("keep me")
    climb = Path("..", "..", relative.name).as_posix()  # .nbcache -> project -> tmp_path
    assert (project.root / ".nbcache" / climb).resolve() == relative.resolve()
    (first, *_), (second, *_) = rows(project)
    with database(project) as db:
        for rowid, name in ((first, str(absolute)), (second, climb)):
            db.execute(
                "UPDATE Cache SET mode = 2, filename = ?, value = NULL WHERE rowid = ?",
                (name, rowid),
            )
    build = rebuild(project)  # each damaged entry is replaced, which removes its old file
    assert build.executed == ["nb.ipynb", "other.ipynb"]
    assert len([w for w in build.warnings if "outside the cache folder" in w]) == 2
    with database(project) as db:
        for rowid, name in ((first, str(absolute)), (second, climb)):
            db.execute(
                "INSERT INTO Cache (key, raw, store_time, access_time, mode, filename)"
                " VALUES (?, 1, 0, 0, 2, ?)",
                (zlib.compress(json.dumps(f"key-{rowid}").encode()), name),
            )
    cleared = nbcache(project, "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert absolute.read_text() == "keep me"
    assert relative.read_text() == "keep me"


def test_a_forged_reading_of_a_text_notebook_never_runs(make_project: ProjectFactory) -> None:
    """The kept reading of a MyST notebook says which code runs: one written by anyone but
    this machine (or a holder of the project's secret) is read again from the source."""
    project = make_project(
        {
            "text.md": myst_notebook(
                "# Text\n\n```{code-cell} python\nprint('from the source')\n```\n"
            )
        }
    )
    assert project.build().returncode == 0
    (parsed,) = (project.root / ".nbcache" / "parsed").glob("*.json")
    kept = json.loads(parsed.read_text())
    cell = next(c for c in kept["notebook"]["cells"] if c["cell_type"] == "code")
    cell["source"] = "print('forged code ran')"
    canonical = json.dumps(
        kept["notebook"], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    kept["digest"] = hashlib.sha256(canonical).hexdigest()
    parsed.write_text(json.dumps(kept))
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        (project.root / ".nbcache" / name).unlink(missing_ok=True)
    build = rebuild(project)
    assert build.executed == ["text.md"]
    assert "from the source" in build.html("text")
    assert "forged code ran" not in build.html("text")


def artefact(text: str) -> dict[str, str]:
    data = text.encode()
    return {"sha256": hashlib.sha256(data).hexdigest(), "base64": base64.b64encode(data).decode()}


def test_a_forged_entry_restores_no_code_config_source_or_file_elsewhere(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK})
    project.write("tracked.csv", "kept in git\n")
    git = ["git", "-C", str(project.root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "tracked.csv"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "data"], check=True)
    assert project.build().returncode == 0
    conf = (project.root / "conf.py").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project.root / "link").symlink_to(elsewhere)
    forged = {
        "conf.py": artefact("import os; os.system('touch pwned')"),
        "helper.py": artefact("raise SystemExit('imported forged code')"),
        "startup.pth": artefact("import os; os.system('touch pwned')"),
        "index.md": artefact("# Forged index"),
        "link/outside.txt": artefact("escaped"),
        "tracked.csv": artefact("forged data\n"),
        "figure.csv": artefact("a,b\n1,2\n"),
    }
    ((rowid, *_),) = rows(project)
    forge(project, rowid, lambda result: result["artefacts"].update(forged))
    build = rebuild(project)
    assert build.executed == [], "without a secret, a well-forged entry is used..."
    assert (project.root / "conf.py").read_text() == conf  # ...but restores no code
    assert not (project.root / "helper.py").exists()
    assert not (project.root / "startup.pth").exists()
    assert "Forged index" not in build.html("index")
    assert list(elsewhere.iterdir()) == []
    assert (project.root / "tracked.csv").read_text() == "kept in git\n"
    assert (project.root / "figure.csv").read_text() == "a,b\n1,2\n", "data is restored"
    assert "restored figure.csv from the cache" in build.stdout
    assert "did not restore conf.py from the cache: a Sphinx configuration" in build.stdout
    assert "did not restore helper.py from the cache: a source file" in build.stdout  # jupytext
    assert "did not restore startup.pth from the cache: Python code" in build.stdout
    assert "did not restore index.md from the cache: a source file" in build.stdout
    assert "did not restore link/outside.txt from the cache: outside the notebook's" in (
        build.stdout
    )
    assert "did not restore tracked.csv from the cache: a file kept under version" in (build.stdout)


def test_a_forged_entry_with_absolute_or_climbing_paths_is_refused(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK})
    assert project.build().returncode == 0
    ((rowid, *_),) = rows(project)
    forge(project, rowid, lambda result: result["dependencies"].update({"/etc/passwd": "0"}))
    build = rebuild(project)
    assert build.executed == ["nb.ipynb"]
    (warning,) = build.warnings
    assert "cache entry has a malformed 'dependencies' field" in warning
    ((rowid, *_),) = rows(project)
    forge(project, rowid, lambda result: result["artefacts"].update({"../x": artefact("x")}))
    assert rebuild(project).executed == ["nb.ipynb"]


def test_with_a_secret_a_forged_entry_is_never_rendered(make_project: ProjectFactory) -> None:
    project = make_project({"nb.ipynb": NOTEBOOK, "other.ipynb": OTHER})
    unsigned = project.build()
    assert unsigned.returncode == 0
    secret = {"NBCACHE_SECRET": "s3cret-for-tests"}
    signed = rebuild(project, secret)
    assert signed.executed == ["nb.ipynb", "other.ipynb"], "unsigned entries are not trusted"
    (warning,) = [w for w in signed.warnings if "[nbcache.cache]" in w]
    assert "is not signed" in warning and "$NBCACHE_SECRET" in warning
    assert rebuild(project, secret).executed == [], "what it signed, it trusts"

    def poison(result: dict[str, Any]) -> None:
        result["outputs"][0] = [{"output_type": "stream", "name": "stdout", "text": "FORGED\n"}]

    for rowid, *_ in rows(project):
        forge(project, rowid, poison)
    build = rebuild(project, secret)
    assert build.executed == ["nb.ipynb", "other.ipynb"]
    assert "FORGED" not in build.html("nb") + build.html("other")
    assert "the notebook ran" in build.html("nb")
    (warning,) = [w for w in build.warnings if "[nbcache.cache]" in w]
    assert "wrong signature" in warning
    other_secret = rebuild(project, {"NBCACHE_SECRET": "another"})
    assert other_secret.executed == ["nb.ipynb", "other.ipynb"]
    plain = rebuild(project)
    assert plain.executed == [], "without the secret, signed entries are used as before"


def test_a_secret_in_a_declared_variable_is_never_stored(make_project: ProjectFactory) -> None:
    project = make_project(
        {"nb.ipynb": NOTEBOOK},
        'nbcache_env_vars = ["NBCACHE_TEST_TOKEN"]\nnbcache_report = "report.json"\n',
    )
    token = "tok-9f8e7d6c5b4a"
    env = {"NBCACHE_TEST_TOKEN": token}
    assert project.build(env=env).returncode == 0
    shown = nbcache(project, "show", "nb.ipynb", "--json", env=env)
    assert token not in shown.stdout
    for path in project.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data, path
            with contextlib.suppress(zlib.error):
                assert token.encode() not in zlib.decompress(data), path
    for _, _, _, _, _, value in rows(project):
        assert value is not None and token.encode() not in zlib.decompress(value)
    changed = project.build(env={"NBCACHE_TEST_TOKEN": "another"})
    assert changed.executed == ["nb.ipynb"], "the value still decides the key"


@pytest.mark.parametrize("setting", ["sqlite_cache_size", "disk_pickle_protocol", "made_up"])
def test_settings_rows_from_elsewhere_are_not_obeyed(
    make_project: ProjectFactory, setting: str
) -> None:
    """diskcache runs ``PRAGMA name = value`` for settings it reads from the database and
    hands ``disk_*`` ones to the serialiser: the store gives every setting itself."""
    project = make_project({"nb.ipynb": NOTEBOOK})
    assert project.build().returncode == 0
    with database(project) as db:
        db.execute("INSERT OR REPLACE INTO Settings VALUES (?, ?)", (setting, "garbage"))
        db.execute("INSERT OR REPLACE INTO Settings VALUES ('sqlite_made_up', 'x')")
    project.edit("nb.ipynb", "the notebook ran", "the notebook ran again")
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["nb.ipynb"]
    assert build.warnings == []
    with database(project) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM Settings")}
    assert "sqlite_made_up" not in keys and "made_up" not in keys


def test_clear_path_removes_a_damaged_entry(make_project: ProjectFactory) -> None:
    """A damaged entry cannot say which notebook it belongs to; the notebook's own key
    finds it."""
    project = make_project({"nb.ipynb": NOTEBOOK, "other.ipynb": OTHER})
    assert project.build().returncode == 0
    (first, *_), _ = rows(project)
    with database(project) as db:
        db.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (b"damaged", first))
    status = nbcache(project, "status", "--json")
    states = {n["source"]: n["state"] for n in json.loads(status.stdout)}
    (broken,) = [source for source, state in states.items() if state == "damaged"]
    cleared = nbcache(project, "clear", broken)
    assert cleared.returncode == 0, cleared.stderr
    assert "removed 1 entry" in cleared.stdout
    assert len(rows(project)) == 1
