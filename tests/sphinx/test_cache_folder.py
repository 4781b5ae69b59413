"""The cache folder, wherever ``nbcache_path`` puts it, is never an input of a notebook."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ProjectFactory, code, ipynb, nbcache
from sphinx_nbcache.inputs import discover

READS_THE_CACHE = ipynb(
    code(
        "import os\n"
        "for name in sorted(os.listdir('cachedir')):\n"
        "    path = os.path.join('cachedir', name)\n"
        "    if os.path.isfile(path):\n"
        "        open(path, 'rb').close()\n"
        "print('looked into the cache')"
    )
)


def test_files_in_a_custom_cache_folder_are_not_dependencies(
    make_project: ProjectFactory,
) -> None:
    """The cache's database changes with every entry written: recorded as a file the
    notebook read, it made the notebook stale on every build."""
    project = make_project(
        {"nb.ipynb": READS_THE_CACHE},
        'nbcache_path = "cachedir"\nexclude_patterns.append("cachedir")\n',
    )
    (project.root / "cachedir").mkdir()
    project.write("cachedir/notes.txt", "a file the kernel reads inside the cache folder\n")
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert first.executed == ["nb.ipynb"]
    assert (project.root / "cachedir" / "cache.db").is_file()
    shown = json.loads(nbcache(project, "show", "nb.ipynb", "--json").stdout)
    assert shown["dependencies"]["files"] == {}
    project.write("cachedir/notes.txt", "changed\n")
    assert project.build("-E").executed == []


def test_discovery_leaves_out_excluded_folders(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    names = ("data.csv", "cachedir/cache.db", "cachedir2/data.csv", ".nbcache/cache.db")
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    reported = [str(root / name) for name in names]
    assert discover.relevant(reported, root, [], excluded=[str(root / "cachedir")]) == [
        "cachedir2/data.csv",
        "data.csv",
    ]
