"""Notebook instances as declared (``nbcache_instances`` in conf.py, ``nbcache: {instances:
...}`` in a notebook): checked shapes, one message per problem. Pure data, no Sphinx."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

NAME = re.compile(r"^\w[\w.-]*$")
"""An instance name: one part of a docname, safe in a URL and a file name."""

LONG_FORM = frozenset({"parameters", "title"})


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    """One instance of a template notebook: its page is ``<template>/<name>``."""

    name: str
    parameters: dict[str, Any]
    title: str | None = None
    """The page's title; None: the notebook's title and the instance's name."""


def parse_instances(value: Any, where: str) -> tuple[list[InstanceSpec], list[str]]:
    """The instances in ``value`` (instance name -> parameters, or -> ``{"parameters":
    {...}, "title": "..."}``), and one message per problem, each starting with ``where``."""
    if not isinstance(value, Mapping):
        return [], [f"{where} must map instance names to parameters, not {value!r}"]
    found, problems = [], []
    for name, entry in value.items():
        at = f"{where}, instance {name!r}"
        if name == "index":
            problems.append(f"{at}: 'index' would be the page of the template's folder")
            continue
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(
                f"{at}: the name must be letters, digits, '_', '-' or '.' (it names a page), "
                "starting with a letter or digit"
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{at} must be a dict of parameters, not {entry!r}")
            continue
        title = None
        parameters: Any = entry
        if "parameters" in entry and set(entry) <= LONG_FORM:
            parameters, title = entry["parameters"], entry.get("title")
            if title is not None and not isinstance(title, str):
                problems.append(f"{at}: title must be a str, not {title!r}")
                continue
            if not isinstance(parameters, Mapping):
                problems.append(f"{at}: parameters must be a dict, not {parameters!r}")
                continue
        problem = parameter_problem(parameters)
        if problem:
            problems.append(f"{at}: {problem}")
            continue
        found.append(InstanceSpec(name, dict(parameters), title))
    return found, problems


def parameter_problem(parameters: Mapping[Any, Any]) -> str | None:
    """What is wrong with a parameter set; None when each name is an identifier and
    each value a JSON value."""
    for name in parameters:
        if not isinstance(name, str) or not name.isidentifier():
            return f"parameter name {name!r} is not an identifier"
    try:
        same = json.loads(json.dumps(dict(parameters), allow_nan=False)) == parameters
    except (TypeError, ValueError):
        same = False
    if not same:
        return (
            "parameter values must be JSON values (str, int, float, bool, None, and lists "
            f"and dicts of them), not {dict(parameters)!r}"
        )
    return None


def from_command_line(pairs: list[list[str]]) -> dict[str, Any]:
    """papermill's ``-p NAME VALUE`` pairs as parameters, each value read as papermill reads
    it: ``True``, ``False``, ``None``, an int, a float, else the text itself.

    :raises ValueError: for a name that is not an identifier.
    """
    parameters = {name: _papermill_value(text) for name, text in pairs}
    problem = parameter_problem(parameters)
    if problem is not None:
        raise ValueError(problem)
    return parameters


def _papermill_value(text: str) -> Any:
    named = {"True": True, "False": False, "None": None}
    if text in named:
        return named[text]
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if parameter_problem({"x": value}) is None else text  # nan, inf
    return text


def check_config(value: Any) -> str | None:
    """``nbcache_instances``: template docname -> instances; one line per problem."""
    if not isinstance(value, Mapping):
        return f"must map template docnames to their instances, not {value!r}"
    problems = []
    for template, instances in value.items():
        if not isinstance(template, str) or not template or template.startswith("/"):
            problems.append(f"template {template!r} must be a docname (a path with no suffix)")
            continue
        problems += parse_instances(instances, f"template {template!r}")[1]
    return "\n".join(problems) or None
