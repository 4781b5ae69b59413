"""``nbcache_executor = "dask"``: builds through a real Dask cluster, a ``LocalCluster``
with two worker processes (each under a nanny that restarts it) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client, LocalCluster

from helpers import ProjectFactory, code, ipynb, myst_notebook, nbcache

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes")


ALLOWED_FAILURES = 1
"""Worker deaths a task survives before Dask gives up on it (3 by default)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as running,
    ):
        yield running


def workers(cluster: LocalCluster) -> set[str]:
    with Client(cluster) as client:
        return set(client.scheduler_info(n_workers=-1)["workers"])


def dask_conf(cluster: LocalCluster, extra: str = "") -> str:
    return (
        f'nbcache_executor = "dask"\nnbcache_dask_scheduler = "{cluster.scheduler_address}"\n'
        'nbcache_report = "report.json"\n'
        'exclude_patterns += ["**helper.py"]  # a module, not a jupytext notebook\n' + extra
    )


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


READS_DATA = ipynb(
    code(
        "import os, helper\n"
        "print('cwd', os.getcwd())\n"
        "print('data:', open('data.txt').read().strip(), helper.VALUE)\n"
        "open('written.txt', 'w').write('made by the notebook')"
    )
)


def test_cli_and_build_through_dask_then_a_local_build_executes_nothing(
    make_project: ProjectFactory, cluster: LocalCluster
) -> None:
    text = myst_notebook("# Text\n\n```{code-cell} ipython3\nprint('text notebook ran')\n```\n")
    project = make_project({"reads.ipynb": READS_DATA, "text.md": text}, dask_conf(cluster))
    project.write("data.txt", "one\n")
    project.write("helper.py", "VALUE = 'from helper'\n")

    cli = nbcache(project, "execute", "reads.ipynb")  # the scheduler from conf.py
    assert cli.returncode == 0, cli.stderr
    assert f"on the Dask cluster at {cluster.scheduler_address}" in cli.stdout
    assert "reads.ipynb executed in" in cli.stdout
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.warnings == []
    assert build.executed == ["text.md"]
    assert "text notebook ran" in build.html("text")
    page = build.html("reads")
    assert "data: one from helper" in page
    assert f"cwd {project.root}" in page, "shared files: the notebook runs in its own folder"
    report = json.loads((build.outdir / "report.json").read_text())
    ran_on = {n["source"]: n["worker"] for n in report["notebooks"]}
    assert set(ran_on.values()) <= workers(cluster)
    assert all(ran_on.values())

    local = project.build("-D", "nbcache_executor=local", out="_build/local")
    assert local.returncode == 0, local.stderr
    assert local.executed == []
    assert "data: one from helper" in local.html("reads")

    project.write("data.txt", "two\n")  # read on a worker, recorded for this project
    edited = project.build("-D", "nbcache_executor=local", out="_build/local")
    assert edited.executed == ["reads.ipynb"]
    assert "data: two from helper" in edited.html("reads")


def test_shipped_files_run_away_from_the_project_and_too_many_fail_alone(
    make_project: ProjectFactory, cluster: LocalCluster
) -> None:
    files = {"sub/reads.ipynb": READS_DATA, "heavy/big.ipynb": ipynb(code("print('never runs')"))}
    conf = 'nbcache_dask_files = "ship"\nnbcache_dask_ship_max_size = 10_000\n'
    project = make_project(files, dask_conf(cluster, conf))
    project.write("sub/data.txt", "shipped\n")
    project.write("sub/helper.py", "VALUE = 'helper shipped too'\n")
    project.write("heavy/blob.bin", "x" * 20_000)
    build = project.build()
    assert build.returncode == 0, build.stderr
    (warning,) = build.warnings
    assert "heavy/big.ipynb: WARNING: " in warning
    assert "ShipError: 2 file(s) of 20." in warning
    assert "more than nbcache_dask_ship_max_size" in warning
    assert warning.endswith("[nbcache.kernel]")
    page = build.html("sub/reads")
    assert "data: shipped helper shipped too" in page
    cwd = page.split("cwd ", 1)[1].split()[0]
    assert not Path(cwd).is_relative_to(project.root), "ran in a copy on the worker"
    written = project.root / "sub" / "written.txt"
    assert written.read_text() == "made by the notebook", "brought back and restored"

    local = project.build("-D", "nbcache_executor=local", out="_build/local")
    assert local.executed == ["heavy/big.ipynb"], "the unshipped notebook was not cached"
    project.write("sub/helper.py", "VALUE = 'helper edited'\n")
    edited = project.build("-D", "nbcache_executor=local", out="_build/local")
    assert edited.executed == ["sub/reads.ipynb"], "the module it imported is a dependency"


def test_a_notebook_whose_worker_dies_runs_again_elsewhere(
    make_project: ProjectFactory, cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "worker-pid"
    victim = ipynb(
        code(
            "import os, pathlib, time\n"
            f"marker = pathlib.Path({str(marker)!r})\n"
            "first = not marker.exists()\n"
            "marker.write_text(str(os.getppid()))  # the kernel's parent: the worker\n"
            "if first:\n"
            "    time.sleep(120)\n"
            "print('finished on the', 'first' if first else 'second', 'try')"
        )
    )
    project = make_project({"victim.ipynb": victim}, dask_conf(cluster))
    logs_before = kernel_logs()
    places_before = set(Path(tempfile.gettempdir()).glob("nbcache-dask-*"))
    process = project.start()
    wait_for(lambda: marker.exists() and marker.read_text() != "")
    first_worker = int(marker.read_text())
    os.kill(first_worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    page = (project.root / "_build/html/victim.html").read_text()
    assert "finished on the second try" in page
    assert "victim.ipynb executed in" in stdout
    wait_for(lambda: project.kernels() == [], 30)  # the first kernel went with its worker
    assert kernel_logs() <= logs_before, "the killed worker's kernel log went with it"
    places = set(Path(tempfile.gettempdir()).glob("nbcache-dask-*"))
    assert places <= places_before, "its working folder is in the worker's scratch space"


def kernel_logs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("nbcache-kernel-*"))


def test_a_notebook_that_keeps_killing_its_worker_fails_alone(
    make_project: ProjectFactory, cluster: LocalCluster
) -> None:
    killer = ipynb(code("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    project = make_project({"killer.ipynb": killer, "prose.md": "# Prose\n"}, dask_conf(cluster))
    build = project.build()
    assert build.returncode == 0, build.stderr
    (warning,) = build.warnings
    assert (
        "killer.ipynb: WARNING: Executing notebook failed (lost its kernel): KilledWorker: "
        in warning
    )
    assert f"died {ALLOWED_FAILURES + 1} time(s), last tcp://127.0.0.1:" in warning
    assert warning.endswith("[nbcache.kernel]")
    assert "Prose" in build.html("prose")
    status = nbcache(project, "status", "--json")
    assert [n["state"] for n in json.loads(status.stdout)] == ["new"], "not cached"
    wait_for(lambda: len(workers(cluster)) == 2, 60)  # the nannies restarted them


def test_ctrl_c_cancels_the_tasks_and_their_kernels(
    make_project: ProjectFactory, cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    slow = ipynb(
        code(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)")
    )
    project = make_project({"slow.ipynb": slow}, dask_conf(cluster))
    process = project.start(env={"PYTHONUNBUFFERED": "1"})
    wait_for(marker.exists)
    assert project.kernels(), "the kernel runs on a worker, in the notebook's folder"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Interrupted" in stderr
    # the worker stops the kernel once it sees the task cancelled; Dask alone would leave
    # it running for as long as the cell takes
    wait_for(lambda: project.kernels() == [], 10)
    assert nbcache(project, "status").returncode == 1, "nothing was stored"


def test_an_unreachable_scheduler_is_one_clear_error(make_project: ProjectFactory) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    project = make_project(
        {"good.ipynb": ipynb(code("print('never runs')"))},
        f'nbcache_executor = "dask"\nnbcache_dask_scheduler = "{address}"\n',
    )
    quick = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    build = project.build(env=quick)
    assert build.returncode == 2
    (error,) = [line for line in build.stderr.splitlines() if line.startswith("ERROR")]
    assert error.startswith(f"ERROR: cannot reach the Dask scheduler at {address} (waited 2s)")
    assert error.endswith("[nbcache.executor]")

    cli = nbcache(project, "execute", "--executor", "dask", "--scheduler", address, env=quick)
    assert cli.returncode == 2
    assert (
        cli.stderr.strip()
        .splitlines()[-1]
        .startswith(f"nbcache: cannot reach the Dask scheduler at {address}")
    )


def test_dask_without_a_scheduler_or_distributed_says_what_to_do(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"good.ipynb": ipynb(code("print('never runs')"))})
    env = {"DASK_SCHEDULER_ADDRESS": ""}
    build = project.build("-D", "nbcache_executor=dask", env=env)
    assert build.returncode == 2
    assert "nbcache_executor = 'dask' needs a scheduler: set nbcache_dask_scheduler" in (
        build.stderr
    )
    blocked = project.root / "no_distributed"
    blocked.mkdir()
    (blocked / "distributed.py").write_text("raise ImportError('not installed here')\n")
    hidden = project.build("-D", "nbcache_executor=dask", env={"PYTHONPATH": str(blocked), **env})
    assert hidden.returncode == 2
    assert "pip install 'sphinx-nbcache[dask]'" in hidden.stderr


def test_a_cluster_without_workers_says_so_and_waits_for_one(
    make_project: ProjectFactory,
) -> None:
    with LocalCluster(
        n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as empty:
        project = make_project({"good.ipynb": ipynb(code("print('ran once a worker joined')"))})
        process = project.start(
            "-D",
            "nbcache_executor=dask",
            "-D",
            f"nbcache_dask_scheduler={empty.scheduler_address}",
            env={"PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "has no workers yet" in line:
                break
        assert line.rstrip().endswith("the notebooks wait until one joins"), line
        empty.scale(1)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert "ran once a worker joined" in (project.root / "_build/html/good.html").read_text()


def test_a_notebook_that_inherits_is_not_executed_on_dask_and_says_why(
    make_project: ProjectFactory, cluster: LocalCluster
) -> None:
    parent = ipynb(code("rows = 3\nprint('parent ran')"))
    child = ipynb(code("print(rows)"), metadata={"nbcache": {"inherit": "parent.ipynb"}})
    project = make_project({"parent.ipynb": parent, "child.ipynb": child}, dask_conf(cluster))
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["parent.ipynb"]
    [warning] = [w for w in build.warnings if "child.ipynb" in w]
    assert (
        "Notebook not executed: inherits from parent.ipynb, and only nbcache_executor = "
        "'local' passes kernel states on [nbcache.inherit]"
    ) in warning
    assert "parent ran" in build.html("parent")
