"""Per-build state of the extension, created at ``config-inited`` and kept on the app."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any, cast

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.config import Settings
from sphinx_nbcache.model import ExecutionResult
from sphinx_nbcache.notebook.parameters import Injected
from sphinx_nbcache.notebook.read import SourceNotebook
from sphinx_nbcache.pipeline import Pipeline
from sphinx_nbcache.plan import PlannedNotebook

STATE_ATTRIBUTE = "_nbcache_build"


EARLY_ATTRIBUTE = "_nbcache_early"


ENV_ATTRIBUTE = "nbcache_docs"


ENV_VERSION = 2
"""Of the records kept in the env (2: cells numbered as messages number them); Sphinx
reads every page again when it changes, rather than report from records without it."""


ENV_VALUES_ATTRIBUTE = "nbcache_env_values"


MERGED_READER = "sphinx_nbcache.notebook.read.read_merged_notebook"


@dataclasses.dataclass
class BuildState:
    """Per-build state of the main process; forked ``-j`` readers get a copy of it."""

    settings: Settings
    pipeline: Pipeline
    parsed: ParsedStore
    """MyST notebooks as myst-nb's reader made them, kept from earlier builds."""
    jupyter_cache: Path
    """Where myst-nb's cache mode kept jupyter-cache, imported on a first build."""
    executed: dict[str, ExecutionResult] = dataclasses.field(default_factory=dict)
    """Results executed during this build, by key."""
    read_ahead: dict[str, tuple[str, SourceNotebook, PlannedNotebook | None, Injected | None]] = (
        dataclasses.field(default_factory=dict)
    )
    """Source text, notebook, plan and injected parameters of each notebook read before
    reading, by docname, so that parsing the same text neither reads nor plans the notebook
    a second time; each is dropped once its document is parsed."""
    read_docs: set[str] = dataclasses.field(default_factory=set)
    planned: dict[str, PlannedNotebook] = dataclasses.field(default_factory=dict)
    """This build's plan of each notebook page, by docname: a parent's, for the notebooks
    inheriting from it, is made once."""
    planning: list[str] = dataclasses.field(default_factory=list)
    """The pages being planned, each waiting for its parent's plan: a cycle shows here."""
    parents: dict[str, str] = dataclasses.field(default_factory=dict)
    """Docname -> the docname of the notebook it inherits from."""
    lexers_registered: bool = False
    source_suffixes: tuple[str, ...] = ()
    """Every suffix Sphinx reads as a document: artefacts never overwrite a source."""
    _tracked: frozenset[Path] | None = None

    def protected(self, path: Path) -> str | None:
        """Why an artefact must not be written at ``path`` (resolved); None if it may."""
        if path.name == "conf.py":
            return "a Sphinx configuration"
        if path.name.endswith(self.source_suffixes):
            return "a source file of the project"
        if path in self.tracked():
            return "a file kept under version control"
        return None

    def tracked(self) -> frozenset[Path]:
        """Files git keeps in the project's repository, asked once per build and only
        when an artefact is about to be written."""
        if self._tracked is None:
            self._tracked = frozenset(tracked_files(self.settings.project_root))
        return self._tracked


def build_state(app: Sphinx) -> BuildState:
    return cast(BuildState, getattr(app, STATE_ATTRIBUTE))


def doc_records(env: BuildEnvironment) -> dict[str, dict[str, Any]]:
    if not hasattr(env, ENV_ATTRIBUTE):
        setattr(env, ENV_ATTRIBUTE, {})
    return cast(dict[str, dict[str, Any]], getattr(env, ENV_ATTRIBUTE))


def tracked_files(root: Path | None) -> list[Path]:
    """The files of the git repository at ``root``, resolved; none when it is not one."""
    if root is None or not (root / ".git").exists():
        return []
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [(root / os.fsdecode(name)).resolve() for name in listed.split(b"\0") if name]
