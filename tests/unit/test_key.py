"""The cache key changes when, and only when, outputs could change."""

from __future__ import annotations

import dataclasses

import nbformat
import pytest

from sphinx_nbcache.cache.key import notebook_key
from sphinx_nbcache.model import ExecOptions

OPTIONS = ExecOptions(
    mode="cache", timeout=30, allow_errors=False, raise_on_error=False, show_tb=False, in_temp=False
)


def make_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}}
    )
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\nProse."),
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_raw_cell("raw"),
        nbformat.v4.new_code_cell("x + 1"),
    ]
    return notebook


def key_after(change: object) -> str:
    notebook = make_notebook()
    assert callable(change)
    change(notebook)
    return notebook_key(notebook, OPTIONS)


BASE = notebook_key(make_notebook(), OPTIONS)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda nb: setattr(nb.cells[0], "source", "# Other"), id="markdown"),
        pytest.param(lambda nb: setattr(nb.cells[2], "source", "other raw"), id="raw"),
        pytest.param(lambda nb: nb.cells.append(nbformat.v4.new_markdown_cell("more")), id="md+"),
        pytest.param(lambda nb: nb.cells[1].metadata.update(tags=["hide-input"]), id="hide-input"),
        pytest.param(
            lambda nb: nb.cells[1].metadata.update(mystnb={"number_source_lines": True}),
            id="mystnb-cell",
        ),
        pytest.param(
            lambda nb: nb.cells[1].metadata.update(execution={"iopub.status.busy": "2026"}),
            id="timing",
        ),
        pytest.param(lambda nb: setattr(nb.cells[1], "id", "another-id"), id="cell-id"),
        pytest.param(lambda nb: setattr(nb.cells[1], "execution_count", 7), id="count"),
        pytest.param(
            lambda nb: nb.cells[1].outputs.append(nbformat.v4.new_output("stream", text="1\n")),
            id="outputs",
        ),
        pytest.param(
            lambda nb: nb.metadata.update(language_info={"name": "python"}), id="language_info"
        ),
        pytest.param(
            lambda nb: nb.metadata.update(mystnb={"render_markdown_format": "myst"}), id="mystnb-nb"
        ),
        pytest.param(
            lambda nb: nb.metadata.kernelspec.update(display_name="Other"), id="display-name"
        ),
    ],
)
def test_render_only_changes_keep_the_key(change: object) -> None:
    assert key_after(change) == BASE


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda nb: setattr(nb.cells[1], "source", "x = 2\nprint(x)"), id="code"),
        pytest.param(lambda nb: nb.cells.reverse(), id="order"),
        pytest.param(lambda nb: nb.cells.append(nbformat.v4.new_code_cell("pass")), id="code+"),
        pytest.param(
            lambda nb: nb.cells[1].metadata.update(tags=["raises-exception"]), id="raises"
        ),
        pytest.param(lambda nb: nb.cells[1].metadata.update(tags=["skip-execution"]), id="skip"),
        pytest.param(lambda nb: nb.cells[1].metadata.update(tags=["parameters"]), id="parameters"),
        pytest.param(lambda nb: nb.metadata.kernelspec.update(name="julia-1.9"), id="kernel"),
        pytest.param(lambda nb: nb.metadata.kernelspec.update(language="julia"), id="language"),
    ],
)
def test_execution_changes_change_the_key(change: object) -> None:
    assert key_after(change) != BASE


def test_settings_that_change_execution_change_the_key() -> None:
    notebook = make_notebook()
    allow = dataclasses.replace(OPTIONS, allow_errors=True)
    temp = dataclasses.replace(OPTIONS, in_temp=True)
    keys = {notebook_key(notebook, o) for o in (OPTIONS, allow, temp)}
    assert len(keys) == 3


def test_mode_timeout_and_reporting_settings_keep_the_key() -> None:
    notebook = make_notebook()
    other = dataclasses.replace(OPTIONS, mode="force", timeout=5, raise_on_error=True, show_tb=True)
    assert notebook_key(notebook, other) == BASE


def test_tag_order_and_extra_tags_do_not_matter() -> None:
    one, two = make_notebook(), make_notebook()
    one.cells[1].metadata["tags"] = ["raises-exception", "hide-input", "skip-execution"]
    two.cells[1].metadata["tags"] = ["skip-execution", "raises-exception"]
    assert notebook_key(one, OPTIONS) == notebook_key(two, OPTIONS)
