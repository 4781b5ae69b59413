"""The kernel pool: how many notebooks run at once, fixed or adapting to the machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat

from sphinx_nbcache.model import ExecutionJob, ExecutionResult
from sphinx_nbcache.run.local import LocalExecutor
from sphinx_nbcache.run.pool import Pool, make_pool

IDLE, HALF, FULL = 20.0, 60.0, 100.0
PLENTY, SHORT = 0.8, 0.05


def waiting_pool(floor: int, ceiling: int) -> Pool:
    """A pool whose slots are all taken, with one kernel ready and waiting for a slot."""
    pool = Pool(floor, ceiling, ceiling)
    pool.running = pool.limit
    pool.ready = 1
    return pool


def test_fixed_workers_never_move_but_kernels_started_ahead_may() -> None:
    pool = make_pool(3)
    assert not pool.adaptive
    pool.running, pool.ready, pool.queued = 3, 3, 5
    for _ in range(5):
        pool.starting = pool.ahead_limit
        pool.adapt(IDLE, PLENTY)
    assert pool.limit == 3
    assert pool.ahead_limit == 6, "at most as many again as may execute"


def test_unset_workers_adapt_between_one_and_three_per_cpu() -> None:
    pool = make_pool(None)
    assert pool.adaptive
    assert pool.ceiling == pool.ahead_ceiling == 3 * pool.floor


def test_idle_cpus_with_kernels_waiting_to_start_start_more() -> None:
    pool = Pool(2, 4, 4)
    pool.starting, pool.queued = 2, 10
    pool.adapt(HALF, PLENTY)
    assert (pool.limit, pool.ahead_limit) == (2, 3)
    pool.queued = 0
    pool.starting = 3
    pool.adapt(IDLE, PLENTY)
    assert pool.ahead_limit == 3, "nothing waits to start"


def test_idle_cpus_with_a_kernel_waiting_grow_the_pool_up_to_its_ceiling() -> None:
    pool = waiting_pool(2, 4)
    pool.adapt(HALF, PLENTY)
    assert pool.limit == 3
    pool.running = 3
    for _ in range(5):
        pool.adapt(IDLE, PLENTY)
        pool.running = pool.limit
    assert pool.limit == 4


def test_notebooks_using_half_a_cpu_each_take_the_pool_to_two_per_cpu_at_once() -> None:
    pool = waiting_pool(2, 6)
    pool.adapt(HALF, PLENTY, demand=0.5)
    assert pool.limit == 4
    pool.running = 4
    pool.adapt(HALF, PLENTY, demand=0.05)
    assert pool.limit == 6, "never above the ceiling"
    pool = waiting_pool(2, 6)
    pool.adapt(88.0, PLENTY, demand=0.0)
    assert pool.limit == 6, "kernels that used no CPU at all"


def test_what_the_notebooks_use_counts_unless_the_cpus_are_busy() -> None:
    pool = waiting_pool(2, 6)
    pool.adapt(88.0, PLENTY, demand=0.5)  # kernels starting up, say
    assert pool.limit == 4, "not idle enough for one more, but they leave room for two"
    pool = waiting_pool(2, 6)
    pool.adapt(FULL, PLENTY, demand=0.5)
    assert pool.limit == 2
    pool = waiting_pool(2, 6)
    pool.adapt(88.0, PLENTY, demand=1.0)
    assert pool.limit == 2, "a CPU each: no room"


def test_kernel_load_is_the_cpu_time_of_executing_kernels_per_second() -> None:
    """Real processes: one spinning, one asleep, then gone."""
    import subprocess
    import sys
    import time

    from sphinx_nbcache.run.pool import ADAPT_EVERY, KernelLoad

    spin = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"
    spinning, sleeping = (
        subprocess.Popen([sys.executable, "-c", code])
        for code in (spin, "import time; time.sleep(30)")
    )
    try:
        time.sleep(ADAPT_EVERY)  # both past their start-up
        loads = KernelLoad(), KernelLoad()
        assert loads[0].demand() is None, "nothing executes"
        for load, process in zip(loads, (spinning, sleeping), strict=True):
            load.add(process.pid)
        assert loads[0].demand() is None, "too soon to tell"
        time.sleep(ADAPT_EVERY)
        spun, slept = (load.demand() for load in loads)
        assert spun is not None and slept is not None
        assert slept < 0.05 < 0.25 < spun
        sleeping.kill()
        sleeping.wait()
        assert loads[1].demand() is None, "a kernel that is gone no longer counts"
        assert not loads[1].last
    finally:
        for process in (spinning, sleeping):
            process.kill()
            process.wait()


def test_kernel_load_counts_the_subprocesses_a_notebook_ran() -> None:
    """A kernel whose work ran in a subprocess (a shell command, say) is not idle."""
    import subprocess
    import sys
    import time

    from sphinx_nbcache.run.pool import KernelLoad

    spin = "import time\nt = time.time()\nwhile time.time() - t < 0.5: pass"
    kernel = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {spin!r}])\ntime.sleep(30)",
        ]
    )
    try:
        load = KernelLoad()
        load.add(kernel.pid)
        time.sleep(1.5)
        demand = load.demand()
        assert demand is not None and demand > 0.2
    finally:
        kernel.kill()
        kernel.wait()


def test_no_growth_without_a_kernel_waiting_for_a_slot() -> None:
    pool = Pool(2, 4, 4)
    pool.running = 2
    pool.adapt(IDLE, PLENTY)
    assert pool.limit == 2


def test_a_burst_of_full_cpu_does_not_shrink_but_a_busy_average_does() -> None:
    pool = waiting_pool(2, 4)
    pool.limit = 4
    pool.adapt(HALF, PLENTY)
    pool.adapt(FULL, PLENTY)  # kernels starting up
    assert pool.limit == 4
    for _ in range(4):
        pool.adapt(FULL, PLENTY)
    assert pool.limit == 2, "never below the floor"


def test_short_memory_shrinks_and_stops_growth() -> None:
    pool = waiting_pool(2, 4)
    pool.limit = 3
    pool.adapt(IDLE, SHORT)
    assert pool.limit == 2
    pool.adapt(IDLE, SHORT)
    assert pool.limit == 2


def test_slots_are_taken_in_order_and_never_exceed_the_limit() -> None:
    async def main() -> tuple[list[int], int]:
        pool = Pool(2, 2, 2)
        order: list[int] = []
        most = 0

        async def job(i: int) -> None:
            nonlocal most
            async with pool.ahead():
                await pool.acquire()
            order.append(i)
            most = max(most, pool.running)
            await asyncio.sleep(0.01)
            pool.release()
            await asyncio.sleep(0.01)  # shutting down
            pool.stopped()

        await asyncio.gather(*(job(i) for i in range(6)))
        return order, most

    order, most = asyncio.run(main())
    assert order == list(range(6))
    assert most == 2


def test_a_raised_limit_lets_waiting_kernels_start_at_once() -> None:
    async def main() -> int:
        pool = Pool(1, 3, 3)
        started = 0

        async def job() -> None:
            nonlocal started
            async with pool.ahead():
                await pool.acquire()
            started += 1
            await asyncio.sleep(0.05)
            pool.release()
            pool.stopped()

        tasks = [asyncio.create_task(job()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert started == 1
        pool.limit = pool.ahead_limit = 3
        pool.adapt(IDLE, PLENTY)  # wakes the waiters
        await asyncio.sleep(0.01)
        seen = started
        await asyncio.gather(*tasks)
        return seen

    assert asyncio.run(main()) == 3


def test_a_kernel_whose_job_never_shut_it_down_is_killed_with_the_pool() -> None:
    """The last line of defence behind Ctrl-C: a real kernel left running is killed."""
    from jupyter_client.manager import AsyncKernelManager

    pool = Pool(1, 1, 1)
    manager = AsyncKernelManager()
    asyncio.run(manager.start_kernel())
    process = manager.provisioner.process  # type: ignore[union-attr]
    connection_file = Path(manager.connection_file)
    assert process.poll() is None
    assert connection_file.exists()
    pool.kernels.add(manager)
    pool.kill_leftovers()
    assert process.poll() is not None
    assert not connection_file.exists()
    assert not pool.kernels


def notebook_jobs(sources: list[str]) -> list[ExecutionJob]:
    jobs = []
    for i, source in enumerate(sources):
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(f"# {i}\n{source}")],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        )
        jobs.append(
            ExecutionJob(f"k{i}", f"nb{i}.ipynb", nbformat.writes(notebook), None, 60, False)
        )
    return jobs


class PeakWatcher:
    """Notes the most notebooks executing at once, and the most kernels whose CPU time the
    pool followed."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.peak = self.followed = 0

    def started(self, job: ExecutionJob, clock: object) -> None:
        self.peak = max(self.peak, self.pool.running)
        self.followed = max(self.followed, len(self.pool.load.last))

    def finished(self, result: ExecutionResult) -> None:
        pass

    def tick(self, at_once: int) -> None:
        pass


def test_kernels_alive_never_exceed_the_executing_and_the_ready() -> None:
    """Real kernels: each notebook counts the live kernels of this process as it starts;
    a finished kernel still shutting down counts too."""
    count = (
        "import os, psutil\n"
        "kernels = [p for p in psutil.Process(os.getppid()).children()\n"
        "           if p.status() != psutil.STATUS_ZOMBIE\n"
        "           and any('ipykernel' in part for part in p.cmdline())]\n"
        "print(len(kernels))"
    )
    pool = make_pool(1)
    results = LocalExecutor(pool).run(notebook_jobs([count] * 8), PeakWatcher(pool))
    assert all(result.succeeded for result in results), [r.error for r in results]
    alive = [int(result.outputs[0][0]["text"]) for result in results]
    assert 1 <= max(alive) <= pool.limit + pool.ahead_ceiling
    assert pool.alive == 0


def test_notebooks_that_mostly_wait_execute_more_at_once_than_one_per_cpu() -> None:
    """Real kernels that sleep: the pool sees them use next to no CPU and lets those
    waiting for a slot in, up to its ceiling."""
    pool = Pool(1, 3, 3, cpus=1)
    watcher = PeakWatcher(pool)
    results = LocalExecutor(pool, preload=[]).run(
        notebook_jobs(["import time; time.sleep(1.5)"] * 6), watcher
    )
    assert all(result.succeeded for result in results), [r.error for r in results]
    assert watcher.peak > 1
    assert watcher.followed == watcher.peak, "each executing kernel's CPU time is followed"
    assert pool.limit <= 3
    assert not pool.load.last
