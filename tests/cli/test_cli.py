"""The ``nbcache`` command, run as a user runs it, on a real project and a real cache."""

from __future__ import annotations

import contextlib
import json
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

from helpers import (
    Project,
    ProjectFactory,
    code,
    ipynb,
    markdown,
    myst_notebook,
    nbcache,
    percent_script,
)
from sphinx_nbcache.cache.parsed import PARSED_FOLDER
from sphinx_nbcache.cache.store import Store
from sphinx_nbcache.cli.main import build_parser
from sphinx_nbcache.cli.sizes import human_size

GOOD = ipynb(code("print('from the good notebook')"))
TEXT = myst_notebook(
    """\
    # Text

    ```{code-cell} ipython3
    print('from the text notebook')
    ```
    """
)
BAD = ipynb(code("raise RuntimeError('broken on purpose')"))
SLEEPY = ipynb(code("import time\ntime.sleep(4)\nprint('woke up')"))
DOCS = Path(__file__).parents[2] / "docs" / "cli.md"


def states(project: Project) -> dict[str, str]:
    listing = json.loads(nbcache(project, "status", "--json").stdout)
    return {entry["source"]: entry["state"] for entry in listing}


def test_status_execute_then_build_executes_nothing(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD, "text.md": TEXT, "prose.md": "# Prose\n"})
    before = nbcache(project, "status")
    assert before.returncode == 1, "a build would execute something"
    assert "2 of 2 notebook(s) would execute" in before.stdout
    assert re.search(r"good\.ipynb\s+never executed", before.stdout)
    assert "prose.md" not in before.stdout

    executed = nbcache(project, "execute")
    assert executed.returncode == 0, executed.stderr
    assert "nbcache: [2/2]" in executed.stdout
    assert states(project) == {"good.ipynb": "fresh", "text.md": "fresh"}
    assert nbcache(project, "status").returncode == 0

    build = project.build()
    assert build.executed == []
    assert "from the text notebook" in build.html("text")

    project.edit("text.md", "from the text notebook", "edited")
    assert states(project) == {"good.ipynb": "fresh", "text.md": "stale"}
    assert nbcache(project, "status", "good.ipynb").returncode == 0
    assert nbcache(project, "execute", "text.md").returncode == 0
    assert project.build().executed == []


def test_execute_reports_failures_and_show_explains_them(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.ipynb": BAD})
    executed = nbcache(project, "execute", "--workers", "1")
    assert executed.returncode == 1
    assert "executing 2 notebook(s), 1 at a time\n" in executed.stdout
    assert "1 succeeded, 1 failed" in executed.stdout
    shown = json.loads(nbcache(project, "show", "bad.ipynb", "--json").stdout)
    assert shown["state"] == "failed"
    assert shown["error"] == "RuntimeError"
    assert "broken on purpose" in shown["traceback"]
    assert [(cell["cell"], cell["index"]) for cell in shown["cells"]] == [(1, 1)]
    human = nbcache(project, "show", "bad.ipynb").stdout
    assert "RuntimeError: broken on purpose" in human
    assert "\x1b[" not in human
    assert nbcache(project, "execute").stdout.startswith("nothing to execute")
    forced = nbcache(project, "execute", "--force", "good.ipynb")
    assert "1 succeeded, 0 failed" in forced.stdout


def test_a_timed_out_notebook_executes_again_once_its_time_limit_is_raised(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"sleepy.ipynb": SLEEPY}, "nb_execution_timeout = 1\n")
    short = nbcache(project, "execute")
    assert short.returncode == 1
    assert "nbcache: [1/1] sleepy.ipynb timed out" in short.stdout
    same = nbcache(project, "status")
    assert same.returncode == 0, "a build with the same limit shows the cached timeout"
    assert re.search(
        r"sleepy\.ipynb\s+cached failure\s+[\d.]+\s+CellTimeoutError$", same.stdout, re.M
    )
    project.edit("conf.py", "nb_execution_timeout = 1", "nb_execution_timeout = 2")
    raised = nbcache(project, "status")
    assert raised.returncode == 1, "a build with a higher limit executes it again"
    assert "CellTimeoutError; time limit raised from 1 s" in raised.stdout
    assert "1 of 1 notebook(s) would execute" in raised.stdout
    assert json.loads(nbcache(project, "status", "--json").stdout)[0]["executes"] is True
    assert nbcache(project, "execute", "--timeout", "1").stdout.startswith("nothing to execute")
    longer = nbcache(project, "execute", "--timeout", "60")
    assert longer.returncode == 0, longer.stdout
    assert "nbcache: [1/1] sleepy.ipynb executed" in longer.stdout
    assert "1 succeeded, 0 failed" in longer.stdout
    assert nbcache(project, "status").returncode == 0
    assert project.build().executed == []
    shorter = nbcache(project, "execute", "--force", "--timeout", "1")
    assert "nbcache: [1/1] sleepy.ipynb timed out" in shorter.stdout, "1 s, not conf's 2 s"


def test_status_and_execute_follow_retry_failed_and_force_mode(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD, "bad.ipynb": BAD})
    assert nbcache(project, "execute").returncode == 1
    assert nbcache(project, "status").returncode == 0, "a build shows the cached failure"
    project.edit("conf.py", "nb_execution_mode", "nbcache_retry_failed = True\nnb_execution_mode")
    retried = nbcache(project, "status")
    assert retried.returncode == 1
    assert re.search(
        r"bad\.ipynb\s+cached failure.*RuntimeError; nbcache_retry_failed is on", retried.stdout
    )
    assert "1 of 2 notebook(s) would execute" in retried.stdout
    again = nbcache(project, "execute")
    assert "nbcache: [1/1] bad.ipynb failed" in again.stdout
    project.edit("conf.py", 'nb_execution_mode = "cache"', 'nb_execution_mode = "force"')
    forced = nbcache(project, "status")
    assert forced.returncode == 1
    assert re.search(
        r'good\.ipynb\s+cached, up to date.*nb_execution_mode is "force"', forced.stdout
    )
    assert "2 of 2 notebook(s) would execute" in forced.stdout
    everything = nbcache(project, "execute")
    assert "executing 2 notebook(s)" in everything.stdout
    assert "1 succeeded, 1 failed" in everything.stdout


def test_show_lists_the_files_variables_and_packages_the_entry_depends_on(
    make_project: ProjectFactory,
) -> None:
    reads = ipynb(
        code(
            "import sys\nsys.path.insert(0, 'lib')\nfrom helpers import double\n"
            "import nbformat\nprint(double(21), open('data.csv').read())"
        )
    )
    conf = """\
        exclude_patterns.append("lib")
        nbcache_dependencies = {"*.ipynb": ["settings.toml"]}
        nbcache_env_vars = ["NBCACHE_SHOW_COLOUR"]
        """
    project = make_project({"reads.ipynb": reads}, conf)
    project.write("lib/helpers.py", "def double(x):\n    return 2 * x\n")
    project.write("data.csv", "a,b\n")
    project.write("settings.toml", "colour = 'blue'\n")
    colour = {"NBCACHE_SHOW_COLOUR": "blue"}
    assert nbcache(project, "execute", env=colour).returncode == 0
    shown = json.loads(nbcache(project, "show", "reads.ipynb", "--json", env=colour).stdout)
    assert shown["state"] == "fresh"
    dependencies = shown["dependencies"]
    assert sorted(dependencies["files"]) == ["data.csv", "lib/helpers.py"]
    assert list(dependencies["declared_files"]) == ["settings.toml"]
    (hashed,) = dependencies["env_vars"].values()
    assert re.fullmatch(r"[0-9a-f]{64}", hashed), "the value itself is never shown"
    assert dependencies["python"] == platform.python_version()
    assert dependencies["packages"]["nbformat"] == version("nbformat")
    human = nbcache(project, "show", "reads.ipynb", env=colour).stdout
    assert re.search(r"^file\s+lib/helpers\.py\s+sha256 [0-9a-f]{12}$", human, re.M)
    assert re.search(r"^file\s+data\.csv\s+sha256 [0-9a-f]{12}$", human, re.M)
    assert re.search(r"^declared file\s+settings\.toml\s+sha256 [0-9a-f]{12}$", human, re.M)
    assert re.search(
        r"^env var\s+NBCACHE_SHOW_COLOUR\s+set, salted sha256 [0-9a-f]{12}$", human, re.M
    )
    assert "blue" not in human
    assert re.search(rf"^python\s+{re.escape(platform.python_version())}$", human, re.M)
    assert re.search(rf"^package\s+nbformat\s+{re.escape(version('nbformat'))}$", human, re.M)
    unset = json.loads(nbcache(project, "show", "reads.ipynb", "--json").stdout)
    assert unset["why"] == "environment variable NBCACHE_SHOW_COLOUR changed"
    assert unset["dependencies"] is None, "no entry under the key without the variable"


def test_merge_writes_a_valid_ipynb_with_the_outputs(make_project: ProjectFactory) -> None:
    project = make_project({"text.md": TEXT})
    missing = nbcache(project, "merge", "text.md")
    assert missing.returncode == 2
    assert "no cached outputs" in missing.stderr
    nbcache(project, "execute")
    out = project.root / "out" / "text.ipynb"
    out.parent.mkdir()
    merged = nbcache(project, "merge", "text.md", "-o", str(out))
    assert merged.returncode == 0, merged.stderr
    notebook = nbformat.read(out, as_version=4)
    nbformat.validate(notebook)
    (cell,) = [c for c in notebook.cells if c.cell_type == "code"]
    assert cell.outputs[0]["text"] == "from the text notebook\n"
    assert "source_map" not in notebook.metadata
    assert json.loads(nbcache(project, "merge", "text.md").stdout)["cells"]


def test_merge_from_ipynb_and_jupytext_percent_scripts(make_project: ProjectFactory) -> None:
    script = percent_script(
        """\
        # %% [markdown]
        # # A script

        # %%
        print('from the script')
        """
    )
    project = make_project({"good.ipynb": GOOD, "script.py": script})
    assert nbcache(project, "execute").returncode == 0
    for source, printed in [
        ("good.ipynb", "from the good notebook"),
        ("script.py", "from the script"),
    ]:
        out = project.root / f"merged-{Path(source).stem}.ipynb"
        merged = nbcache(project, "merge", source, "-o", out.name)
        assert (merged.returncode, merged.stderr) == (0, f"wrote {out.name}\n"), source
        notebook = nbformat.read(out, as_version=4)
        nbformat.validate(notebook)
        (cell,) = [c for c in notebook.cells if c.cell_type == "code"]
        assert cell.outputs[0]["text"] == printed + "\n", source
        assert cell.execution_count == 1, source
        assert notebook.cells[0].cell_type == "markdown", source
    nbformat.validate(nbformat.reads(nbcache(project, "merge", "script.py").stdout, as_version=4))


def test_clear_and_info(make_project: ProjectFactory) -> None:
    project = make_project({"good.ipynb": GOOD, "text.md": TEXT})
    nbcache(project, "execute")
    info = json.loads(nbcache(project, "info", "--json").stdout)
    assert info["entries"] == 2
    assert info["cache"] == str((project.root / ".nbcache").resolve())
    assert info["size"] > 0
    cleared = nbcache(project, "clear", "text.md")
    assert cleared.stdout.startswith("removed 1 entry")
    assert states(project) == {"good.ipynb": "fresh", "text.md": "new"}
    assert list((project.root / ".nbcache" / "parsed").glob("*.json"))  # text.md's reading
    assert nbcache(project, "clear").stdout.startswith("removed 1 entry")
    assert json.loads(nbcache(project, "info", "--json").stdout)["entries"] == 0
    assert not (project.root / ".nbcache" / "parsed").exists()


def test_bad_input_gets_one_line_and_exit_status_2(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project({"good.ipynb": GOOD, "prose.md": "# Prose\n"})
    for args, message in [
        (("status", "nowhere.ipynb"), "nbcache: nowhere.ipynb: not a document of the project"),
        (("show", "prose.md"), "nbcache: prose.md: not a notebook"),
        (("--project", str(tmp_path), "info"), f"nbcache: {tmp_path}: no conf.py in this folder"),
    ]:
        result = nbcache(project, *args)
        assert result.returncode == 2, args
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    elsewhere = nbcache(project, "info", cwd=tmp_path)
    assert elsewhere.returncode == 2
    assert "use --project DIR" in elsewhere.stderr
    assert nbcache(project, "--project", str(project.root), "info", cwd=tmp_path).returncode == 0
    store = Store(project.root / ".nbcache")
    store.cache.set("an entry", {})
    store.close()
    with contextlib.closing(sqlite3.connect(project.root / ".nbcache" / "cache.db")) as db, db:
        db.execute("ALTER TABLE Cache RENAME COLUMN key TO renamed")  # opens, then fails
    failing = nbcache(project, "clear")
    assert failing.returncode == 2
    assert failing.stderr.startswith("nbcache: the cache at ")
    assert "cannot be opened (not a cache sphinx-nbcache can read: no such column: key)" in (
        failing.stderr
    )
    assert len(failing.stderr.strip().splitlines()) == 1
    shutil.rmtree(project.root / ".nbcache", ignore_errors=True)
    (project.root / ".nbcache").mkdir()
    (project.root / ".nbcache" / "cache.db").write_text("not a database")
    damaged = nbcache(project, "info")
    assert damaged.returncode == 2
    assert damaged.stderr.startswith("nbcache: the cache at ")
    assert "cannot be opened" in damaged.stderr
    project.edit(
        "conf.py", 'nb_execution_mode = "cache"', 'nb_execution_mode = "cache"\nnbcache_workers = 0'
    )
    broken = nbcache(project, "status")
    assert broken.returncode == 2
    assert "nbcache_workers must be a positive integer" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_merge_to_a_file_that_cannot_be_written_gets_one_line_and_exit_status_2(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD})
    nbcache(project, "execute")
    (project.root / "folder").mkdir()
    for output, message in [
        ("missing/good.ipynb", "nbcache: missing/good.ipynb: No such file or directory"),
        ("folder", "nbcache: folder: Is a directory"),
    ]:
        result = nbcache(project, "merge", "good.ipynb", "-o", output)
        assert result.returncode == 2, output
        assert result.stderr == message + "\n"
    assert not (project.root / "missing").exists()


def test_status_shows_each_state_and_prune_copes_with_a_damaged_entry(
    make_project: ProjectFactory,
) -> None:
    project = make_project(
        {"good.ipynb": GOOD, "bad.ipynb": BAD, "skipped.ipynb": GOOD, "broken.ipynb": "{oops"},
        'nb_execution_excludepatterns = ["skipped.ipynb"]\n',
    )
    assert nbcache(project, "execute").returncode == 1
    assert states(project) == {
        "bad.ipynb": "failed",
        "broken.ipynb": "unreadable",
        "good.ipynb": "fresh",
        "skipped.ipynb": "excluded",
    }
    listing = nbcache(project, "status").stdout
    assert re.search(r"^bad\.ipynb\s+cached failure\s+[\d.]+\s+RuntimeError$", listing, re.M)
    assert re.search(r"^broken\.ipynb\s+cannot be read$", listing, re.M)
    assert re.search(
        r"^skipped\.ipynb\s+not executed \(nb_execution_excludepatterns\)$", listing, re.M
    )
    assert "0 of 4 notebook(s) would execute" in listing
    key = json.loads(nbcache(project, "show", "good.ipynb", "--json").stdout)["key"]
    database = project.root / ".nbcache" / "cache.db"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        rows = db.execute("SELECT rowid, key FROM Cache").fetchall()
        (rowid,) = [r for r, k in rows if json.loads(zlib.decompress(k)) == key]  # JSONDisk keys
        db.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (b"not zlib", rowid))
    damaged = nbcache(project, "status")
    assert damaged.returncode == 1
    assert re.search(r"^good\.ipynb\s+damaged cache entry$", damaged.stdout, re.M)
    kept = nbcache(project, "prune", "--max-size", "1G")
    assert (kept.returncode, kept.stderr) == (0, "")
    assert kept.stdout.startswith("removed nothing; ")
    pruned = nbcache(project, "prune", "--max-size", "1")
    assert pruned.stdout.startswith("removed 2 entries"), pruned.stderr
    assert states(project)["good.ipynb"] == "new"


def mentions(text: str, word: str) -> bool:
    """``word`` stands alone in ``text``: ``-o`` is not found inside ``--older-than``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_the_command_reference_lists_every_command_and_option() -> None:
    reference = DOCS.read_text(encoding="utf-8")
    sections = {
        match["name"]: match["body"]
        for match in re.finditer(
            r"^## `nbcache (?P<name>[a-z-]+)[^\n]*\n(?P<body>.*?)(?=^## |\Z)",
            reference,
            re.M | re.S,
        )
    }
    parser = build_parser()
    common = {"-h", "--help"}  # and the global options, also taken after the command
    common |= {option for action in parser._actions for option in action.option_strings}
    for action in parser._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert mentions(reference, option), option
        choices = getattr(action, "choices", None) or {}
        for name, sub in choices.items():
            assert name in sections, f"no section for nbcache {name}"
            for sub_action in sub._actions:
                for option in sub_action.option_strings:
                    if option not in common:
                        assert mentions(sections[name], option), f"{name} {option}"


def test_status_says_what_changed_and_prune_honours_each_option(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD, "text.md": TEXT})
    nbcache(project, "execute")
    project.edit("text.md", "print('from the text notebook')", "print('changed')")
    listing = json.loads(nbcache(project, "status", "--json").stdout)
    (text,) = [entry for entry in listing if entry["source"] == "text.md"]
    assert (text["state"], text["why"]) == ("stale", "code changed in code cell 1")
    assert "code changed in code cell 1" in nbcache(project, "status").stdout

    def entries() -> int:
        return int(json.loads(nbcache(project, "info", "--json").stdout)["entries"])

    nbcache(project, "execute")
    assert entries() == 3, "the entry of the old code is still there"
    assert nbcache(project, "prune", "--unused").stdout.startswith("removed 1 entry;")
    assert states(project) == {"good.ipynb": "fresh", "text.md": "fresh"}
    assert nbcache(project, "prune", "--older-than", "1d").stdout.startswith("removed nothing; ")
    assert nbcache(project, "prune", "--max-size", "1G").stdout.startswith("removed nothing; ")
    assert nbcache(project, "prune", "--max-size", "1").stdout.startswith("removed 2 entries")
    assert entries() == 0
    nbcache(project, "execute")
    time.sleep(1.5)
    assert nbcache(project, "prune", "--older-than", "0.01m").stdout.startswith("removed 2 entries")
    readings = project.root / ".nbcache" / PARSED_FOLDER
    assert len(list(readings.glob("*.json"))) == 1, "text.md's reading, kept by status"
    assert "kept readings" not in nbcache(project, "prune", "--unused").stdout
    (project.root / "text.md").unlink()
    pruned = nbcache(project, "prune", "--unused").stdout
    assert "removed the kept readings of 1 notebook(s) no longer in the project" in pruned
    assert list(readings.glob("*.json")) == []
    for args in (("prune",), ("prune", "--max-size", "lots"), ("prune", "--older-than", "soon")):
        result = nbcache(project, *args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr


def test_the_nbcache_script_is_installed() -> None:
    script = Path(sys.executable).parent / ("nbcache.exe" if sys.platform == "win32" else "nbcache")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("nbcache ")


def test_status_tells_inline_code_less_off_and_excluded_notebooks_apart(
    make_project: ProjectFactory,
) -> None:
    inline = ipynb(code("print(1)"), metadata={"mystnb": {"execution_mode": "inline"}})
    off = ipynb(code("print(1)"), metadata={"mystnb": {"execution_mode": "off"}})
    project = make_project(
        {
            "inline.ipynb": inline,
            "prose.ipynb": ipynb(markdown("# Only prose")),
            "off.ipynb": off,
            "skipped.ipynb": GOOD,
            "good.ipynb": GOOD,
        },
        'nb_execution_excludepatterns = ["skipped.ipynb"]\n',
    )
    assert states(project) == {
        "good.ipynb": "new",
        "inline.ipynb": "inline",
        "off.ipynb": "off",
        "prose.ipynb": "no-code",
        "skipped.ipynb": "excluded",
    }
    listing = nbcache(project, "status").stdout
    for line in (
        r"inline\.ipynb\s+executed by myst-nb on every build, not cached \(inline mode\)",
        r"prose\.ipynb\s+nothing to execute \(no code cells\)",
        r"off\.ipynb\s+not executed \(execution off\)",
        r"skipped\.ipynb\s+not executed \(nb_execution_excludepatterns\)",
    ):
        assert re.search(f"^{line}$", listing, re.M), listing
    assert "1 of 5 notebook(s) would execute" in listing


def test_documents_by_docname_and_options_after_the_command(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project(
        {"notebooks/x.ipynb": GOOD, "twice.ipynb": GOOD, "twice.md": TEXT},
        'suppress_warnings = ["misc.multiple_files"]\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (
        ("--project", str(project.root), "status", "--json", "notebooks/x"),
        ("status", "--json", "notebooks/x", "--project", str(project.root)),
        ("status", "--project", str(project.root), "--json", "notebooks/x.ipynb"),
    ):
        listed = nbcache(project, *args, cwd=elsewhere)
        assert listed.returncode == 1, (args, listed.stderr)
        assert [n["source"] for n in json.loads(listed.stdout)] == ["notebooks/x.ipynb"]
    executed = nbcache(project, "execute", "--project", str(project.root), "notebooks/x")
    assert executed.returncode == 0, executed.stderr
    assert "nbcache: [1/1] notebooks/x.ipynb executed" in executed.stdout
    shown = nbcache(project, "show", "notebooks/x", cwd=project.root / "notebooks")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("notebook: notebooks/x.ipynb\nstate:    cached, up to date")
    ambiguous = nbcache(project, "show", "twice")
    assert ambiguous.returncode == 2
    assert ambiguous.stderr == (
        "nbcache: twice is ambiguous: it could be twice.ipynb or twice.md; say which\n"
    )
    read = {n["source"] for n in json.loads(nbcache(project, "status", "--json").stdout)}
    (chosen,) = read & {"twice.ipynb", "twice.md"}
    (ignored,) = {"twice.ipynb", "twice.md"} - {chosen}
    assert nbcache(project, "show", chosen).returncode == 0
    unread = nbcache(project, "show", ignored)
    assert unread.returncode == 2
    assert unread.stderr.startswith(f"nbcache: {ignored}: not a document of the project")


@pytest.mark.skipif(shutil.which("du") is None, reason="compared with du")
def test_sizes_are_those_du_finds_and_a_prune_says_what_it_did(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": GOOD, "text.md": TEXT})
    assert nbcache(project, "execute").returncode == 0
    project.edit("text.md", "from the text notebook", "edited")
    assert nbcache(project, "execute").returncode == 0
    cache = project.root / ".nbcache"

    def du(*options: str) -> int:
        found = subprocess.run(["du", "-s", "-B1", *options, cache], capture_output=True, text=True)
        return int(found.stdout.split()[0])

    pruned = nbcache(project, "prune", "--unused").stdout
    assert pruned.startswith("removed 1 entry; "), pruned
    for _ in range(2):
        nothing = nbcache(project, "prune", "--unused").stdout
        info = json.loads(nbcache(project, "info", "--json").stdout)
        assert (info["size"], info["apparent_size"]) == (du(), du("--apparent-size"))
        assert nothing == f"removed nothing; {human_size(info['size'])} on disk " + (
            f"({human_size(info['apparent_size'])} apparent)\n"
        )
        assert f"size:    {human_size(info['size'])} on disk" in nbcache(project, "info").stdout
