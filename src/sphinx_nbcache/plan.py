"""Source notebook -> the job that would execute it: its key, declared inputs, files to
copy in, and whether the cache already holds it. No Sphinx, no kernels."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import nbformat

from sphinx_nbcache.cache.key import env_digests, key_material, notebook_key, prefix_keys
from sphinx_nbcache.config import Settings
from sphinx_nbcache.inputs.discover import file_digest
from sphinx_nbcache.model import ExecutionJob, ExecutionResult
from sphinx_nbcache.notebook.read import SourceNotebook

Warn = Callable[[str, str, str], None]
"""``warn(message, subtype, source)``; the caller decides how to log and where."""


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
    parameters: dict[str, Any] | None = None
    """A notebook instance's parameters, injected into ``notebook`` (see
    :mod:`~sphinx_nbcache.notebook.parameters`)."""
    parent: PlannedNotebook | None = None
    """The notebook whose final kernel state this one starts from (``nbcache.inherit``)."""

    @property
    def kernel(self) -> str:
        return str(self.notebook.notebook.metadata.get("kernelspec", {}).get("name", ""))

    @property
    def material(self) -> dict[str, Any]:
        return key_material(
            self.notebook.notebook,
            self.notebook.options,
            self.declared,
            self.parameters,
            None if self.parent is None else self.parent.key,
        )

    @property
    def ancestors(self) -> list[PlannedNotebook]:
        """The notebooks it inherits from, its parent first."""
        found, parent = [], self.parent
        while parent is not None:
            found.append(parent)
            parent = parent.parent
        return found


def plan(
    source: str,
    notebook: SourceNotebook,
    declared: dict[str, Any] | None = None,
    declared_files: tuple[Path, ...] = (),
    parameters: dict[str, Any] | None = None,
    parent: PlannedNotebook | None = None,
) -> PlannedNotebook:
    declared = declared or {}
    inherits = None if parent is None else parent.key
    key = notebook_key(notebook.notebook, notebook.options, declared, parameters, inherits)
    return PlannedNotebook(source, notebook, key, declared, declared_files, parameters, parent)


def declared_inputs(
    settings: Settings,
    srcdir: Path,
    source: str,
    metadata: dict[str, Any],
    warn: Warn,
    digests: Callable[[Path], str] = file_digest,
) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """The files and environment variables declared for the notebook at ``source``
    (relative to ``srcdir``): ``nbcache_dependencies`` globs whose notebook pattern
    matches, globs in the notebook's own ``nbcache: {dependencies: [...]}`` metadata
    (relative to its folder), and ``nbcache_env_vars`` (salted hashes of their values,
    see :func:`env_digests`). Files by sha256 of their content, under paths relative to
    ``srcdir``, through ``digests`` (the build's one
    :class:`~sphinx_nbcache.inputs.discover.FileDigests`, so a file shared by many is read
    once). A pattern that is absolute or reaches outside the project is left out, with a
    ``warn(message, subtype, source)``."""
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
                files[Path(os.path.relpath(path, srcdir)).as_posix()] = digests(path.resolve())
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
        if settings.project_root is not None and is_python(planned.notebook.notebook)
        else None
    )
    resumable = may_resume(planned, settings)
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
        excluded=(str(settings.cache_path),) if discover_root is not None else (),
        inherit=None if planned.parent is None else planned.parent.key,
        inherit_source="" if planned.parent is None else planned.parent.source,
        prefix_keys=resume_keys(planned, settings),
        checkpoint_after=settings.checkpoint_after if resumable else None,
    )


def full_run(job: ExecutionJob) -> ExecutionJob:
    """``job`` from its first cell, keeping no checkpoints: what a resumed run is checked
    against."""
    return dataclasses.replace(job, prefix_keys=(), checkpoint_after=None, resume=None)


def resume_keys(planned: PlannedNotebook, settings: Settings) -> tuple[str, ...]:
    """The notebook's prefix keys (:func:`prefix_keys`) if it may resume; none if not."""
    if not may_resume(planned, settings):
        return ()
    return tuple(prefix_keys(planned.notebook.notebook, planned.material))


def may_resume(planned: PlannedNotebook, settings: Settings) -> bool:
    """Whether the notebook keeps checkpoints and resumes from them: ``nbcache_resume`` is
    on, its own ``nbcache: {resume: false}`` does not say otherwise, and a local Python
    kernel runs it (checkpoints are states that kernel pickles, kept on this machine)."""
    notebook = planned.notebook.notebook
    own = notebook.metadata.get("nbcache", {})
    return (
        settings.resume
        and settings.executor == "local"
        and is_python(notebook)
        and own.get("resume", True) is not False
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


def is_python(notebook: nbformat.NotebookNode) -> bool:
    """Whether the notebook's kernel may speak Python: discovery and kernel state snapshots
    send it Python. A kernelspec without a language, as MyST front matter often has, is
    taken to be Python: a kernel that is not answers those requests with an error."""
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
