"""The package's layers: imports only point down, no module imports one that imports it,
and the light layers stay light (the key loads no kernel, cache or Sphinx library; a Dask
worker never imports Sphinx). See docs/how-it-works.md."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sphinx_nbcache"

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "model",
        "instances",
        "config",
        "log",
        "inputs._fingerprint",
        "run._forkserver",
        "run._reaper",
    ),
    ("cache",),
    ("notebook",),
    ("inputs",),
    ("run",),
    ("plan",),
    ("pipeline",),
    ("migrate", "progress", "report"),
    ("extension",),
    ("cli", "__main__", ""),
)
"""Bottom to top; a module belongs to the first entry that names it or its subpackage
(``""``: the package itself, Sphinx's entry point)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for number, members in enumerate(LAYERS):
        for member in members:
            if module == member or (member and module.startswith(member + ".")):
                return number
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sphinx_nbcache"):
            base = node.module.removeprefix("sphinx_nbcache").lstrip(".")  # type: ignore[union-attr]
            for alias in node.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(
                    candidate
                    if (PACKAGE / candidate.replace(".", "/")).exists()
                    or (PACKAGE / (candidate.replace(".", "/") + ".py")).exists()
                    else base
                )
    return {name for name in found if name}


GRAPH = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    upward = sorted(name for name in GRAPH[module] if layer(name) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward}"


def test_no_import_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for name in sorted(GRAPH.get(module, ())):
            if name != module and not module.startswith(name + "."):  # a package's own init
                visit(name, (*path, module))
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, ())


def loaded_by(module: str) -> set[str]:
    """The top-level names in ``sys.modules`` after a fresh interpreter imports ``module``."""
    script = (
        f"import sys, json; before = set(sys.modules); import {module}; "
        "print(json.dumps(sorted({m.partition('.')[0] for m in set(sys.modules) - before})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("sphinx_nbcache.cache.key", {"nbclient", "myst_nb", "diskcache", "zmq", "sphinx"}),
        ("sphinx_nbcache.cache.parsed", {"nbclient", "myst_nb", "diskcache", "zmq", "sphinx"}),
        ("sphinx_nbcache.run.worker", {"sphinx", "myst_nb", "myst_parser", "diskcache"}),
        ("sphinx_nbcache.pipeline", {"sphinx"}),
    ],
)
def test_light_layers_stay_light(module: str, heavy: set[str]) -> None:
    assert loaded_by(module) & heavy == set()


def test_the_model_is_standard_library_only() -> None:
    foreign = loaded_by("sphinx_nbcache.model") - set(sys.stdlib_module_names)
    assert foreign <= {"sphinx_nbcache"}, foreign
