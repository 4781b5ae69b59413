"""read -> key -> lookup -> execute misses -> store: the one place that sees every stage.

No Sphinx here: the extension and the command line share this pipeline and one cache.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from importlib import metadata
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import nbformat

from sphinx_nbcache import _environment, discover
from sphinx_nbcache.config import Settings
from sphinx_nbcache.discover import file_digest
from sphinx_nbcache.execute import (
    NOTEBOOK_TIMEOUT,
    CellClock,
    ExecutionJob,
    ExecutionResult,
    Executor,
    LocalExecutor,
    Pool,
    Watcher,
    cell_timeout,
    make_pool,
)
from sphinx_nbcache.key import env_digests, key_material, notebook_key
from sphinx_nbcache.preload import Preloader
from sphinx_nbcache.read import SourceNotebook
from sphinx_nbcache.store import (
    DamagedEntryError,
    Store,
    StoreWriteError,
    UnsignedEntryError,
    read_json_file,
    write_json_file,
)

THIS_PYTHON = frozenset(
    {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
)
"""Kernelspec interpreters jupyter_client replaces with its own ``sys.executable``."""

Warn = Callable[[str, str, str], None]
"""``warn(message, subtype, source)``; the caller decides how to log and where."""
Explain = Callable[[str, str], None]
"""``explain(message, source)``: why a stored result is not used."""


@dataclasses.dataclass(frozen=True)
class PlannedNotebook:
    """A notebook that goes through the cache, identified by its project-relative path."""

    source: str
    notebook: SourceNotebook
    key: str
    declared: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the project declares it depends on, as it is now (part of the key)."""
    declared_files: tuple[Path, ...] = ()
    """The declared files themselves, to copy into a temporary working folder."""

    @property
    def kernel(self) -> str:
        return str(self.notebook.notebook.metadata.get("kernelspec", {}).get("name", ""))

    @property
    def material(self) -> dict[str, Any]:
        return key_material(self.notebook.notebook, self.notebook.options, self.declared)


def plan(
    source: str,
    notebook: SourceNotebook,
    declared: dict[str, Any] | None = None,
    declared_files: tuple[Path, ...] = (),
) -> PlannedNotebook:
    declared = declared or {}
    key = notebook_key(notebook.notebook, notebook.options, declared)
    return PlannedNotebook(source, notebook, key, declared, declared_files)


def declared_inputs(
    settings: Settings,
    srcdir: Path,
    source: str,
    metadata: dict[str, Any],
    warn: Warn,
    digests: dict[str, str | None] | None = None,
) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """The files and environment variables declared for the notebook at ``source``
    (relative to ``srcdir``): ``nbcache_dependencies`` globs whose notebook pattern
    matches, globs in the notebook's own ``nbcache: {dependencies: [...]}`` metadata
    (relative to its folder), and ``nbcache_env_vars`` (salted hashes of their values,
    see :func:`env_digests`). Files by sha256 of their content,
    under paths relative to ``srcdir``; ``digests`` remembers them across notebooks, so
    that a file shared by many is read once per build. A pattern that is absolute or
    reaches outside the project is left out, with a ``warn(message, subtype, source)``."""
    digests = {} if digests is None else digests
    patterns = [
        (srcdir, glob, "config")
        for notebooks, globs in settings.dependencies
        if fnmatch.fnmatchcase(source, notebooks)
        for glob in globs
    ]
    own = metadata.get("nbcache", {})
    own_globs = own.get("dependencies", []) if isinstance(own, dict) else []
    folder = (srcdir / source).parent
    patterns += [(folder, glob, "read") for glob in own_globs if isinstance(glob, str)]
    files, paths = {}, []
    for base, glob, declared_in in patterns:
        unusable = _unusable_pattern(settings.project_root or srcdir, base, glob)
        if unusable is not None:
            where = "nbcache_dependencies" if declared_in == "config" else "its metadata"
            message = f"dependency pattern {glob!r} in {where} is ignored: {unusable}"
            warn(message, declared_in, source)
            continue
        for path in sorted(base.glob(glob)):
            if path.is_file():
                absolute = str(path.resolve())
                if digests.get(absolute) is None:
                    digests[absolute] = file_digest(path)
                files[Path(os.path.relpath(path, srcdir)).as_posix()] = digests[absolute]
                paths.append(path)
    declared: dict[str, Any] = {}
    if files:
        declared["files"] = dict(sorted(files.items()))
    if settings.env_vars:
        declared["env"] = env_digests(settings.env_vars)
    return declared, tuple(paths)


def _unusable_pattern(root: Path, base: Path, glob: str) -> str | None:
    """Why ``glob`` (relative to ``base``) cannot be used; None if it can. ``Path.glob``
    raises on absolute and empty patterns, and files outside the project's repository
    (``root``; a docs folder's ``../scripts`` is inside it) are not the project's to
    declare: where they are depends on the machine. The test is on the path as the project
    writes it as well as resolved: a notebook in a folder the source tree links to
    (``site/content -> ../content``) declares files through the link."""
    if not glob or "\0" in glob:
        return "it is empty or not a file name"
    if PurePath(glob).anchor or PureWindowsPath(glob).anchor:
        return "it is an absolute path; patterns are relative to the notebook's folder"
    written, resolved = base.absolute() / glob, base.resolve() / glob
    inside = [Path(os.path.normpath(p)).is_relative_to(root.resolve()) for p in (written, resolved)]
    if not any(inside):
        return "it reaches outside the project"
    return None


def make_job(
    planned: PlannedNotebook, settings: Settings, links: dict[str, str] | None = None
) -> ExecutionJob:
    """``links``: the source tree's linked folders (:func:`discover.linked_folders`)."""
    options = planned.notebook.options
    discover_root = (
        str(settings.project_root)
        if settings.project_root is not None and _is_python(planned.notebook.notebook)
        else None
    )
    return ExecutionJob(
        key=planned.key,
        source=planned.source,
        notebook_json=nbformat.writes(planned.notebook.notebook),
        cwd=None if options.in_temp else str(Path(planned.notebook.path).parent),
        timeout=options.timeout,
        allow_errors=options.allow_errors,
        notebook_timeout=settings.notebook_timeout,
        cell_metadata_key=options.cell_metadata_key,
        artefact_max_size=settings.artefact_max_size,
        artefact_include=settings.artefact_include,
        artefact_exclude=settings.artefact_exclude,
        copy_in=_copy_in(planned) if options.in_temp else {},
        inputs=tuple(str(path) for path in planned.declared_files),
        discover_root=discover_root,
        links=dict(links or {}) if discover_root is not None else {},
    )


def _copy_in(planned: PlannedNotebook) -> dict[str, str]:
    """Declared files in the notebook's folder, by path relative to it: a temporary working
    folder gets them, so the notebook finds them where it would without it."""
    folder = Path(planned.notebook.path).parent.resolve()
    found = {}
    for path in planned.declared_files:
        try:
            found[path.resolve().relative_to(folder).as_posix()] = str(path)
        except ValueError:
            continue
    return found


@functools.cache
def kernel_interpreter(kernel: str) -> str | None:
    """The interpreter ``kernel`` runs in; None when it is this process's own (ipykernel's
    kernelspec, or "python" which jupyter_client maps to it) or cannot be told."""
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        argv = KernelSpecManager().get_kernel_spec(kernel or "python3").argv
    except Exception:
        return None
    python = argv[0] if argv else ""
    if not python or python in THIS_PYTHON:
        return None
    if Path(python).resolve() == Path(sys.executable).resolve():
        return None
    return python


@functools.cache
def installed_version(distribution: str) -> str | None:
    """A distribution's version in this interpreter, asked once per build per name."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


KEPT_AT_MOST = 64 * 2**20
"""Bytes of JSON of the results a build keeps between planning and parsing their pages;
beyond that (notebooks with many images, say), a page's result is read again."""

ENVIRONMENTS_FILE = "environments.json"
"""Beside the cache entries: the last :mod:`_environment` report per interpreter."""

ENVIRONMENT_SCRIPT = Path(_environment.__file__)


def kernel_environment(kernel: str, cache_path: Path) -> dict[str, Any]:
    """Python version and installed distributions where ``kernel`` runs: read in this
    process when the kernel uses this interpreter, else by running the kernel's
    interpreter once; reused from the last build while the environment's fingerprint is
    unchanged; empty when it cannot be told. Packages are keyed by normalised name (see
    :func:`discover.normal`), so that each lookup is a dictionary access."""
    python = kernel_interpreter(kernel)
    remembered_file = cache_path / ENVIRONMENTS_FILE
    remembered = read_json_file(remembered_file)
    known = remembered.get(python or sys.executable)
    fingerprint = known.get("fingerprint", "") if isinstance(known, dict) else ""
    found = _environment.report(fingerprint) if python is None else _report_of(python, fingerprint)
    if found is None:
        return {}
    if set(found) == {"fingerprint"} and isinstance(known, dict):
        return _by_normal_name(known)
    remembered[python or sys.executable] = found
    write_json_file(remembered_file, remembered)
    return _by_normal_name(found)


def _report_of(interpreter: str, known: str) -> dict[str, Any] | None:
    """:func:`_environment.report` as another interpreter gives it; None if it cannot."""
    try:
        done = subprocess.run(
            [interpreter, str(ENVIRONMENT_SCRIPT), known],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _by_normal_name(environment: dict[str, Any]) -> dict[str, Any]:
    packages = environment.get("packages", {})
    return {**environment, "packages": {discover.normal(n): v for n, v in packages.items()}}


def _is_python(notebook: nbformat.NotebookNode) -> bool:
    """Discovery talks Python to the kernel: kernels of another language are left alone (a
    kernelspec without a language, as MyST front matter often has, is tried: a kernel that
    is not Python answers the hidden request with an error and records nothing)."""
    kernelspec = notebook.metadata.get("kernelspec", {})
    language = kernelspec.get("language") or notebook.metadata.get("language_info", {}).get("name")
    return not language or str(language).lower() == "python"


@dataclasses.dataclass(frozen=True)
class CacheCheck:
    """What the store holds for a planned notebook, and why a build would not reuse it."""

    entry: ExecutionResult | None
    """The stored result, if there is one that could be read."""
    changed: str | None = None
    """What changed since ``entry`` was executed (a file it read, a package it imported)."""
    again: str | None = None
    """Why ``entry``, current, executes again all the same (``force`` mode, a failure to
    retry, a raised time limit)."""
    damaged: bool = False

    @property
    def reusable(self) -> ExecutionResult | None:
        return None if self.changed or self.again else self.entry


class Pipeline:
    """Looks notebooks up in the store and executes the misses, storing each as it ends."""

    def __init__(
        self, settings: Settings, store: Store, warn: Warn, explain: Explain | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.warn = warn
        self.explain = explain or (lambda message, source: None)
        self._digests: dict[str, str | None] = {}
        """sha256 of each dependency, read once per build."""
        self.declared_digests: dict[str, str | None] = {}
        """sha256 of each declared file by absolute path, read once per build."""
        self._environments: dict[str, Future[dict[str, Any]]] = {}
        """What is installed for each kernel, looked at once per build, in a thread."""
        self._fingerprints: dict[str | None, str | None] = {}
        """Each interpreter's :func:`_environment.fingerprint` now, by interpreter."""
        self._kept: dict[str, tuple[ExecutionResult, int]] = {}
        """Hits looked up while planning, with their size, until the page is parsed."""
        self._kept_bytes = 0
        self._said: set[str] = set()
        """Problems of the whole cache already warned about in this build (each once)."""
        self.early: Preloader | None = None
        """Fork servers started ahead (see :mod:`sphinx_nbcache.early`), for the next run of
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
                self.warn(message, "cache", planned.source)
                return CacheCheck(None, damaged=True)
            if loaded is None:
                return CacheCheck(None)
            result = loaded
        changed = self.changed_dependency(result) or self.changed_environment(result, planned)
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
            if path not in self._digests:
                try:
                    self._digests[path] = file_digest(root / path)
                except OSError:
                    self._digests[path] = None
            now = self._digests[path]
            if now is None:
                return f"{path} is gone"
            if now != digest:
                return f"{path} changed"
        return None

    def changed_environment(self, result: ExecutionResult, planned: PlannedNotebook) -> str | None:
        """A package the notebook imported, or Python itself, at another version now in
        the environment its kernel runs in; None if nothing changed or it cannot be told."""
        if not result.environment:
            return None
        if kernel_interpreter(planned.kernel) is None:
            return discover.changed_environment(
                result.environment, platform.python_version(), installed_version
            )
        installed = self.installed(planned.kernel)
        if not installed:
            return None
        versions = installed["packages"]
        return discover.changed_environment(
            result.environment,
            installed["python"],
            lambda name: versions.get(discover.normal(name)),
        )

    def environment_mark(self, kernel: str) -> tuple[str | None, str | None]:
        """The interpreter ``kernel`` runs in and the fingerprint of what is installed
        there. A page keeps it, so that a later build can tell, without listing any
        package, that the environment changed and the page must be looked up again."""
        interpreter = kernel_interpreter(kernel)
        if interpreter is None:
            return None, self.fingerprint(None)
        return interpreter, self.installed(kernel).get("fingerprint")

    def fingerprint(self, interpreter: str | None, known: str = "") -> str | None:
        """The fingerprint of what is installed for ``interpreter`` (None: this one), once
        per build; a foreign interpreter is run, and lists its packages only when its
        fingerprint is not ``known``. None when it cannot be told."""
        if interpreter not in self._fingerprints:
            if interpreter is None:
                found: str | None = _environment.fingerprint()
            else:
                report = _report_of(interpreter, known)
                found = None if report is None else report.get("fingerprint")
            self._fingerprints[interpreter] = found
        return self._fingerprints[interpreter]

    def installed(self, kernel: str) -> dict[str, Any]:
        """What is installed where ``kernel`` runs, looked at once per build."""
        self.look_ahead([kernel])
        return self._environments[kernel].result()

    def look_ahead(self, kernels: Iterable[str]) -> None:
        """Start looking at what is installed where these kernels run, one after another
        in a thread. On a first build that reads every package's metadata, half a second
        that the first notebook to finish would otherwise wait for, and with it every
        kernel the event loop drives; started before the kernels, it runs while they do."""
        new = [kernel for kernel in dict.fromkeys(kernels) if kernel not in self._environments]
        futures: dict[str, Future[dict[str, Any]]] = {kernel: Future() for kernel in new}
        if not futures:
            return
        self._environments.update(futures)

        def look() -> None:
            for kernel, future in futures.items():
                try:
                    future.set_result(kernel_environment(kernel, self.settings.cache_path))
                except BaseException as exc:
                    future.set_exception(exc)

        threading.Thread(target=look, name="nbcache-environment", daemon=True).start()

    def _more_time_now(self, planned: PlannedNotebook, result: ExecutionResult) -> bool:
        """A timed-out result is stale once its limit is raised: time limits are not in
        the key, so raising one re-executes only the notebooks that ran out of time."""
        error = result.error
        if error is None or error.kind != "timeout" or error.timeout is None:
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
        watcher: Watcher,
        executor: Executor | None = None,
    ) -> dict[str, ExecutionResult]:
        """Execute each distinct key once, concurrently; results by key.

        Every result is stored the moment its notebook finishes, before ``watcher`` hears of
        it, so an interrupted run keeps what finished. Returns only after every kernel has
        shut down.
        """
        planned = {p.key: p for p in notebooks}
        settings = self.settings
        links = (
            discover.linked_folders(settings.srcdir, settings.project_root)
            if settings.srcdir is not None and settings.project_root is not None and planned
            else {}
        )
        jobs = {key: make_job(p, settings, links) for key, p in planned.items()}
        discovering = [planned[key].kernel for key, job in jobs.items() if job.discover_root]
        self.look_ahead(discovering)
        storing = _Storing(self, watcher, planned)
        try:
            (executor or self.executor()).run(list(jobs.values()), storing)
        finally:
            for kernel in discovering:  # no thread may outlive the run: Sphinx forks next
                self._environments[kernel].exception()
        return storing.results

    def executor(self) -> Executor:
        """The executor ``nbcache_executor`` names. :raises ExecutorError: when it cannot
        run anything (a Dask scheduler out of reach)."""
        if self.settings.executor == "dask":
            from sphinx_nbcache.dask_executor import DaskExecutor

            return DaskExecutor(self.settings)
        early, self.early = self.early, None
        return LocalExecutor(
            make_pool(self.settings.workers),
            self.settings.kernel_preload,
            lambda message: self.warn(message, "preload", ""),
            preloader=early,
        )

    def discard_early(self) -> None:
        if self.early is not None:
            self.early.close()
            self.early = None

    def store_result(self, result: ExecutionResult, material: dict[str, Any] | None = None) -> None:
        if result.error is not None and result.error.cell_index is None:
            return  # no cell ran (missing kernel, start-up failure): not the notebook's fault
        if result.error is not None and result.error.kind == "internal":
            return  # an error of ours: the next build executes the notebook again
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
        """A problem of the cache as a whole: one warning per build, at its first page."""
        if problem not in self._said:
            self._said.add(problem)
            self.warn(message, subtype, source)


class _Storing:
    """Stores each result before the caller's watcher hears of it."""

    def __init__(
        self, pipeline: Pipeline, watcher: Watcher, planned: dict[str, PlannedNotebook]
    ) -> None:
        self.pipeline = pipeline
        self.watcher = watcher
        self.planned = planned
        self.results: dict[str, ExecutionResult] = {}

    def started(self, job: ExecutionJob, clock: CellClock) -> None:
        self.watcher.started(job, clock)

    def finished(self, result: ExecutionResult) -> None:
        planned = self.planned[result.key]
        if "imported" in result.environment:  # module names -> distributions, in this process
            installed = self.pipeline.installed(planned.kernel)
            environment = discover.with_packages(result.environment, installed)
            result = dataclasses.replace(result, environment=environment)
        self.results[result.key] = result
        self.pipeline.store_result(result, planned.material)
        self.watcher.finished(result)

    def tick(self, pool: Pool) -> None:
        self.watcher.tick(pool)
