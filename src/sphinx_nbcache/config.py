"""Settings: the ``nbcache_*`` values, validated once and frozen before work fans out."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from sphinx_nbcache.instances import check_config as check_instances

DEFAULT_CACHE_DIR = ".nbcache"
JUPYTER_CACHE_SUBFOLDER = "sphinx-nbcache"
"""Where the cache lives inside ``nb_execution_cache_path``, beside what jupyter-cache keeps
there (``global.db``, ``executed/``), when ``nbcache_path`` is not set."""


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class ConfigValue:
    """One ``nbcache_*`` value, the only place its default is written: what Sphinx registers
    (name, default, rebuild, types, description), how it is checked, how ``-D`` text turns
    into it, and which :class:`Settings` field it fills."""

    name: str
    default: Any
    types: tuple[type, ...]
    check: Callable[[Any], str | None]
    """A message saying what is wrong with a value (the name goes before it); None if right."""
    description: str
    rebuild: Literal["", "env"] = ""
    field: str | None = None
    """The :class:`Settings` field the value fills; None for the few that
    :func:`build_settings` combines with others, or that the extension reads itself."""
    freeze: Callable[[Any], Any] = _same
    """The checked value as the field holds it: lists as tuples, paths as ``Path``."""
    from_text: Callable[[Any], Any] = _same
    """The value as given with ``-D``, which Sphinx leaves a string when the default is None
    and splits at commas, unstripped, when it is a list."""


def _check_path(value: Any) -> str | None:
    if value is None or isinstance(value, str | os.PathLike):
        return None
    return f"must be a path (str or os.PathLike) or None, not {type(value).__name__}"


def _optional_positive(meaning: str) -> Callable[[Any], str | None]:
    """A positive int, or None for ``meaning``."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"must be a positive integer or None ({meaning}), not {value!r}"
        return None

    return check


def _check_dependencies(value: Any) -> str | None:
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, list | tuple) and all(isinstance(g, str) for g in v)
        for k, v in value.items()
    ):
        return None
    return f"must map notebook globs to lists of file globs, not {value!r}"


def _check_size(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be a number of bytes (int, 0 to capture nothing), not {value!r}"
    return None


def _list_of(what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return None
        return f"must be a list of {what}, not {value!r}"

    return check


MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _check_modules(value: Any) -> str | None:
    if isinstance(value, list | tuple) and all(
        isinstance(item, str) and MODULE_NAME.fullmatch(item) for item in value
    ):
        return None
    return f"must be a list of module names such as 'numpy', not {value!r}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(map(repr, choices))}, not {value!r}"

    return check


def _check_address(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return f"must be a scheduler address such as 'tcp://10.0.0.5:8786', or None, not {value!r}"


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env_name(value: Any) -> str | None:
    if isinstance(value, str) and ENV_NAME.fullmatch(value):
        return None
    return f"must be the name of an environment variable such as 'NBCACHE_SECRET', not {value!r}"


def _check_seconds(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be a number of seconds (int, 0 or more), not {value!r}"
    return None


def _check_positive_seconds(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return f"must be a number of seconds greater than 0, not {value!r}"
    return None


def _check_bool(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"must be True or False, not {value!r}"


EXECUTORS = ("local", "dask")
DASK_FILES = ("shared", "ship")


def _int_from_text(value: Any) -> Any:
    """``-D nbcache_workers=4`` gives the string ``'4'``."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _number_from_text(value: Any) -> Any:
    """``-D nbcache_checkpoint_after=2.5`` gives the string ``'2.5'``."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _names_from_text(value: Any) -> Any:
    """``-D nbcache_kernel_preload=numpy, pandas`` gives the pieces between commas."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return [name.strip() for name in value if name.strip()]
    return value


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def _dependency_pairs(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((pattern, tuple(globs)) for pattern, globs in (value or {}).items())


CONFIG_VALUES: tuple[ConfigValue, ...] = (
    ConfigValue(
        "nbcache_path",
        default=None,
        types=(str, os.PathLike, type(None)),
        check=_check_path,
        description="Cache directory; relative paths are taken from the folder of conf.py. "
        f"None means the folder '{JUPYTER_CACHE_SUBFOLDER}' inside nb_execution_cache_path "
        f"when that is set, else '{DEFAULT_CACHE_DIR}' beside conf.py.",
        # Settings.cache_path: resolved with nb_execution_cache_path and the conf.py folder
    ),
    ConfigValue(
        "nbcache_workers",
        default=None,
        types=(int, str, type(None)),  # str: from -D, converted before checks
        check=_optional_positive("adapt to the machine"),
        description="How many notebooks execute at once (one kernel each). None adapts to "
        "the machine: one per CPU, more while CPUs are idle.",
        field="workers",
        from_text=_int_from_text,
    ),
    ConfigValue(
        "nbcache_retry_failed",
        default=False,
        types=(bool,),
        check=_check_bool,
        description="Re-execute notebooks whose cached result is a failure instead of reusing it.",
        field="retry_failed",
        freeze=bool,
    ),
    ConfigValue(
        "nbcache_notebook_timeout",
        default=None,
        types=(int, str, type(None)),
        check=_optional_positive("no limit"),
        description="Seconds all cells of one notebook may take together; None means no limit.",
        field="notebook_timeout",
        from_text=_int_from_text,
    ),
    ConfigValue(
        "nbcache_lock_timeout",
        default=600,
        types=(int,),
        check=_check_seconds,
        description="Seconds a build waits for another build on the same cache that is "
        "executing the same notebook, before executing it itself; 0 means never wait.",
        field="lock_timeout",
    ),
    ConfigValue(
        "nbcache_fork_kernels",
        default=True,
        types=(bool,),
        check=_check_bool,
        description="Fork Python kernels from a server that imported ipykernel once, instead "
        "of starting a new interpreter for every notebook.",
        # Settings.kernel_preload: None when off
    ),
    ConfigValue(
        "nbcache_gc_freeze",
        default=True,
        types=(bool,),
        check=_check_bool,
        description="Move what Sphinx and its extensions loaded before the build, and at exit "
        "everything, out of the garbage collector's reach: shorter collections during the "
        "build, none at exit.",
        # read by the extension when the configuration is read; nothing later needs it
    ),
    ConfigValue(
        "nbcache_kernel_preload",
        default=[],
        types=(list, tuple, str),
        check=_check_modules,
        description="Modules the kernel fork server imports once, so that no notebook imports "
        "them itself.",
        field="kernel_preload",
        freeze=_strings,
        from_text=_names_from_text,
    ),
    ConfigValue(
        "nbcache_dependencies",
        default={},
        types=(dict,),
        check=_check_dependencies,
        description="Files notebooks depend on that discovery cannot see: {notebook glob: "
        "[file globs]}, globs relative to the source folder. Their contents are part of the "
        "cache key.",
        rebuild="env",
        field="dependencies",
        freeze=_dependency_pairs,
    ),
    ConfigValue(
        "nbcache_instances",
        default={},
        types=(dict,),
        check=check_instances,
        description="Notebook instances: {template docname: {instance name: {parameter: "
        "value}}}; each instance is a page <template>/<instance> executing the template "
        "with its parameters injected (papermill's conventions).",
    ),
    ConfigValue(
        "nbcache_env_vars",
        default=[],
        types=(list, tuple),
        check=_list_of("environment variable names"),
        description="Environment variables whose values are part of every notebook's cache key.",
        rebuild="env",
        field="env_vars",
        freeze=_strings,
    ),
    ConfigValue(
        "nbcache_artefact_max_size",
        default=10 * 1024 * 1024,
        types=(int,),
        check=_check_size,
        description="Files up to this many bytes that a notebook writes in its folder are "
        "cached with its outputs and restored on a hit; 0 captures none.",
        field="artefact_max_size",
    ),
    ConfigValue(
        "nbcache_snapshot_max_size",
        default=2 * 1024**3,
        types=(int,),
        check=_check_size,
        description="Bytes of kernel state snapshots (of the notebooks others inherit from, "
        "and checkpoints to resume from) kept on this machine between builds, least recently "
        "used removed first; 0 keeps them for one build only.",
        field="snapshot_max_size",
    ),
    ConfigValue(
        "nbcache_resume",
        default=False,
        types=(bool,),
        check=_check_bool,
        description="Keep the kernel state after slow cells (checkpoints), and execute a "
        "changed notebook from the checkpoint before its first changed cell instead of from "
        "its first cell.",
        field="resume",
    ),
    ConfigValue(
        "nbcache_checkpoint_after",
        default=5,
        types=(int, float),
        check=_check_positive_seconds,
        description="Seconds of cells since the last checkpoint after which the kernel "
        "state is kept (cells tagged 'checkpoint' keep it whatever they took).",
        field="checkpoint_after",
        from_text=_number_from_text,
    ),
    ConfigValue(
        "nbcache_artefact_include",
        default=["*"],
        types=(list, tuple),
        check=_list_of("glob patterns"),
        description="Glob patterns (relative to the notebook's folder) of the files to capture.",
        field="artefact_include",
        freeze=_strings,
    ),
    ConfigValue(
        "nbcache_artefact_exclude",
        default=[],
        types=(list, tuple),
        check=_list_of("glob patterns"),
        description="Glob patterns of files not to capture, even when included.",
        field="artefact_exclude",
        freeze=_strings,
    ),
    ConfigValue(
        "nbcache_executor",
        default="local",
        types=(str,),
        check=_one_of(*EXECUTORS),
        description="Where notebooks execute: 'local' (a pool of kernels on this machine) or "
        "'dask' (the workers of a Dask cluster).",
        field="executor",
    ),
    ConfigValue(
        "nbcache_dask_scheduler",
        default=None,
        types=(str, type(None)),
        check=_check_address,
        description="The Dask scheduler's address; None takes Dask's own setting "
        "(scheduler-address, or DASK_SCHEDULER_ADDRESS).",
        field="dask_scheduler",
    ),
    ConfigValue(
        "nbcache_dask_files",
        default="shared",
        types=(str,),
        check=_one_of(*DASK_FILES),
        description="'shared': workers see the project at the same path; 'ship': each job "
        "sends the notebook's folder and its declared dependencies along.",
        field="dask_files",
    ),
    ConfigValue(
        "nbcache_dask_ship_max_size",
        default=100 * 1024 * 1024,
        types=(int,),
        check=_check_size,
        description="Bytes one job may ship to a Dask worker; a notebook needing more fails "
        "with a warning.",
        field="dask_ship_max_size",
    ),
    ConfigValue(
        "nbcache_secret_env",
        default="NBCACHE_SECRET",
        types=(str,),
        check=_check_env_name,
        description="The environment variable holding the secret that signs cache entries; "
        "when it is set, entries not signed with it are not used.",
        field="secret_env",
    ),
    ConfigValue(
        "nbcache_report",
        default=None,
        types=(str, os.PathLike, type(None)),
        check=_check_path,
        description="Write the execution report as JSON to this path (relative to the output "
        "directory).",
        field="report",
        freeze=_optional_path,
    ),
    ConfigValue(
        "nbcache_junit",
        default=None,
        types=(str, os.PathLike, type(None)),
        check=_check_path,
        description="Write the execution report as JUnit XML to this path (relative to the "
        "output directory), one test case per notebook.",
        field="junit",
        freeze=_optional_path,
    ),
)
BY_NAME: Mapping[str, ConfigValue] = {spec.name: spec for spec in CONFIG_VALUES}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the pipeline needs from the configuration; plain data, safe to pickle. Made by
    :func:`build_settings` only: the defaults are the table's (:data:`CONFIG_VALUES`)."""

    cache_path: Path
    """From ``nbcache_path`` and myst-nb's ``nb_execution_cache_path``, resolved."""
    project_root: Path | None
    """Files a notebook reads under this folder are tracked as its dependencies."""
    srcdir: Path | None
    """Sphinx's source folder; symbolic links to folders in it are followed for the same."""
    workers: int | None
    """None: an adaptive pool."""
    retry_failed: bool
    notebook_timeout: int | None
    lock_timeout: int
    """Seconds to wait for another build executing the same key; 0: never wait."""
    report: Path | None
    """Relative to the output directory unless absolute."""
    junit: Path | None
    dependencies: tuple[tuple[str, tuple[str, ...]], ...]
    """(notebook glob, file globs) pairs from ``nbcache_dependencies``."""
    env_vars: tuple[str, ...]
    artefact_max_size: int
    snapshot_max_size: int
    resume: bool
    checkpoint_after: float
    artefact_include: tuple[str, ...]
    artefact_exclude: tuple[str, ...]
    kernel_preload: tuple[str, ...] | None
    """Modules the kernel fork server imports besides ipykernel; None: kernels start
    normally (``nbcache_fork_kernels = False``)."""
    executor: str
    dask_scheduler: str | None
    dask_files: str
    dask_ship_max_size: int
    secret_env: str
    """The environment variable holding the secret that signs entries (its name, never
    its value: settings travel to Dask and into logs)."""


def configured(values: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` in ``values``, else its default."""
    return values.get(name, BY_NAME[name].default)


def is_valid(values: Mapping[str, Any], name: str) -> bool:
    """Whether :func:`configured` gives a value that passes its own check, for code that
    must read a value before :func:`validate` runs at ``config-inited``."""
    return BY_NAME[name].check(configured(values, name)) is None


def from_command_line(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``-D nbcache_workers=4`` into an int and ``-D nbcache_kernel_preload=numpy, pandas``
    into a list of names, as each value's ``from_text`` says."""
    result = dict(values)
    for spec in CONFIG_VALUES:
        if spec.name in result:
            result[spec.name] = spec.from_text(result[spec.name])
    return result


def validate(values: Mapping[str, Any]) -> list[str]:
    """One message per problem of the ``nbcache_*`` values (a value may have several)."""
    problems = []
    for spec in CONFIG_VALUES:
        message = spec.check(values.get(spec.name, spec.default))
        if message:
            problems += [f"{spec.name} {line}" for line in message.splitlines()]
    if values.get("nbcache_executor") == "dask":
        try:
            importlib.import_module("distributed")
        except ImportError as exc:
            problems.append(
                f"nbcache_executor = 'dask' needs Dask's distributed package ({exc}): "
                "pip install 'sphinx-nbcache[dask]'"
            )
    for module in _missing_modules(values.get("nbcache_kernel_preload")):
        problems.append(
            f"nbcache_kernel_preload names {module!r}, which is not installed for {sys.executable}"
        )
    if values.get("nbcache_kernel_preload") and values.get("nbcache_fork_kernels") is False:
        problems.append(
            "nbcache_kernel_preload needs nbcache_fork_kernels = True: "
            "modules are preloaded in the server kernels are forked from"
        )
    return problems


def _missing_modules(modules: Any) -> list[str]:
    """Modules to preload whose top-level package cannot be found (looked up, not
    imported: importing numpy here would cost the build what preloading saves)."""
    if not isinstance(modules, list | tuple) or _check_modules(modules) is not None:
        return []
    return [name for name in modules if importlib.util.find_spec(name.partition(".")[0]) is None]


def project_root(srcdir: Path) -> Path:
    """The repository holding the docs (the nearest folder with ``.git``), else the source
    folder: notebooks often read data or import the package documented from outside it."""
    srcdir = srcdir.resolve()
    for folder in (srcdir, *srcdir.parents):
        if (folder / ".git").exists():
            return folder
    return srcdir


def cache_path(
    nbcache_path: str | os.PathLike[str] | None, execution_cache_path: Any, confdir: Path
) -> Path:
    """Where the cache is: ``nbcache_path`` (relative to the folder of conf.py), else a
    subfolder of myst-nb's ``nb_execution_cache_path`` when set (relative to the current
    folder, where myst-nb's jupyter-cache opens it), so that CI recipes persisting that
    folder keep the cache, else ``.nbcache`` beside conf.py."""
    if nbcache_path is not None:
        return (confdir / nbcache_path).resolve()
    if isinstance(execution_cache_path, str | os.PathLike) and str(execution_cache_path):
        return (Path.cwd() / execution_cache_path / JUPYTER_CACHE_SUBFOLDER).resolve()
    return (confdir / DEFAULT_CACHE_DIR).resolve()


def build_settings(
    values: Mapping[str, Any],
    confdir: Path,
    srcdir: Path | None = None,
    execution_cache_path: str | os.PathLike[str] = "",
) -> Settings:
    """Freeze validated values, resolving defaults that depend on the machine or project;
    ``execution_cache_path`` is myst-nb's ``nb_execution_cache_path``."""
    fields = {
        spec.field: spec.freeze(configured(values, spec.name))
        for spec in CONFIG_VALUES
        if spec.field is not None
    }
    if not configured(values, "nbcache_fork_kernels"):
        fields["kernel_preload"] = None
    return Settings(
        cache_path=cache_path(values.get("nbcache_path"), execution_cache_path, confdir),
        project_root=project_root(srcdir) if srcdir is not None else None,
        srcdir=srcdir,
        **fields,
    )
