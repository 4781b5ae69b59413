"""One table of settings: Sphinx's config values, the frozen settings, ``-D`` conversions
and the configuration page all follow it."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import yaml

from sphinx_nbcache.config import (
    BY_NAME,
    CONFIG_VALUES,
    Settings,
    build_settings,
    from_command_line,
    validate,
)

DOCS = Path(__file__).parents[2] / "docs"
CONFVAL = re.compile(r"^:::\{confval\} (?P<name>\S+)\n(?P<options>(?::[\w-]+:.*\n)*)", re.M)
DERIVED = {"cache_path", "project_root", "srcdir"}
"""Settings fields that come from more than one value, or from the project."""


def documented() -> dict[str, dict[str, str]]:
    """Each ``confval`` of the configuration page: its options, each value read as YAML, as
    MyST reads them."""
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    found: dict[str, dict[str, str]] = {}
    for match in CONFVAL.finditer(page):
        assert match["name"] not in found, f"{match['name']} is documented twice"
        options = (line[1:].partition(": ") for line in match["options"].splitlines())
        found[match["name"]] = {key: str(yaml.safe_load(value)) for key, _, value in options}
    return found


def test_every_settings_field_comes_from_the_table() -> None:
    filled = [spec.field for spec in CONFIG_VALUES if spec.field is not None]
    assert len(filled) == len(set(filled))
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert fields == set(filled) | DERIVED
    assert all(spec.name.startswith("nbcache_") for spec in CONFIG_VALUES)


def test_defaults_are_the_tables() -> None:
    assert validate({}) == []
    settings = build_settings({}, Path.cwd())
    for spec in CONFIG_VALUES:
        if spec.field is not None:
            assert getattr(settings, spec.field) == spec.freeze(spec.default), spec.name
    assert settings.kernel_preload == ()
    forked_off = build_settings({"nbcache_fork_kernels": False}, Path.cwd())
    assert forked_off.kernel_preload is None


def test_command_line_text_becomes_the_values_type() -> None:
    given = {
        "nbcache_workers": " 4",
        "nbcache_notebook_timeout": "x",
        "nbcache_kernel_preload": "numpy, pandas,",
        "nbcache_env_vars": ["A"],
    }
    assert from_command_line(given) == {
        "nbcache_workers": 4,
        "nbcache_notebook_timeout": "x",
        "nbcache_kernel_preload": ["numpy", "pandas"],
        "nbcache_env_vars": ["A"],
    }
    assert from_command_line({"nbcache_kernel_preload": ["numpy", " pandas"]}) == {
        "nbcache_kernel_preload": ["numpy", "pandas"]
    }


def test_the_configuration_page_documents_every_setting_with_its_default() -> None:
    pages = documented()
    assert set(pages) == set(BY_NAME)
    for name, options in pages.items():
        literal = re.match(r"``(.+?)``", options["default"])
        assert literal, f"{name}: the default does not start with a literal"
        default = ast.literal_eval(literal[1])
        expected = BY_NAME[name].default
        assert (type(default), default) == (type(expected), expected), name


def test_the_docs_name_no_setting_that_does_not_exist() -> None:
    for page in sorted(DOCS.glob("*.md")):
        named = set(re.findall(r"\bnbcache_\w+", page.read_text(encoding="utf-8")))
        assert named <= set(BY_NAME), f"{page.name}: {sorted(named - set(BY_NAME))}"
