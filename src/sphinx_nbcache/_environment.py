"""What is installed where a kernel runs: imported by sphinx-nbcache for kernels of its own
interpreter, run as a script by the kernel's Python otherwise (standard library only).

Listing every distribution and the top-level modules each provides reads every installed
package's metadata, about a second on a typical environment. A fingerprint of the
installed metadata folders (names and modification times) is cheap, so a caller that
kept an earlier answer passes its fingerprint and gets the full answer only when the
environment changed.

As a script: ``python _environment.py FINGERPRINT`` prints :func:`report` as JSON.
"""

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

METADATA_SUFFIXES = (".dist-info", ".egg-info")


def fingerprint() -> str:
    digest = hashlib.sha256(platform.python_version().encode())
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found:
                marks = sorted(
                    f"{item.name}:{item.stat().st_mtime_ns}"
                    for item in found
                    if item.name.endswith(METADATA_SUFFIXES)
                )
        except OSError:
            continue
        digest.update("\n".join([entry, *marks]).encode())
    return digest.hexdigest()


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
