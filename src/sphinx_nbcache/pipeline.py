"""read -> key -> lookup -> execute misses -> store: the one place that sees every stage.

No Sphinx here: the extension and the command line share this pipeline and one cache.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from sphinx_nbcache.cache.payload import DamagedEntryError
from sphinx_nbcache.cache.signing import machine_secret
from sphinx_nbcache.cache.snapshots import SnapshotStore
from sphinx_nbcache.cache.store import Store, StoreWriteError, UnsignedEntryError
from sphinx_nbcache.config import Settings
from sphinx_nbcache.inputs import discover
from sphinx_nbcache.inputs.discover import FileDigests
from sphinx_nbcache.inputs.environment import (
    Environments,
    with_packages,
)
from sphinx_nbcache.model import (
    INHERITANCE_ERROR,
    NOTEBOOK_TIMEOUT,
    ExecutionJob,
    ExecutionResult,
    Resume,
    Status,
    cell_timeout,
    unrun_result,
)
from sphinx_nbcache.plan import CacheCheck, PlannedNotebook, Warn, make_job
from sphinx_nbcache.run.driver import Running, Watcher
from sphinx_nbcache.run.local import Executor, LocalExecutor
from sphinx_nbcache.run.pool import make_pool
from sphinx_nbcache.run.preload import Preloader
from sphinx_nbcache.run.state import parent_failed

Explain = Callable[[str, str], None]
"""``explain(message, source)``: why a stored result is not used."""


KEPT_AT_MOST = 64 * 2**20
"""Bytes of JSON of the results a build keeps between planning and parsing their pages;
beyond that (notebooks with many images, say), a page's result is read again."""


class BuildWatcher(Watcher, Protocol):
    """What a caller of :meth:`Pipeline.execute` hears: the executor's events, and the
    notebooks another build on the same cache executed meanwhile."""

    def taken(self, source: str) -> None:
        """Another build executed and stored the notebook while this one waited; its result
        is taken from the cache instead of executing again."""


class Pipeline:
    """Looks notebooks up in the store and executes the misses, storing each as it ends."""

    def __init__(
        self, settings: Settings, store: Store, warn: Warn, explain: Explain | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.warn = warn
        self.explain = explain or (lambda message, source: None)
        self.digests = FileDigests()
        """sha256 of files read by notebooks, declared or discovered: the build's one
        digest cache, shared by planning, lookups and the executor."""
        self.environments = Environments(settings.cache_path)
        """Where each kernel runs and what is installed there, looked at once per build."""
        self._kept: dict[str, tuple[ExecutionResult, int]] = {}
        """Hits looked up while planning, with their size, until the page is parsed."""
        self._kept_bytes = 0
        self._said: set[str] = set()
        """Problems of the whole cache already warned about in this build (each once)."""
        self._taken: dict[str, ExecutionResult] = {}
        """Results another build executed while this one waited for it, which :meth:`check`
        would not reuse (``force`` mode, a failure to retry): this build's all the same."""
        self.states = SnapshotStore(
            machine_secret(), settings.snapshot_max_size, settings.cache_path
        )
        """Final kernel states of the notebooks others inherit from, on this machine."""
        self._parents: dict[str, ExecutionResult | None] = {}
        """Parents' reusable results, looked up once for all their children
        (:meth:`parent_result`), until a new one is stored."""
        self.for_state: set[str] = set()
        """Keys executed again only for their final state: their stored result is kept (a
        new one would make every notebook inheriting from them stale)."""
        self.from_start = False
        """Execute every notebook from its first cell (``nbcache execute --force``)."""
        self.resuming: dict[str, ExecutionResult] = {}
        """The entries that notebooks of the run resume from, by the notebooks' keys."""
        self.early: Preloader | None = None
        """Fork servers started ahead (see :mod:`sphinx_nbcache.run.early`), for the next run of
        the local executor; :meth:`discard_early` stops them when nothing executes."""

    def lookup(self, planned: PlannedNotebook, keep: bool = False) -> ExecutionResult | None:
        """The reusable stored result, or None when the notebook must execute (always in
        ``force`` mode).

        With ``keep``, a hit stays in memory (within :data:`KEPT_AT_MOST` bytes in all)
        for the next lookup without it, when its page is parsed: that one then reads,
        decompresses and checks nothing again.
        """
        return self.check(planned, keep).reusable

    def check(self, planned: PlannedNotebook, keep: bool = False) -> CacheCheck:
        """What the store holds for the notebook and, if it holds a result the build would
        not reuse, why: :meth:`lookup` for the build, the whole answer for ``nbcache``."""
        if planned.key in self._taken:
            return CacheCheck(self._taken[planned.key])
        if keep:
            kept = self._kept.get(planned.key)
        else:
            kept = self._kept.pop(planned.key, None)
            self._kept_bytes -= kept[1] if kept is not None else 0
        if kept is not None:
            result, size = kept
        else:
            try:
                loaded, size = self.store.load(planned.key)
            except UnsignedEntryError as exc:
                self.warn_once(
                    "unsigned",
                    f"cache entry {exc}; not used (with the secret in ${self.settings.secret_env} "
                    "set, only entries signed with it are); executing the notebook again, and "
                    "any other such entry of this build without a further warning",
                    "cache",
                    planned.source,
                )
                return CacheCheck(None, damaged=True)
            except DamagedEntryError as exc:
                message = f"cache entry {exc}; executing the notebook again"
                # the build looks again around the locks: one warning per entry
                self.warn_once(f"damaged {planned.key}", message, "cache", planned.source)
                return CacheCheck(None, damaged=True)
            if loaded is None:
                return CacheCheck(None)
            result = loaded
        changed = (
            self.changed_dependency(result)
            or self.environments.changed(result.environment, planned.kernel)
            or self._parent_newer(planned, result)
        )
        if changed is not None:
            self.explain(f"{changed} since it was executed; executing it again", planned.source)
            return CacheCheck(result, changed=changed)
        if planned.notebook.options.mode == "force":
            return CacheCheck(result, again='nb_execution_mode is "force"')
        if result.error is not None and self.settings.retry_failed:
            return CacheCheck(result, again="nbcache_retry_failed is on")
        if result.error is not None and self._more_time_now(planned, result):
            return CacheCheck(result, again=f"time limit raised from {result.error.timeout} s")
        if keep and kept is None and self._kept_bytes + size <= KEPT_AT_MOST:
            self._kept[planned.key] = (result, size)
            self._kept_bytes += size
        return CacheCheck(result)

    def must_execute(self, planned: PlannedNotebook, keep: bool = False) -> bool:
        """Whether a build executes a notebook that goes through the cache (``keep`` as for
        :meth:`lookup`). The build and the ``nbcache`` command both decide by
        :meth:`check`, so they always agree."""
        return self.check(planned, keep).reusable is None

    def forget_kept(self) -> None:
        """Once every page is parsed (forked ``-j`` readers parse copies)."""
        self._kept.clear()
        self._kept_bytes = 0

    def changed_dependency(self, result: ExecutionResult) -> str | None:
        """The first file the result depends on that changed, in words; None if none did."""
        root = self.settings.project_root
        if root is None:
            return None
        for path, digest in sorted(result.dependencies.items()):
            try:
                now: str | None = self.digests(root / path)
            except OSError:
                now = None
            if now is None:
                return f"{path} is gone"
            if now != digest:
                return f"{path} changed"
        return None

    def _parent_newer(self, planned: PlannedNotebook, result: ExecutionResult) -> str | None:
        """A notebook that inherits is stale once its parent executed again after it (a file
        the parent reads changed, say: same code, same key, another state)."""
        parent = planned.parent
        stored = None if parent is None else self.parent_result(parent)
        if stored is None or stored.finished <= result.finished:
            return None
        return "the notebook it inherits from executed again"

    def parent_result(self, parent: PlannedNotebook) -> ExecutionResult | None:
        """:meth:`lookup` of a notebook others inherit from, done once however many
        children ask (a book may have a hundred chapters starting from one notebook)."""
        if parent.key not in self._parents:
            self._parents[parent.key] = self.lookup(parent, keep=True)
        return self._parents[parent.key]

    def _more_time_now(self, planned: PlannedNotebook, result: ExecutionResult) -> bool:
        """A timed-out result is stale once its limit is raised: time limits are not in
        the key, so raising one re-executes only the notebooks that ran out of time."""
        error = result.error
        if error is None or error.status is not Status.timeout or error.timeout is None:
            return False
        if error.name == NOTEBOOK_TIMEOUT:
            now = self.settings.notebook_timeout
        else:
            cells = planned.notebook.notebook.cells
            index = error.cell_index
            cell = cells[index] if index is not None and index < len(cells) else {}
            options = planned.notebook.options
            now = cell_timeout(cell, options.timeout, options.cell_metadata_key)
        return now is None or now > error.timeout

    def execute(
        self,
        notebooks: Iterable[PlannedNotebook],
        watcher: BuildWatcher,
        executor: Executor | None = None,
    ) -> dict[str, ExecutionResult]:
        """Execute each distinct key once, concurrently, with the parents that must execute
        again for their final state (:meth:`with_parents`); results by key.

        Every result is stored the moment its notebook finishes, before ``watcher`` hears of
        it, so an interrupted run keeps what finished. Returns only after every kernel has
        shut down.

        Another build on the same cache may be executing some of the notebooks: this one
        executes the others first, then waits for those (see :class:`_Locks`) and takes
        their results from the cache; they are not among the results returned, and a
        later :meth:`lookup` finds them.
        """
        planned = {p.key: p for p in self.with_parents(notebooks)}
        undone = self._undone(planned)
        settings = self.settings
        links = (
            discover.linked_folders(settings.srcdir, settings.project_root)
            if settings.srcdir is not None and settings.project_root is not None and planned
            else {}
        )
        parents = {p.parent.key for p in planned.values() if p.parent is not None}
        self.states.in_use |= parents  # kept or about to be: not pruned during the run
        jobs = {}
        for key, p in planned.items():
            job = dataclasses.replace(make_job(p, settings, links), snapshot=key in parents)
            found = self.resume_point(p, job.prefix_keys)
            if found.problem:
                self.warn(f"{found.problem}; executing from {found.start}", "resume", p.source)
            if found.resume is not None and found.entry is not None:
                self.resuming[key] = found.entry
                self.states.in_use.add(job.prefix_keys[found.resume.cell])
                job = dataclasses.replace(job, resume=found.resume)
            jobs[key] = job
        discovering = [planned[key].kernel for key, job in jobs.items() if job.discover_root]
        self.environments.look_ahead(discovering)
        locks = _Locks(self, planned, watcher)
        children = {key: child for key, (child, _) in undone.items()}
        storing = _Storing(self, watcher, {**planned, **children}, locks)
        executor = executor or self.executor()
        for _, result in undone.values():
            storing.finished(result)
        try:
            todo, held_back = locks.first(), list[str]()
            while todo or locks.waiting or held_back:
                todo, held_back = _after_parents([*todo, *held_back], planned, locks.waiting)
                if todo:
                    executor.run([jobs[key] for key in todo], storing)
                todo = locks.next()
        finally:
            locks.release_all()
            self.environments.wait(discovering)  # no thread may outlive the run: Sphinx forks
        # a notebook that executed again without leaving its state: what is kept under its
        # key is an older run's, which its children must not start from
        self.states.remove(
            [
                key
                for key, result in storing.results.items()
                if key not in parents or result.snapshot_error or not result.succeeded
            ]
        )
        return storing.results

    def resume_point(self, planned: PlannedNotebook, prefix: Sequence[str]) -> ResumePoint:
        """Where a notebook that must execute can start instead of its first cell, and the
        entry whose outputs the cells before come from: the latest checkpoint kept before
        its first changed code cell, among the stored results of the same document whose
        files and packages have not changed since (``prefix``: its prefix keys; none when
        it does not resume)."""
        found = ResumePoint()
        if not prefix or self.from_start or planned.notebook.options.mode == "force":
            return found
        for key in self.store.keys_of(planned.source):
            try:
                old = self.store.get(key)
            except DamagedEntryError:
                continue
            if old is None or old.source != planned.source or not old.checkpoints:
                continue
            if planned.notebook.options.in_temp and old.artefacts:
                continue  # files its earlier cells wrote are not in a new temporary folder
            same = 0
            while same < min(len(prefix), len(old.prefix_keys), len(old.outputs)):
                if old.prefix_keys[same] != prefix[same]:
                    break
                same += 1
            usable = [c for c in old.checkpoints if c["cell"] < same]
            if not usable or usable[-1]["cell"] <= found.cell:
                continue
            if (
                self.changed_dependency(old)
                or self.environments.changed(old.environment, planned.kernel)
                or self._parent_newer(planned, old)
            ):
                continue
            for checkpoint in reversed(usable):
                cell = checkpoint["cell"]
                if cell <= found.cell:
                    break
                if self.states.has(prefix[cell]):
                    resume = Resume(
                        cell=cell,
                        executed=checkpoint["executed"],
                        outputs=old.outputs[: cell + 1],
                        execution_counts=old.execution_counts[: cell + 1],
                        cell_times=old.cell_times[: cell + 1],
                    )
                    found = dataclasses.replace(found, resume=resume, entry=old)
                    break
                if not found.problem:
                    found = dataclasses.replace(found, problem=self._missing(prefix[cell], cell))
        return found

    def _missing(self, key: str, cell: int) -> str:
        """Why the checkpoint after code ``cell`` kept under ``key`` cannot be used."""
        where = f"the kernel state kept after code cell {cell + 1}"
        if self.states.path(key).is_file():
            return f"{where} does not verify (damaged, or not written on this machine)"
        return f"{where} is no longer kept (nbcache_snapshot_max_size)"

    def with_parents(self, notebooks: Iterable[PlannedNotebook]) -> list[PlannedNotebook]:
        """``notebooks``, and the notebooks they inherit from that must execute again for
        their final state: one with no kept state that verifies (pruned, or never on this
        machine), once for all its children. What a run of :meth:`execute` executes, so
        that a caller counts it first."""
        planned = {p.key: p for p in notebooks}
        if self.settings.executor != "local":
            return list(planned.values())  # no states are passed on (see :meth:`_undone`)
        todo = list(planned.values())
        while todo:
            parent = todo.pop().parent
            if parent is None or parent.key in planned:
                continue
            stored = self.parent_result(parent)
            if stored is not None and (not stored.succeeded or self.states.has(parent.key)):
                continue  # a failed parent's children are not executed, see _undone
            self.explain(
                "executing it again for its final state, which the notebooks inheriting "
                "from it start from",
                parent.source,
            )
            if stored is not None:
                self.for_state.add(parent.key)  # its stored result stays as it is
            planned[parent.key] = parent
            todo.append(parent)
        return list(planned.values())

    def _undone(
        self, planned: dict[str, PlannedNotebook]
    ) -> dict[str, tuple[PlannedNotebook, ExecutionResult]]:
        """The notebooks of ``planned`` that cannot execute, taken out of it, with the
        result to show: their parent failed (in an earlier build, or is itself undone), or
        the executor cannot pass kernel states on."""
        undone: dict[str, tuple[PlannedNotebook, ExecutionResult]] = {}
        local = self.settings.executor == "local"
        changed = True
        while changed:
            changed = False
            for child in list(planned.values()):
                parent = child.parent
                if parent is None or (local and parent.key in planned):
                    continue
                job = make_job(child, self.settings)
                stored = (
                    undone[parent.key][1] if parent.key in undone else self.parent_result(parent)
                )
                if not local:
                    message = (
                        f"inherits from {parent.source}, and only nbcache_executor = 'local' "
                        "passes kernel states on"
                    )
                    result = unrun_result(job, INHERITANCE_ERROR, message)
                elif stored is not None and not stored.succeeded:
                    result = parent_failed(job, stored, parent.notebook.notebook.cells)
                else:
                    continue  # its parent's kept state
                undone[child.key] = (child, result)
                del planned[child.key]
                changed = True
        return undone

    def executor(self) -> Executor:
        """The executor ``nbcache_executor`` names. :raises ExecutorError: when it cannot
        run anything (a Dask scheduler out of reach)."""
        if self.settings.executor == "dask":
            from sphinx_nbcache.run.dask import DaskExecutor

            return DaskExecutor(self.settings)
        early, self.early = self.early, None
        return LocalExecutor(
            make_pool(self.settings.workers),
            self.settings.kernel_preload,
            lambda message: self.warn(message, "preload", ""),
            preloader=early,
            digests=self.digests,
            states=self.states,
        )

    def discard_early(self) -> None:
        if self.early is not None:
            self.early.close()
            self.early = None

    def store_result(self, result: ExecutionResult, material: dict[str, Any] | None = None) -> None:
        if result.error is not None and result.error.cell_index is None:
            return  # no cell ran (missing kernel, start-up failure): not the notebook's fault
        if result.error is not None and result.error.status is Status.extension_error:
            return  # an error of ours: the next build executes the notebook again
        self._parents.pop(result.key, None)
        try:
            self.store.put(result, material)
        except StoreWriteError as exc:
            self.warn_once(
                "unwritable",
                f"cannot write to the cache at {self.store.directory} ({exc}): this result, "
                "and any other of this build that cannot be stored, is used for this build "
                "only; what the cache held before is still used",
                "store",
                result.source,
            )

    def warn_once(self, problem: str, message: str, subtype: str, source: str) -> None:
        """A problem said once per build: of the cache as a whole (at its first page), or
        of one entry however often the build reads it."""
        if problem not in self._said:
            self._said.add(problem)
            self.warn(message, subtype, source)


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a changed notebook can resume (:meth:`Pipeline.resume_point`): the resume
    and the entry it takes the earlier outputs from, or None; and why a later checkpoint
    that matched could not be used."""

    resume: Resume | None = None
    entry: ExecutionResult | None = None
    problem: str = ""

    @property
    def cell(self) -> int:
        """The code cell (from 0) it resumes after; -1 when it does not."""
        return -1 if self.resume is None else self.resume.cell

    @property
    def start(self) -> str:
        """Where execution starts, in words."""
        return "its first cell" if self.resume is None else f"code cell {self.cell + 2}"


def resumed(result: ExecutionResult, old: ExecutionResult) -> ExecutionResult:
    """The result of a run resumed from ``old``'s checkpoint, completed with what ``old``'s
    earlier cells read, imported, wrote and kept: unchanged, as the resume required."""
    upto = result.resumed_from
    assert upto is not None
    environment = result.environment
    if old.environment.get("packages") and "packages" in environment:
        packages = {**old.environment["packages"], **environment["packages"]}
        environment = {**environment, "packages": dict(sorted(packages.items()))}
    return dataclasses.replace(
        result,
        dependencies=dict(sorted({**old.dependencies, **result.dependencies}.items())),
        environment=environment or old.environment,
        artefacts={**old.artefacts, **result.artefacts},
        checkpoints=[c for c in old.checkpoints if c["cell"] <= upto] + result.checkpoints,
    )


def _after_parents(
    keys: list[str], planned: dict[str, PlannedNotebook], waiting: Collection[str]
) -> tuple[list[str], list[str]]:
    """``keys`` to run now, and those held back: the notebooks inheriting, directly or not,
    from one another build is executing (see :class:`_Locks`), which start once it is done."""
    blocked: set[str] = set()
    changed = True
    while changed:
        changed = False
        for key in keys:
            parent = planned[key].parent
            if key not in blocked and parent is not None and {parent.key} & {*waiting, *blocked}:
                blocked.add(key)
                changed = True
    return [k for k in keys if k not in blocked], [k for k in keys if k in blocked]


LOCK_POLL = 0.25
"""Seconds between looks at the locks a build waits for."""
LOCK_STALE_EVERY = 2.0
"""Seconds between asking, of each lock still held, whether its holder is gone."""


class _Locks:
    """The locks of one :meth:`Pipeline.execute` on the keys it executes (see
    :meth:`Store.lock` for when a lock is stale), so that builds sharing a cache execute
    each key once.

    All are tried at once before anything executes: a build executes the keys it locked,
    and then waits for those another build holds, taking each lock as it is released and
    looking the key up again. Once another build stored its result, that result is taken
    from the cache; else (the holder failed before storing, or was killed) this build
    executes it. After ``nbcache_lock_timeout`` seconds of waiting it executes anyway, so
    nothing waits for ever; 0 turns locking off. A lock is held from before its notebook
    starts until its result is stored, never across the build; within one build a key is
    executed once, so a build never waits for itself.
    """

    def __init__(
        self, pipeline: Pipeline, planned: dict[str, PlannedNotebook], watcher: BuildWatcher
    ) -> None:
        self.pipeline = pipeline
        self.watcher = watcher
        self.store = pipeline.store
        self.timeout = pipeline.settings.lock_timeout
        self.planned = planned
        self.before = {key: self.store.stored_at(key) for key in planned} if self.timeout else {}
        """When each entry was written as the run began: one written since is another
        build's, and taken even where the caller chose to execute again."""
        self.again = {
            key
            for key, p in planned.items()
            if self.timeout and self.before[key] is not None and pipeline.lookup(p) is not None
        }
        """Keys the caller executes although a reusable entry exists (``--force``): never
        taken from the cache, whoever wrote it."""
        self.held: set[str] = set()
        self.waiting: dict[str, tuple[float, str]] = {}
        """Keys another build holds: when this one stops waiting, and who holds them."""

    def first(self) -> list[str]:
        """The keys to execute at once: all but those another build holds."""
        if not self.timeout:
            return list(self.planned)
        return self._try(list(self.planned))

    def next(self) -> list[str]:
        """Wait until some key another build held is free, or its holder is gone, or the
        wait has lasted its time; the keys to execute then, empty once none is left."""
        stale_check = time.monotonic()
        while self.waiting:
            time.sleep(LOCK_POLL)
            now = time.monotonic()
            late = [key for key, (until, _) in self.waiting.items() if until <= now]
            if now - stale_check >= LOCK_STALE_EVERY:
                stale_check = now
                free = [key for key in self.waiting if key not in late]
            else:
                free = [k for k in self.waiting if k not in late and not self.store.locked(k)]
            for key in late:
                holder = self.waiting[key][1]
                self.pipeline.explain(
                    f"waited {self.timeout} s for {holder} to execute it; executing it here",
                    self.planned[key].source,
                )
            todo = self._try(free) + self._try(late, take=True)
            if todo:
                return todo
        return []

    def _try(self, keys: list[str], take: bool = False) -> list[str]:
        """Try to lock ``keys``; those this build must execute. Once locked, a key is
        looked up again: another build may have stored its result since."""
        todo = []
        for key in keys:
            got = self.store.lock(key, self.timeout, take)
            if got is False:
                if key not in self.waiting:
                    holder = self.store.holder(key) or "another build"
                    self.waiting[key] = (time.monotonic() + self.timeout, holder)
                    self.pipeline.explain(
                        f"waiting for {holder}, which is executing it", self.planned[key].source
                    )
                continue
            self.waiting.pop(key, None)
            if got:
                self.held.add(key)
            if self._taken(key):
                self.release(key)
            else:
                todo.append(key)
        return todo

    def _taken(self, key: str) -> bool:
        """Whether another build stored the key's result since the run began (or one the
        build would reuse): then this build takes it rather than executing."""
        planned = self.planned[key]
        if key in self.again:
            return False
        written = self.store.stored_at(key)
        if written is None:
            return False
        check = self.pipeline.check(planned)
        if check.entry is None or check.changed is not None:
            return False
        if written == self.before[key] and check.reusable is None:
            return False  # what the caller chose to execute again
        if check.reusable is None:
            self.pipeline._taken[key] = check.entry
        self.watcher.taken(planned.source)
        return True

    def release(self, key: str) -> None:
        if key in self.held:
            self.held.discard(key)
            self.store.unlock(key)

    def release_all(self) -> None:
        """On every way out: a failure, Ctrl-C."""
        for key in list(self.held):
            self.release(key)


class _Storing:
    """Stores each result before the caller's watcher hears of it, then releases its
    lock."""

    def __init__(
        self,
        pipeline: Pipeline,
        watcher: Watcher,
        planned: dict[str, PlannedNotebook],
        locks: _Locks,
    ) -> None:
        self.pipeline = pipeline
        self.watcher = watcher
        self.planned = planned
        self.locks = locks
        self.results: dict[str, ExecutionResult] = {}

    def started(self, job: ExecutionJob, running: Running) -> None:
        self.watcher.started(job, running)

    def finished(self, result: ExecutionResult) -> None:
        planned = self.planned[result.key]
        if "imported" in result.environment:  # module names -> distributions, in this process
            installed = self.pipeline.environments.installed(planned.kernel)
            environment = with_packages(result.environment, installed)
            result = dataclasses.replace(result, environment=environment)
        old = self.pipeline.resuming.pop(result.key, None)
        if old is not None and result.resumed_from is not None:
            result = resumed(result, old)
        self.results[result.key] = result
        try:
            if result.key not in self.pipeline.for_state:
                self.pipeline.store_result(result, planned.material)
        finally:
            self.locks.release(result.key)
        self.watcher.finished(result)

    def tick(self, at_once: int) -> None:
        self.watcher.tick(at_once)
