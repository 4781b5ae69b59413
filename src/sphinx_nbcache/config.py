"""Settings: the ``nbcache_*`` values, validated once and frozen before work fans out."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

DEFAULT_CACHE_DIR = ".nbcache"
JUPYTER_CACHE_SUBFOLDER = "sphinx-nbcache"
"""Where the cache lives inside ``nb_execution_cache_path``, beside what jupyter-cache keeps
there (``global.db``, ``executed/``), when ``nbcache_path`` is not set."""
DEFAULT_ARTEFACT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_SHIP_MAX_SIZE = 100 * 1024 * 1024
DEFAULT_LOCK_TIMEOUT = 600


@dataclasses.dataclass(frozen=True)
class ConfigValue:
    """One ``nbcache_*`` value as registered with Sphinx and described in the docs."""

    name: str
    default: Any
    rebuild: Literal["", "env"]
    types: tuple[type, ...]
    description: str
    check: Callable[[Any], str | None]


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


def _check_bool(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"must be True or False, not {value!r}"


CONFIG_VALUES: tuple[ConfigValue, ...] = (
    ConfigValue(
        "nbcache_path",
        None,
        "",
        (str, os.PathLike, type(None)),
        "Cache directory; relative paths are taken from the folder of conf.py. "
        f"None means the folder '{JUPYTER_CACHE_SUBFOLDER}' inside nb_execution_cache_path "
        f"when that is set, else '{DEFAULT_CACHE_DIR}' beside conf.py.",
        _check_path,
    ),
    ConfigValue(
        "nbcache_workers",
        None,
        "",
        (int, str, type(None)),  # str: from -D, converted before checks
        "How many notebooks execute at once (one kernel each). None adapts to the machine: "
        "one per CPU, more while CPUs are idle.",
        _optional_positive("adapt to the machine"),
    ),
    ConfigValue(
        "nbcache_retry_failed",
        False,
        "",
        (bool,),
        "Re-execute notebooks whose cached result is a failure instead of reusing it.",
        _check_bool,
    ),
    ConfigValue(
        "nbcache_notebook_timeout",
        None,
        "",
        (int, str, type(None)),
        "Seconds all cells of one notebook may take together; None means no limit.",
        _optional_positive("no limit"),
    ),
    ConfigValue(
        "nbcache_lock_timeout",
        DEFAULT_LOCK_TIMEOUT,
        "",
        (int,),
        "Seconds a build waits for another build on the same cache that is executing the "
        "same notebook, before executing it itself; 0 means never wait.",
        _check_seconds,
    ),
    ConfigValue(
        "nbcache_fork_kernels",
        True,
        "",
        (bool,),
        "Fork Python kernels from a server that imported ipykernel once, instead of "
        "starting a new interpreter for every notebook.",
        _check_bool,
    ),
    ConfigValue(
        "nbcache_gc_freeze",
        True,
        "",
        (bool,),
        "Move what Sphinx and its extensions loaded before the build, and at exit everything, "
        "out of the garbage collector's reach: shorter collections during the build, none at "
        "exit.",
        _check_bool,
    ),
    ConfigValue(
        "nbcache_kernel_preload",
        [],
        "",
        (list, tuple, str),
        "Modules the kernel fork server imports once, so that no notebook imports them itself.",
        _check_modules,
    ),
    ConfigValue(
        "nbcache_dependencies",
        {},
        "env",
        (dict,),
        "Files notebooks depend on that discovery cannot see: {notebook glob: [file globs]}, "
        "globs relative to the source folder. Their contents are part of the cache key.",
        _check_dependencies,
    ),
    ConfigValue(
        "nbcache_env_vars",
        [],
        "env",
        (list, tuple),
        "Environment variables whose values are part of every notebook's cache key.",
        _list_of("environment variable names"),
    ),
    ConfigValue(
        "nbcache_artefact_max_size",
        DEFAULT_ARTEFACT_MAX_SIZE,
        "",
        (int,),
        "Files up to this many bytes that a notebook writes in its folder are cached with "
        "its outputs and restored on a hit; 0 captures none.",
        _check_size,
    ),
    ConfigValue(
        "nbcache_artefact_include",
        ["*"],
        "",
        (list, tuple),
        "Glob patterns (relative to the notebook's folder) of the files to capture.",
        _list_of("glob patterns"),
    ),
    ConfigValue(
        "nbcache_artefact_exclude",
        [],
        "",
        (list, tuple),
        "Glob patterns of files not to capture, even when included.",
        _list_of("glob patterns"),
    ),
    ConfigValue(
        "nbcache_executor",
        "local",
        "",
        (str,),
        "Where notebooks execute: 'local' (a pool of kernels on this machine) or 'dask' "
        "(the workers of a Dask cluster).",
        _one_of("local", "dask"),
    ),
    ConfigValue(
        "nbcache_dask_scheduler",
        None,
        "",
        (str, type(None)),
        "The Dask scheduler's address; None takes Dask's own setting (scheduler-address, "
        "or DASK_SCHEDULER_ADDRESS).",
        _check_address,
    ),
    ConfigValue(
        "nbcache_dask_files",
        "shared",
        "",
        (str,),
        "'shared': workers see the project at the same path; 'ship': each job sends the "
        "notebook's folder and its declared dependencies along.",
        _one_of("shared", "ship"),
    ),
    ConfigValue(
        "nbcache_dask_ship_max_size",
        DEFAULT_SHIP_MAX_SIZE,
        "",
        (int,),
        "Bytes one job may ship to a Dask worker; a notebook needing more fails with a warning.",
        _check_size,
    ),
    ConfigValue(
        "nbcache_secret_env",
        "NBCACHE_SECRET",
        "",
        (str,),
        "The environment variable holding the secret that signs cache entries; when it is "
        "set, entries not signed with it are not used.",
        _check_env_name,
    ),
    ConfigValue(
        "nbcache_report",
        None,
        "",
        (str, os.PathLike, type(None)),
        "Write the execution report as JSON to this path (relative to the output directory).",
        _check_path,
    ),
    ConfigValue(
        "nbcache_junit",
        None,
        "",
        (str, os.PathLike, type(None)),
        "Write the execution report as JUnit XML to this path (relative to the output "
        "directory), one test case per notebook.",
        _check_path,
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the pipeline needs from the configuration; plain data, safe to pickle."""

    cache_path: Path
    workers: int | None
    """None: an adaptive pool."""
    retry_failed: bool
    notebook_timeout: int | None = None
    lock_timeout: int = DEFAULT_LOCK_TIMEOUT
    """Seconds to wait for another build executing the same key; 0: never wait."""
    report: Path | None = None
    """Relative to the output directory unless absolute."""
    junit: Path | None = None
    project_root: Path | None = None
    """Files a notebook reads under this folder are tracked as its dependencies."""
    srcdir: Path | None = None
    """Sphinx's source folder; symbolic links to folders in it are followed for the same."""
    dependencies: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(notebook glob, file globs) pairs from ``nbcache_dependencies``."""
    env_vars: tuple[str, ...] = ()
    artefact_max_size: int = DEFAULT_ARTEFACT_MAX_SIZE
    artefact_include: tuple[str, ...] = ("*",)
    artefact_exclude: tuple[str, ...] = ()
    kernel_preload: tuple[str, ...] | None = ()
    """Modules the kernel fork server imports besides ipykernel; None: kernels start
    normally (``nbcache_fork_kernels = False``)."""
    executor: str = "local"
    dask_scheduler: str | None = None
    dask_files: str = "shared"
    dask_ship_max_size: int = DEFAULT_SHIP_MAX_SIZE
    secret_env: str = "NBCACHE_SECRET"
    """The environment variable holding the secret that signs entries (its name, never
    its value: settings travel to Dask and into logs)."""


def from_command_line(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``-D nbcache_workers=4`` into an int and ``-D nbcache_kernel_preload=numpy, pandas``
    into a list of names: ``-D`` gives values whose default is None as plain strings, and
    lists as the unstripped pieces between commas."""
    result = dict(values)
    for name in ("nbcache_workers", "nbcache_notebook_timeout"):
        value = result.get(name)
        if isinstance(value, str) and value.strip().isdigit():
            result[name] = int(value)
    preload = result.get("nbcache_kernel_preload")
    if isinstance(preload, str):
        preload = preload.split(",")
    if isinstance(preload, list) and all(isinstance(m, str) for m in preload):
        result["nbcache_kernel_preload"] = [m.strip() for m in preload if m.strip()]
    return result


def validate(values: Mapping[str, Any]) -> list[str]:
    """Return one message per bad ``nbcache_*`` value."""
    problems = []
    for spec in CONFIG_VALUES:
        message = spec.check(values.get(spec.name, spec.default))
        if message:
            problems.append(f"{spec.name} {message}")
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
    workers = values.get("nbcache_workers")
    return Settings(
        cache_path=cache_path(values.get("nbcache_path"), execution_cache_path, confdir),
        workers=workers,
        retry_failed=bool(values.get("nbcache_retry_failed", False)),
        notebook_timeout=values.get("nbcache_notebook_timeout"),
        lock_timeout=values.get("nbcache_lock_timeout", DEFAULT_LOCK_TIMEOUT),
        report=_optional_path(values.get("nbcache_report")),
        junit=_optional_path(values.get("nbcache_junit")),
        project_root=project_root(srcdir) if srcdir is not None else None,
        srcdir=srcdir,
        dependencies=tuple(
            (pattern, tuple(globs))
            for pattern, globs in (values.get("nbcache_dependencies") or {}).items()
        ),
        env_vars=tuple(values.get("nbcache_env_vars") or ()),
        artefact_max_size=values.get("nbcache_artefact_max_size", DEFAULT_ARTEFACT_MAX_SIZE),
        artefact_include=tuple(values.get("nbcache_artefact_include", ["*"])),
        artefact_exclude=tuple(values.get("nbcache_artefact_exclude", [])),
        kernel_preload=(
            tuple(values.get("nbcache_kernel_preload", ()))
            if values.get("nbcache_fork_kernels", True)
            else None
        ),
        executor=values.get("nbcache_executor", "local"),
        dask_scheduler=values.get("nbcache_dask_scheduler"),
        dask_files=values.get("nbcache_dask_files", "shared"),
        dask_ship_max_size=values.get("nbcache_dask_ship_max_size", DEFAULT_SHIP_MAX_SIZE),
        secret_env=values.get("nbcache_secret_env", "NBCACHE_SECRET"),
    )


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)
