"""The cache key: changes when, and only when, a notebook's outputs could change."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import nbformat

from sphinx_nbcache.model import ExecOptions

INJECTED_TAG = "injected-parameters"

KEY_SCHEMA = 1
"""Bump when the key's content changes, so old entries stop matching instead of lying."""

EXECUTION_TAGS = frozenset({"raises-exception", "skip-execution", "parameters"})
"""Cell tags that change what the kernel runs or how errors count; all other tags only
change rendering (``hide-input``, ``remove-output``, ...)."""


ENV_SALT = "sphinx-nbcache: environment variable\0"


def env_digests(names: Iterable[str]) -> dict[str, str | None]:
    """The values of environment variables ``names`` as they enter keys and entries: a
    salted sha256 each (None when unset), so that no cache, report or command shows a
    secret a variable holds."""
    found: dict[str, str | None] = {}
    for name in sorted(names):
        value = os.environ.get(name)
        text = f"{ENV_SALT}{name}\0{value}"
        found[name] = None if value is None else hashlib.sha256(text.encode("utf-8")).hexdigest()
    return found


def key_material(
    notebook: nbformat.NotebookNode,
    options: ExecOptions,
    declared: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    parent: str | None = None,
) -> dict[str, Any]:
    """Everything the key depends on, as plain data (useful to explain a miss).

    ``declared`` holds what the project declares a notebook depends on: file contents by
    project-relative path and environment variable values. Left out when empty, so keys
    of notebooks without declarations do not change. ``parameters``: a notebook
    instance's, which stand in for its injected cell (the key never depends on how the
    values are written as code). ``parent``: the key of the notebook whose final state
    this one starts from, so that a change there is a change here."""
    kernelspec = notebook.metadata.get("kernelspec", {})
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if parameters is not None and INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        tags = sorted(EXECUTION_TAGS.intersection(cell.metadata.get("tags", [])))
        cells.append({"source": cell.source, "tags": tags})
    material = {
        "schema": KEY_SCHEMA,
        "kernel": kernelspec.get("name", ""),
        "language": kernelspec.get("language", ""),
        "allow_errors": options.allow_errors,
        "in_temp": options.in_temp,
        "cells": cells,
    }
    if declared:
        material["declared"] = declared
    if parameters is not None:
        material["parameters"] = parameters
    if parent is not None:
        material["inherits"] = parent
    return material


def notebook_key(
    notebook: nbformat.NotebookNode,
    options: ExecOptions,
    declared: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    parent: str | None = None,
) -> str:
    """A hex digest of :func:`key_material`; never depends on where the project lives."""
    material = json.dumps(
        key_material(notebook, options, declared, parameters, parent),
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


PREFIX_LABEL = b"sphinx-nbcache: code cells up to here\0"


def prefix_keys(notebook: nbformat.NotebookNode, material: dict[str, Any]) -> list[str]:
    """For each code cell of ``notebook``, a key of everything before and including it:
    ``material`` (:func:`key_material`) but for the cells after. Two notebooks with the
    same key up to cell k ran the same code in the same setting up to there, so the kernel
    state after it and the outputs before are the same. An instance's injected cell counts
    as its parameters, which ``material`` holds."""
    head = {name: value for name, value in material.items() if name != "cells"}
    digest = hashlib.sha256(PREFIX_LABEL)
    digest.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    injected = "parameters" in material
    keys = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        if injected and INJECTED_TAG in tags:
            part: dict[str, Any] = {"injected": True}
        else:
            part = {"source": cell.source, "tags": sorted(EXECUTION_TAGS.intersection(tags))}
        digest.update(b"\0" + json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        keys.append(digest.copy().hexdigest())
    return keys


def explain_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why two key materials differ, in words: what ``nbcache status`` says of a stale entry."""
    if old.get("schema") != new.get("schema"):
        return "the key's layout changed with a sphinx-nbcache upgrade"
    reasons = []
    for field in ("kernel", "language"):
        if old.get(field) != new.get(field):
            reasons.append(f"{field} {old.get(field)!r} -> {new.get(field)!r}")
    for kind, label in (("files", "declared file"), ("env", "environment variable")):
        before = old.get("declared", {}).get(kind, {})
        after = new.get("declared", {}).get(kind, {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                reasons.append(f"{label} {name} changed")
    before, after = old.get("parameters") or {}, new.get("parameters") or {}
    changed = sorted(
        name for name in set(before) | set(after) if before.get(name) != after.get(name)
    )
    if changed:
        reasons.append("parameter " + ", ".join(changed) + " changed")
    if old.get("inherits") != new.get("inherits"):
        reasons.append("the notebook it inherits from changed")
    settings = [f for f in ("allow_errors", "in_temp") if old.get(f) != new.get(f)]
    if settings:
        reasons.append("execution settings changed (" + ", ".join(settings) + ")")
    old_cells, new_cells = old.get("cells", []), new.get("cells", [])
    if len(old_cells) != len(new_cells):
        reasons.append(f"code cells {len(old_cells)} -> {len(new_cells)}")
    else:
        changed = [
            str(number)
            for number, (a, b) in enumerate(zip(old_cells, new_cells, strict=True), start=1)
            if a != b
        ]
        if changed:
            reasons.append("code changed in code cell " + ", ".join(changed))
    return "; ".join(reasons) or "the key changed"
