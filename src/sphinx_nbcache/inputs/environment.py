"""Where a kernel runs and what is installed there: the interpreter of a kernelspec, its
Python version, distributions and their top-level modules, and a cheap fingerprint that
tells when any of that changed. Turns the modules a notebook imported into the
distributions (and versions) it depends on."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from importlib import metadata
from pathlib import Path
from typing import Any

from sphinx_nbcache.cache.jsonfile import read_json_file, write_json_file
from sphinx_nbcache.inputs import _fingerprint


def environment(collected: dict[str, Any]) -> dict[str, Any]:
    """What the kernel reported: its Python version and the top-level modules the notebook
    imported. :func:`with_packages` turns the modules into distributions and versions,
    once per build rather than in every kernel."""
    imported = collected.get("imported")
    python = collected.get("python")
    if not isinstance(imported, list) or not isinstance(python, str):
        return {}
    return {"python": python, "imported": imported}


def with_packages(environment: dict[str, Any], installed: dict[str, Any]) -> dict[str, Any]:
    """Replace the imported module names by the distributions (name -> version) providing
    them in the ``installed`` environment (packages by normal name, as
    :func:`kernel_environment` gives them); local modules are tracked as files instead."""
    if "imported" not in environment:
        return environment
    owners = installed.get("owners", {})
    versions = installed.get("packages", {})
    packages = {}
    for top in environment["imported"]:
        for dist in owners.get(top, []):
            version = versions.get(normal(dist))
            if version is not None:
                packages[dist] = version
    return {"python": environment["python"], "packages": dict(sorted(packages.items()))}


def changed_environment(
    recorded: dict[str, Any], python: str, version_of: Callable[[str], str | None]
) -> str | None:
    """How the kernel's environment (its ``python`` version, and ``version_of`` each
    distribution) differs from the recorded one, for the packages the notebook used; None
    if it does not."""
    if not recorded:
        return None
    if recorded.get("python") != python:
        return f"Python {recorded.get('python')} -> {python}"
    for name, version in recorded.get("packages", {}).items():
        current = version_of(name)
        if current != version:
            return f"{name} {version} -> {current or 'not installed'}"
    return None


def normal(name: str) -> str:
    """Distribution names compare case- and separator-insensitively (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


THIS_PYTHON = frozenset(
    {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
)
"""Kernelspec interpreters jupyter_client replaces with its own ``sys.executable``."""


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


def installed_version(distribution: str) -> str | None:
    """A distribution's version in this interpreter, as installed now."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


ENVIRONMENTS_FILE = "environments.json"
"""Beside the cache entries: the last :mod:`_fingerprint` report per interpreter."""


ENVIRONMENT_SCRIPT = Path(_fingerprint.__file__)


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
    found = _fingerprint.report(fingerprint) if python is None else report_of(python, fingerprint)
    if found is None:
        return {}
    if set(found) == {"fingerprint"} and isinstance(known, dict):
        return _by_normal_name(known)
    remembered[python or sys.executable] = found
    write_json_file(remembered_file, remembered)
    return _by_normal_name(found)


def report_of(interpreter: str, known: str) -> dict[str, Any] | None:
    """:func:`_fingerprint.report` as another interpreter gives it; None if it cannot."""
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
    return {**environment, "packages": {normal(n): v for n, v in packages.items()}}


class Environments:
    """Where the kernels of one build run and what is installed there: each kernel's
    interpreter, versions, fingerprints and package lists looked at once per build (a
    process that runs many builds looks again for each), the lists in a thread."""

    def __init__(self, cache_path: Path) -> None:
        self.cache_path = cache_path
        self._environments: dict[str, Future[dict[str, Any]]] = {}
        """What is installed for each kernel, looked at once per build, in a thread."""
        self._interpreters: dict[str, str | None] = {}
        """Each kernel's interpreter (:func:`kernel_interpreter`), asked once per build."""
        self._versions: dict[str, str | None] = {}
        """Distributions' versions in this interpreter, asked once per build per name."""
        self._fingerprints: dict[str | None, str | None] = {}
        """Each interpreter's :func:`_fingerprint.fingerprint` now, by interpreter."""

    def changed(self, recorded: dict[str, Any], kernel: str) -> str | None:
        """A package the notebook imported (``recorded``, as its result keeps it), or Python
        itself, at another version now where ``kernel`` runs; None if nothing changed or it
        cannot be told."""
        if not recorded:
            return None
        if self.interpreter(kernel) is None:
            return changed_environment(recorded, platform.python_version(), self.installed_version)
        installed = self.installed(kernel)
        if not installed:
            return None
        versions = installed["packages"]
        return changed_environment(
            recorded,
            installed["python"],
            lambda name: versions.get(normal(name)),
        )

    def mark(self, kernel: str) -> tuple[str | None, str | None]:
        """The interpreter ``kernel`` runs in and the fingerprint of what is installed
        there. A page keeps it, so that a later build can tell, without listing any
        package, that the environment changed and the page must be looked up again."""
        interpreter = self.interpreter(kernel)
        if interpreter is None:
            return None, self.fingerprint(None)
        return interpreter, self.installed(kernel).get("fingerprint")

    def interpreter(self, kernel: str) -> str | None:
        """:func:`kernel_interpreter`, once per build per kernel."""
        if kernel not in self._interpreters:
            self._interpreters[kernel] = kernel_interpreter(kernel)
        return self._interpreters[kernel]

    def installed_version(self, distribution: str) -> str | None:
        """:func:`installed_version`, once per build per distribution."""
        if distribution not in self._versions:
            self._versions[distribution] = installed_version(distribution)
        return self._versions[distribution]

    def fingerprint(self, interpreter: str | None, known: str = "") -> str | None:
        """The fingerprint of what is installed for ``interpreter`` (None: this one), once
        per build; a foreign interpreter is run, and lists its packages only when its
        fingerprint is not ``known``. None when it cannot be told."""
        if interpreter not in self._fingerprints:
            if interpreter is None:
                found: str | None = _fingerprint.fingerprint()
            else:
                report = report_of(interpreter, known)
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
                    future.set_result(kernel_environment(kernel, self.cache_path))
                except BaseException as exc:
                    future.set_exception(exc)

        threading.Thread(target=look, name="nbcache-environment", daemon=True).start()

    def wait(self, kernels: Iterable[str]) -> None:
        """Until the looks at these kernels are done: no thread may outlive a run."""
        for kernel in kernels:
            self._environments[kernel].exception()
