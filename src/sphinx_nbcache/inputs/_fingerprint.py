"""What is installed where a kernel runs: imported by sphinx-nbcache for kernels of its own
interpreter, run as a script by the kernel's Python otherwise (standard library only).

Listing every distribution and the top-level modules each provides reads every installed
package's metadata, about a second on a typical environment. A fingerprint of the names
and versions of the installed distributions, as their metadata folders' names say, is
cheap, so a caller that kept an earlier answer passes its fingerprint and gets the full
answer only when the environment changed. Modification times are left out on purpose:
reinstalling the same versions (``nox`` does it before every session) changes nothing.

As a script: ``python _fingerprint.py FINGERPRINT`` prints :func:`report` as JSON.
"""

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

METADATA_SUFFIXES = (".dist-info", ".egg-info")


def fingerprint() -> str:
    """The Python version and, per folder of ``sys.path``, the distributions installed
    there with their versions: changes when one is added, removed or changes version."""
    digest = hashlib.sha256(platform.python_version().encode())
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found:
                marks = sorted(
                    _name_and_version(item)
                    for item in found
                    if item.name.endswith(METADATA_SUFFIXES)
                )
        except OSError:
            continue
        digest.update("\n".join([entry, *marks]).encode())
    return digest.hexdigest()


def _name_and_version(item: "os.DirEntry[str]") -> str:
    """A ``.dist-info`` folder's name says both (``name-1.0.dist-info``, as the wheel
    specification requires); an ``.egg-info`` may not (``name.egg-info`` of a setuptools
    develop install, rewritten by each reinstall), so its ``Version:`` line is read."""
    if item.name.endswith(".dist-info"):
        return item.name
    path = Path(item.path, "PKG-INFO") if item.is_dir() else Path(item.path)
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():  # the end of the headers
                    break
                if line.startswith("Version:"):
                    return f"{item.name}:{line.partition(':')[2].strip()}"
    except OSError:
        pass
    return item.name


def report(known: str = "") -> dict[str, Any]:
    """Python version, distributions (name -> version) and which distributions provide
    each top-level module; only the fingerprint when it equals ``known``."""
    mark = fingerprint()
    if mark == known:
        return {"fingerprint": mark}
    return {
        "fingerprint": mark,
        "python": platform.python_version(),
        "packages": {d.metadata["Name"]: d.version for d in metadata.distributions()},
        "owners": metadata.packages_distributions(),
    }


if __name__ == "__main__":
    del sys.path[0]  # the script's folder is not part of the kernel's environment
    print(json.dumps(report(sys.argv[1] if len(sys.argv) > 1 else "")))
