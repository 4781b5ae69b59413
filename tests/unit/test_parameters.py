"""Injecting an instance's parameters as papermill does, and checking declared instances."""

from __future__ import annotations

import ast
from typing import Any

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sphinx_nbcache.cache.key import notebook_key
from sphinx_nbcache.instances import check_config, from_command_line, parse_instances
from sphinx_nbcache.model import ExecOptions
from sphinx_nbcache.notebook.parameters import ParameterError, inject, shift_lines


def notebook(*cells: nbformat.NotebookNode, language: str = "python") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "k", "display_name": "K", "language": language}
    return nb


def tagged(source: str, tag: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [tag]
    return cell


def test_injected_after_the_parameters_cell_with_papermill_metadata() -> None:
    nb = notebook(
        nbformat.v4.new_markdown_cell("# T"),
        tagged("a = 1\nb: int = 2\n(c, d) = 3, 4", "parameters"),
        nbformat.v4.new_code_cell("print(a)"),
    )
    done = inject(nb, {"a": 5, "e": [None, True]})
    assert (done.index, done.inserted, done.defaults) == (2, True, 1)
    assert done.unknown == ("e",)
    cell = done.notebook.cells[2]
    assert cell.source == "# Parameters\na = 5\ne = [None, True]\n"
    assert cell.metadata.tags == ["injected-parameters"] and cell.id == "injected-parameters"
    assert done.notebook.metadata.papermill.parameters == {"a": 5, "e": [None, True]}
    assert len(nb.cells) == 3 and "papermill" not in nb.metadata  # the source is unchanged
    nbformat.validate(done.notebook)
    # injected again (a papermill output as a template): the injected cell is replaced
    again = inject(done.notebook, {"a": 6})
    assert (again.index, again.inserted) == (2, False)
    assert [c.source for c in again.notebook.cells][1:3] == [
        nb.cells[1].source,
        "# Parameters\na = 6\n",
    ]
    assert shift_lines({1: 10, 2: 20}, done) == {1: 10, 3: 20}
    assert shift_lines({1: 10}, again) == {1: 10}


def test_no_parameters_cell_injects_at_the_top_and_knows_no_names() -> None:
    done = inject(notebook(nbformat.v4.new_code_cell("print(x)")), {"x": "y"})
    assert (done.index, done.defaults, done.unknown) == (0, None, ())


def test_other_languages_need_papermill_translators() -> None:
    done = inject(notebook(tagged("x <- 1", "parameters"), language="R"), {"x": 2})
    assert "x = 2" in done.notebook.cells[1].source
    with pytest.raises(ParameterError):
        inject(notebook(language="cobol"), {"x": 1})


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n.isidentifier()),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=6,
        ),
        max_size=4,
    )
)
def test_python_source_gives_back_the_values(parameters: dict[str, Any]) -> None:
    import keyword

    parameters = {n: v for n, v in parameters.items() if not keyword.iskeyword(n)}
    source = inject(notebook(), parameters).notebook.cells[0].source
    namespace: dict[str, Any] = {}
    exec(compile(ast.parse(source), "<injected>", "exec"), namespace)
    assert {n: namespace[n] for n in parameters} == parameters


def test_the_key_depends_on_the_values_not_on_how_they_are_written() -> None:
    nb = notebook(tagged("n = 1", "parameters"), nbformat.v4.new_code_cell("print(n)"))
    options = ExecOptions(
        "cache", 30, allow_errors=False, raise_on_error=False, show_tb=False, in_temp=False
    )

    def key(parameters: dict[str, Any]) -> str:
        return notebook_key(inject(nb, parameters).notebook, options, None, parameters)

    assert key({"n": 2}) == key({"n": 2}) != key({"n": 3})
    assert key({}) != notebook_key(nb, options)
    written_otherwise = inject(nb, {"n": 2}).notebook
    written_otherwise.cells[1].source = "n=2"
    assert notebook_key(written_otherwise, options, None, {"n": 2}) == key({"n": 2})


def test_declared_instances_one_problem_each() -> None:
    specs, problems = parse_instances(
        {
            "a": {"x": 1},
            "b": {"parameters": {"x": 2}, "title": "B"},
            "c d": {},
            "e": {"1x": 1},
            "f": {"x": float("nan")},
            "g": {"parameters": {}, "title": 3},
        },
        "here",
    )
    assert [(s.name, s.parameters, s.title) for s in specs] == [
        ("a", {"x": 1}, None),
        ("b", {"x": 2}, "B"),
    ]
    assert [p.split(":")[0] for p in problems] == [
        "here, instance 'c d'",
        "here, instance 'e'",
        "here, instance 'f'",
        "here, instance 'g'",
    ]
    assert check_config({"t": {"a": {}}}) is None
    assert check_config({"/t": {}, "u": []}) == "\n".join(
        [
            "template '/t' must be a docname (a path with no suffix)",
            "template 'u' must map instance names to parameters, not []",
        ]
    )
    assert check_config([]) == "must map template docnames to their instances, not []"


def test_command_line_values_read_as_papermill_reads_them() -> None:
    pairs = [["a", "True"], ["b", "None"], ["c", "010"], ["d", "1e3"], ["e", "no"]]
    pairs += [["f", "nan"], ["g", "12:30"]]
    assert from_command_line(pairs) == {
        "a": True,
        "b": None,
        "c": 10,
        "d": 1000.0,
        "e": "no",
        "f": "nan",
        "g": "12:30",
    }
    with pytest.raises(ValueError, match="not an identifier"):
        from_command_line([["1x", "2"]])


def test_papermill_finds_the_tagged_cell_of_any_type_and_the_kernel_by_name() -> None:
    tagged_markdown = nbformat.v4.new_markdown_cell("defaults below")
    tagged_markdown.metadata["tags"] = ["parameters"]
    done = inject(notebook(tagged_markdown, nbformat.v4.new_code_cell("x = 1")), {"x": 2})
    assert (done.index, done.defaults, done.unknown) == (1, 0, ())
    r_kernel = nbformat.v4.new_notebook(cells=[tagged("x <- 1", "parameters")])
    r_kernel.metadata["kernelspec"] = {"name": "sparkrkernel", "display_name": "R"}
    assert "x = 2" in inject(r_kernel, {"x": 2}).notebook.cells[1].source  # R, not Python
    r_kernel.metadata["kernelspec"]["name"] = "ir"  # a kernel papermill does not know
    with pytest.raises(ParameterError, match="'ir'"):
        inject(r_kernel, {"x": 2})
