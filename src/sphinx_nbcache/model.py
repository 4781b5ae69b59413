"""The data every layer shares: a job to execute, its result, the failure kinds and the
execution modes. Plain frozen data, JSON-able, standard library only, so that an executor on
another machine runs jobs unchanged and importing it costs nothing."""

from __future__ import annotations

import dataclasses
import enum
import json
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

NOTEBOOK_METADATA_FROM_EXECUTION = ("language_info", "widgets")
"""Notebook metadata that executing writes, kept with the outputs."""


@dataclasses.dataclass(frozen=True)
class ExecutionJob:
    """One notebook to execute: its key, where it runs and with which settings."""

    key: str
    source: str
    """Project-relative path, for messages and listings; never part of the key."""
    notebook_json: str
    cwd: str | None
    """Working directory of the kernel; None means a fresh temporary folder."""
    timeout: int | None
    """Seconds per cell, unless the cell's own metadata sets another limit."""
    allow_errors: bool
    notebook_timeout: int | None = None
    """Seconds for all cells together (``nbcache_notebook_timeout``)."""
    cell_metadata_key: str = "mystnb"
    discover_root: str | None = None
    """Record the files under this folder that the notebook reads (Python kernels)."""
    links: dict[str, str] = dataclasses.field(default_factory=dict)
    """Folders outside ``discover_root`` that the source tree reaches through symbolic
    links: real path -> the path the project uses (see :func:`discover.linked_folders`)."""
    excluded: tuple[str, ...] = ()
    """Folders whose files are never dependencies: the cache's."""
    artefact_max_size: int = 0
    """Bytes; files the notebook writes in its folder up to this size come back from the
    cache (0: none)."""
    artefact_include: tuple[str, ...] = ("*",)
    artefact_exclude: tuple[str, ...] = ()
    copy_in: dict[str, str] = dataclasses.field(default_factory=dict)
    """Files to copy into a temporary working folder first: relative path -> source."""
    inputs: tuple[str, ...] = ()
    """Files declared as the notebook's dependencies (absolute paths), wherever they are:
    what an executor on another machine must send along."""
    inherit: str | None = None
    """The key of the notebook whose final kernel state this one starts from."""
    inherit_source: str = ""
    """That notebook's project-relative path, for messages."""
    snapshot: bool = False
    """Keep this notebook's final kernel state for the notebooks that inherit from it."""
    prefix_keys: tuple[str, ...] = ()
    """Per code cell, the key of the cells up to it (:func:`~.cache.key.prefix_keys`):
    what a checkpoint after that cell is kept under."""
    checkpoint_after: float | None = None
    """Keep the kernel state after a cell once cells took this many seconds since the last
    checkpoint, and after cells tagged ``checkpoint``; None: never."""
    resume: Resume | None = None
    """Start from a checkpoint instead of the first cell."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionJob:
        tuples = ("artefact_include", "artefact_exclude", "inputs", "excluded", "prefix_keys")
        fields: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        if fields.get("resume") is not None:
            fields["resume"] = Resume(**fields["resume"])
        return cls(**fields)


CHECKPOINT_TAG = "checkpoint"
"""A cell tag: keep the kernel state after this cell, however long it took."""


@dataclasses.dataclass(frozen=True)
class Resume:
    """Where a notebook resumes: after code cell ``cell`` (counted among code cells from
    0), from the kernel state kept there, with the earlier cells' outputs from an entry
    that ran the same code up to there."""

    cell: int
    executed: int
    """Code cells the kernel had executed by then: execution counts go on from it."""
    outputs: list[list[dict[str, Any]]]
    execution_counts: list[int | None]
    cell_times: list[float | None]


CELL_TIMEOUT = "CellTimeoutError"


NOTEBOOK_TIMEOUT = "NotebookTimeoutError"


KERNEL_ERRORS = frozenset({"DeadKernelError", "NoSuchKernel"})


INHERITANCE_ERROR = "InheritanceError"
"""The name of the error of a notebook not executed because of the one it inherits from."""


def cell_timeout(cell: Mapping[str, Any], default: int | None, key: str) -> int | None:
    """A cell's limit: ``execution_timeout`` in its myst-nb metadata (``mystnb`` unless
    ``nb_cell_metadata_key`` says otherwise), else the notebook's. Not ``execution``, which
    nbformat reserves for timestamps. None for no limit, which myst-nb spells -1 or 0: passed
    on as such, nbclient would take them for no limit, ``nbcache_notebook_timeout`` too."""
    settings = cell.get("metadata", {}).get(key)
    value = settings.get("execution_timeout") if isinstance(settings, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    return default if default is not None and default > 0 else None


class Status(enum.StrEnum):
    """A notebook's outcome, in one word everywhere: per-document records, the JSON and
    JUnit reports, the report table and the log."""

    succeeded = "succeeded"
    cell_error = "cell-error"
    timeout = "timeout"
    kernel_error = "kernel-error"
    read_error = "read-error"
    not_executed = "not-executed"
    """The notebook inherits from one that failed, or whose state could not be restored."""
    extension_error = "extension-error"
    """sphinx-nbcache itself failed while the notebook ran (a bug to report); never stored."""

    # hashed as the word itself, as it compares: a status read back from a report or an
    # older environment (a plain string) finds the same entries in sets and dictionaries
    __hash__ = str.__hash__


STATUS_LABELS = {
    Status.succeeded: "succeeded",
    Status.cell_error: "cell error",
    Status.timeout: "timed out",
    Status.kernel_error: "kernel lost",
    Status.read_error: "unreadable",
    Status.not_executed: "not executed",
    Status.extension_error: "sphinx-nbcache error",
}
"""How the report table says each status."""

FAILURE_TEXT = {
    Status.cell_error: "Executing notebook failed",
    Status.timeout: "Executing notebook failed (timed out)",
    Status.kernel_error: "Executing notebook failed (lost its kernel)",
    Status.not_executed: "Notebook not executed",
}
"""myst-nb's words for a failed execution, which CI scripts look for in the log."""


@dataclasses.dataclass(frozen=True)
class CellError:
    """Where and how a notebook failed."""

    name: str
    value: str
    traceback: str
    cell_index: int | None
    """Index among all cells of the notebook, None when no cell was running."""
    timeout: int | None = None
    """For a timeout, the limit in seconds that was exceeded."""
    internal: bool = False
    """Raised by sphinx-nbcache itself (or a library it drives), not by the notebook or its
    kernel: reported as such, and never stored as the notebook's outcome."""

    @property
    def status(self) -> Status:
        """``timeout``, ``kernel-error`` (died, missing, never started), ``cell-error``, or
        ``not-executed`` (see :data:`INHERITANCE_ERROR`) or ``extension-error`` (an error
        of sphinx-nbcache's own)."""
        if self.internal:
            return Status.extension_error
        if self.name in (CELL_TIMEOUT, NOTEBOOK_TIMEOUT):
            return Status.timeout
        if self.name == INHERITANCE_ERROR:
            return Status.not_executed
        if self.name in KERNEL_ERRORS or self.cell_index is None:
            return Status.kernel_error
        return Status.cell_error


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """What executing one notebook produced, per code cell in order."""

    key: str
    source: str
    succeeded: bool
    error: CellError | None
    outputs: list[list[dict[str, Any]]]
    execution_counts: list[int | None]
    metadata: dict[str, Any]
    runtime: float
    cell_times: list[float | None]
    finished: str
    """ISO 8601 UTC time the execution finished."""
    dependencies: dict[str, str] = dataclasses.field(default_factory=dict)
    """Project-relative path -> sha256 of each local module and file the notebook read."""
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The kernel's Python version and the versions of the packages the notebook imported."""
    artefacts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Files the notebook wrote in its folder, by path relative to it: sha256 and base64."""
    worker: str = ""
    """The Dask worker that executed the notebook; empty for this machine's pool."""
    left_out: list[str] = dataclasses.field(default_factory=list)
    """Names of the final kernel state that could not be kept for the notebooks inheriting
    from this one (they cannot be pickled)."""
    snapshot_error: str = ""
    """Why no final kernel state could be kept for the notebooks inheriting from this one."""
    prefix_keys: list[str] = dataclasses.field(default_factory=list)
    """Per code cell, the key of the cells up to it: how far a changed notebook ran the
    same code as this one."""
    checkpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Kernel states kept after cells: ``cell`` (code cell, from 0), ``executed`` (code
    cells the kernel had run), and what keeping it cost, ``seconds`` and ``bytes``."""
    resumed_from: int | None = None
    """The code cell (from 0) after which this run started from a checkpoint; None: from
    the first cell."""
    checkpoint_error: str = ""
    """Why no more checkpoints were kept (a name that cannot be pickled, say)."""
    resume_error: str = ""
    """Why a planned resume did not happen (the notebook then ran from its first cell)."""

    @property
    def checkpoint_keys(self) -> set[str]:
        """The keys its checkpoints are kept under (their cells' prefix keys)."""
        keys = self.prefix_keys
        return {keys[c["cell"]] for c in self.checkpoints if c["cell"] < len(keys)}

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.error is not None and not self.error.internal:
            del data["error"]["internal"]  # stored entries keep the format they always had
        for name in OPTIONAL_RESULT_FIELDS:
            if not data[name] and data[name] != 0:
                del data[name]  # inheritance and resume fields, when they do not apply
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionResult:
        """Rebuild from :meth:`to_json`; raises ``KeyError``/``TypeError`` on bad data.

        Fields added since an entry was written take their defaults."""
        error = data["error"]
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if not required <= set(data) <= fields:
            raise KeyError(f"fields {sorted((required - set(data)) | (set(data) - fields))}")
        result = cls(**{**data, "error": CellError(**error) if error is not None else None})
        if not (len(result.outputs) == len(result.execution_counts) == len(result.cell_times)):
            raise TypeError("per-cell lists differ in length")
        return result


OPTIONAL_RESULT_FIELDS = (
    "left_out",
    "snapshot_error",
    "prefix_keys",
    "checkpoints",
    "resumed_from",
    "checkpoint_error",
    "resume_error",
)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def unrun_result(job: ExecutionJob, name: str, message: str, worker: str = "") -> ExecutionResult:
    """The result of a notebook no kernel ran to the end, for a reason outside the notebook
    (nothing to run it on, its worker lost): no outputs, not worth storing."""
    notebook = json.loads(job.notebook_json)
    cells = sum(1 for cell in notebook.get("cells", []) if cell.get("cell_type") == "code")
    return ExecutionResult(
        key=job.key,
        source=job.source,
        succeeded=False,
        error=CellError(name, message, f"{name}: {message}", None),
        outputs=[[] for _ in range(cells)],
        execution_counts=[None] * cells,
        metadata={},
        runtime=0.0,
        cell_times=[None] * cells,
        finished=now_utc(),
        worker=worker,
    )


def internal_failure(job: ExecutionJob, exc: Exception) -> ExecutionResult:
    """The result of a notebook that an error of sphinx-nbcache's own stopped: no outputs,
    the Python traceback to report, and never stored (the next build executes it again)."""
    name = type(exc).__name__
    error = CellError(name, str(exc), "".join(traceback.format_exception(exc)), None, internal=True)
    return dataclasses.replace(unrun_result(job, name, str(exc)), error=error)


EXECUTING_MODES = ("auto", "cache", "force")
"""``nb_execution_mode`` values that go through the cache; ``off`` and ``inline`` do not."""


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """The execution settings in force for one notebook, after its metadata overrides."""

    mode: str
    timeout: int | None
    allow_errors: bool
    raise_on_error: bool
    show_tb: bool
    in_temp: bool
    cell_metadata_key: str = "mystnb"
    """Where cells keep myst-nb settings (``nb_cell_metadata_key``), their time limit too."""
