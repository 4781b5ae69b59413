"""Start the kernel fork server while Sphinx is still loading extensions, on a first build.

A cold build waits for the server to import ipykernel (and ``nbcache_kernel_preload``)
before its first kernel starts. Started from ``setup()``, those imports run on another CPU
while Sphinx imports myst-nb and reads the project, and the pool finds the server ready.
It is only a head start: the settings validated at ``config-inited`` decide whether the
server is used; if nothing executes, it is stopped, and it never outlives the process.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sphinx_nbcache.config import cache_path, configured, from_command_line, is_valid

if TYPE_CHECKING:
    from sphinx.application import Sphinx

    from sphinx_nbcache.run.preload import Preloader


NOTHING_EXECUTED = "nbcache-executed-nothing"
"""Left in the doctrees folder by a build that had no cache and executed nothing: the next
build of such a project (notebooks with their outputs, under ``auto``) starts no server."""


def start_early(app: Sphinx) -> Preloader | None:
    """A preloader whose server for the default kernel is already starting, when this build
    will probably execute notebooks: executing modes, local forked kernels, no cache yet,
    and no earlier build that found nothing to execute. Reads conf.py's raw values, as
    they are not validated before ``config-inited``."""
    values = _raw_values(app)
    if values is None or not _will_execute(values, Path(app.confdir)):
        return None
    if (Path(app.doctreedir) / NOTHING_EXECUTED).exists():
        return None
    from sphinx_nbcache.run.preload import LAUNCHER, Preloader, can_fork

    if not can_fork():
        return None
    from sphinx_nbcache.log import LOGGER

    LOGGER.verbose("nbcache: no cache yet; starting the kernel fork server ahead")
    preloader = Preloader(configured(values, "nbcache_kernel_preload"))
    # the interpreter of ipykernel's own "python3" kernelspec: looking the kernelspec up
    # would first import jupyter_client, a fifth of a second; a kernel that turns out to
    # be another interpreter gets a server of its own
    preloader.start([sys.executable, *LAUNCHER], os.environ)
    atexit.register(preloader.close)  # a build that stops early (a bad config value)
    return preloader


def _raw_values(app: Sphinx) -> dict[str, Any] | None:
    raw = getattr(app.config, "_raw_config", None)
    overrides = getattr(app.config, "_overrides", None)
    if not isinstance(raw, dict) or not isinstance(overrides, dict):
        return None
    return from_command_line({**raw, **overrides})


def _will_execute(values: dict[str, Any], confdir: Path) -> bool:
    cache = configured(values, "nbcache_path")
    return (
        values.get("nb_execution_mode", "auto") in ("auto", "cache", "force")
        and configured(values, "nbcache_executor") == "local"
        and configured(values, "nbcache_fork_kernels") is True
        and is_valid(values, "nbcache_kernel_preload")
        and is_valid(values, "nbcache_path")
        and not (
            cache_path(cache, values.get("nb_execution_cache_path"), confdir) / "cache.db"
        ).exists()
    )
