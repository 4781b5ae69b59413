"""A process that runs many builds (sphinx-autobuild, an editor's preview) gets fresh state
for each: what one build looked up (installed versions, interpreters, fingerprints) is not
what the next one believes, and setup adds no second log filter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import PROGRESS, ProjectFactory, code, ipynb

BUILD_AFTER_EACH_INSTALL = """\
import logging
import shutil
import sys
from pathlib import Path

from sphinx.cmd.build import build_main

site = Path(sys.argv[1])
sys.path.insert(0, str(site))


def install(version):
    for old in site.glob("nbcache_pbs_pkg-*.dist-info"):
        shutil.rmtree(old)
    (site / "nbcache_pbs_pkg.py").write_text(f"VERSION = {version!r}\\n")
    info = site / f"nbcache_pbs_pkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\\nName: nbcache-pbs-pkg\\nVersion: {version}\\n"
    )
    (info / "top_level.txt").write_text("nbcache_pbs_pkg\\n")


# the second build reads every page again (-E), so it looks the package's version up
for version, options in (("1.0", []), ("1.0", ["-E"]), ("2.0", []), ("2.0", [])):
    install(version)
    print(f"=== build with {version}", flush=True)
    assert build_main(["--no-color", *options, ".", "_build/html"]) == 0
    filters = logging.getLogger("sphinx.myst_nb.sphinx_ext").filters
    print(f"=== filters {len(filters)}", flush=True)
"""


def test_each_build_of_a_long_lived_process_looks_again(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    project = make_project(
        {
            "uses.ipynb": ipynb(code("import nbcache_pbs_pkg\nprint(nbcache_pbs_pkg.VERSION)")),
            "plain.ipynb": ipynb(code("print('plain')")),
        }
    )
    script = tmp_path / "build_four_times.py"  # beside the project: .py may be a notebook
    script.write_text(textwrap.dedent(BUILD_AFTER_EACH_INSTALL), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, script, str(site)],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(site), "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    builds = done.stdout.split("=== build with ")[1:]
    executed = [sorted(m["source"] for m in PROGRESS.finditer(build)) for build in builds]
    assert executed == [["plain.ipynb", "uses.ipynb"], [], ["uses.ipynb"], []], done.stdout
    assert "nbcache-pbs-pkg 1.0 -> 2.0 since it was executed" in builds[2]
    assert "2.0" in (project.root / "_build/html/uses.html").read_text(encoding="utf-8")
    assert done.stdout.count("=== filters 1\n") == 4, "one log filter however many builds"
