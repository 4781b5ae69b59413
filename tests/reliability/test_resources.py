"""What a long-lived process (sphinx-autobuild, an editor's preview) running many builds
must not accumulate: files, pipes and sockets left open by one build."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from helpers import ProjectFactory, code, ipynb

BUILDS = 3

BUILD_SEVERAL_TIMES = f"""\
import gc
import sys
import warnings

from sphinx.cmd.build import build_main

leaked = []
sys.unraisablehook = lambda unraisable: leaked.append(
    f"{{unraisable.exc_value!r}} in {{unraisable.object!r}}"
)  # a ResourceWarning from a finaliser is "ignored", never raised
warnings.simplefilter("error", ResourceWarning)
for _ in range({BUILDS}):
    args = ["-q", "-E", "-D", "nb_execution_mode=force", *sys.argv[1:], ".", "_build/html"]
    assert build_main(args) == 0
    gc.collect()
print("\\n".join(leaked) or "nothing leaked")
"""


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "normal"])
def test_builds_in_one_process_leave_no_file_or_socket_open(
    make_project: ProjectFactory, fork: bool
) -> None:
    project = make_project({"a.ipynb": ipynb(code("print('ran')")), "b.ipynb": ipynb(code("1"))})
    script = project.write("build_several_times.py", textwrap.dedent(BUILD_SEVERAL_TIMES))
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::ResourceWarning",
            script,
            "-D",
            f"nbcache_fork_kernels={int(fork)}",
        ],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "nothing leaked", done.stdout
    assert "ResourceWarning" not in done.stderr, done.stderr
