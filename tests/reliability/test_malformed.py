"""No input stops the build: a malformed notebook gets one located warning that a person
understands, and every other page is still rendered.

The generated cases run derandomized (the same examples on every run). A soak session
explores further with fresh random examples, e.g.::

    NBCACHE_SOAK_EXAMPLES=5000 python -m pytest tests/reliability/test_malformed.py
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from docutils.core import publish_doctree
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from myst_nb.core.config import NbParserConfig
from myst_nb.docutils_ import Parser as DocutilsNbParser
from myst_parser.config.main import MdParserConfig

from helpers import BASE_CONF, Build, Project, code, ipynb, markdown, myst_notebook, percent_script
from sphinx_nbcache.cache.key import notebook_key
from sphinx_nbcache.notebook.decoding import ESCAPED, escaping
from sphinx_nbcache.notebook.read import NotebookReadError, SourceNotebook, read_notebook

SOAK = int(os.environ.get("NBCACHE_SOAK_EXAMPLES", "0"))
"""0 in the suite: a fixed, fast set of examples; else how many to try, at random."""
READ_EXAMPLES = SOAK or 150
BUILDS = max(2, SOAK // 200)
PAGES_PER_BUILD = 30
EXPLORE = settings(
    max_examples=READ_EXAMPLES,
    derandomize=not SOAK,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INTERNAL = re.compile(
    r"[A-Z]\w*(Error|Exception|Warning)\b|object has no attribute|is not iterable|"
    r"not subscriptable|Traceback \(most recent|NoneType|<class |\x1b"
)
"""What a message for people must not hold: exception names, Python's own wording, ANSI."""
ENCODING = "utf-8-sig"
"""Sphinx's default ``source_encoding``."""
CUSTOM_FORMATS = {".py": ("jupytext.reads", {"fmt": "py:percent"}, False)}
EXAMPLE_BOOK = Path(__file__).parents[2] / "example_book" / "notebooks"


def good_ipynb(text: str = "good neighbour ran") -> str:
    return ipynb(code(f"print({text!r})"))


def python3_meta(**extra: Any) -> dict[str, Any]:
    return {"kernelspec": {"name": "python3", "display_name": "Python 3"}, **extra}


def notebook_dict(*cells: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ipynb(*cells, metadata=metadata or None))
    return loaded


def without(cell: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in cell.items() if k not in keys}


def dumped(data: Any) -> bytes:
    return json.dumps(data).encode()


MYST_PAGE = myst_notebook("# MyST page\n\n```{code-cell} ipython3\nprint('myst ran')\n```\n")
PY_PAGE = percent_script("# %% [markdown]\n# # Script page\n\n# %%\nprint('script ran')\n")

# (file, content, what the single nbcache.read warning must say)
UNREADABLE: list[tuple[str, bytes, str]] = [
    (
        "kernelspec_text.ipynb",
        dumped({**notebook_dict(code("1")), "metadata": {"kernelspec": "python3"}}),
        "metadata.kernelspec must be a mapping with the kernel's 'name', not the text 'python3'",
    ),
    (
        "source_number.ipynb",
        dumped(notebook_dict({**code("1"), "source": 5})),
        "code cell 1: 'source' must be text, not a number (5)",
    ),
    (
        "cell_metadata_list.ipynb",
        dumped(notebook_dict({**code("1"), "metadata": ["hide-input"]})),
        "code cell 1: the cell's 'metadata' must be a mapping, not a list",
    ),
    (
        "cell_type_unknown.ipynb",
        dumped(notebook_dict({**markdown("x"), "cell_type": "heading"})),
        "cell 2 of the file: 'cell_type' must be 'code', 'markdown' or 'raw', "
        "not the text 'heading'",
    ),
    (
        "tags_text.ipynb",
        dumped(notebook_dict({**code("1"), "metadata": {"tags": "hide-input"}})),
        "code cell 1: metadata.tags must be a list of text, not the text 'hide-input'",
    ),
    (
        "version_five.ipynb",
        dumped({**notebook_dict(code("1")), "nbformat": 5}),
        "notebook format version 5 is not supported",
    ),
    (
        "old_format_unknown_cell.ipynb",
        dumped({"nbformat": 2, "metadata": {}, "worksheets": [{"cells": [{"cell_type": "x"}]}]}),
        "cell 1 of the file: 'cell_type' must be 'code', 'markdown' or 'raw', not the text 'x'",
    ),
    ("not_json.ipynb", b'{"cells": [ not json', "not valid JSON: Expecting value (line 1, column"),
    (
        "invalid_utf8.ipynb",
        good_ipynb().replace("good neighbour ran", "caf\xe9").encode("latin-1"),
        "the file is not valid UTF-8 text: byte 0xe9 at line 1",
    ),
    (
        "utf16.ipynb",
        good_ipynb().encode("utf-16"),
        "byte 0xff at line 1, column 1 cannot be decoded (2 such bytes in all); it looks "
        "saved as UTF-16: save it as UTF-8",
    ),
    (
        "invalid_utf8_myst.md",
        MYST_PAGE.encode() + b"\nna\xefve \xff\n",
        "the file is not valid UTF-8 text: byte 0xef at line 13, column 3 cannot be decoded",
    ),
    (
        "invalid_utf8_front_matter.md",  # found by the generator: warned as a page, then read
        MYST_PAGE.replace("display_name: Python 3", "display_name: Python 3\udcff\udcfe")
        .encode("utf-8", "surrogateescape")
        .replace(b"---\n", b"---\nexecution: [1]\n", 1),
        "the file is not valid UTF-8 text: byte 0xff at line",
    ),
    (
        "invalid_utf8_script.py",
        PY_PAGE.encode() + b"# \xc3\x28\n",
        "the file is not valid UTF-8 text: byte 0xc3 at line 14, column 3",
    ),
    (
        "myst_kernelspec_text.md",
        MYST_PAGE.replace(
            "kernelspec:\n  name: python3\n  display_name: Python 3", "kernelspec: 3"
        ).encode(),
        "metadata.kernelspec must be a mapping with the kernel's 'name', not a number (3)",
    ),
    (
        "myst_bad_tags.md",
        myst_notebook("# T\n\n```{code-cell} ipython3\n:tags: 5\nx = 1\n```\n").encode(),
        "metadata.tags: 5 is not of type 'array'",
    ),
]
# (file, content, text of its executed output): omissions Jupyter tolerates, filled in
REPAIRED: list[tuple[str, bytes, str]] = [
    (
        "no_outputs.ipynb",
        dumped(notebook_dict(without(code("print('no outputs ran')"), "outputs"))),
        "no outputs ran",
    ),
    (
        "no_execution_count_or_metadata.ipynb",
        dumped(notebook_dict(without(code("print('bare ran')"), "execution_count", "metadata"))),
        "bare ran",
    ),
]
ABSOLUTE_DEPENDENCY = (
    "absolute_dependency.ipynb",
    ipynb(code("print('dependency ran')"), metadata={"nbcache": {"dependencies": ["/etc/passwd"]}}),
)
COLOURED_ERROR = ipynb(code("raise MemoryError('\\x1b[31mout of memory\\x1b[0m')"))


def page_warnings(build: Build, file: str, subtype: str = "nbcache.read") -> list[str]:
    return [w for w in build.warnings if f"/{file}" in w.split(": ")[0] and f"[{subtype}]" in w]


@pytest.fixture(scope="module")
def named_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """One project holding every named malformed notebook and valid neighbours."""
    project = Project(tmp_path_factory.mktemp("malformed"))
    files: dict[str, bytes] = {name: content for name, content, _ in [*UNREADABLE, *REPAIRED]}
    files[ABSOLUTE_DEPENDENCY[0]] = ABSOLUTE_DEPENDENCY[1].encode()
    files["coloured_error.ipynb"] = COLOURED_ERROR.encode()
    files["good.ipynb"] = good_ipynb().encode()
    write_project(project, files)
    return project.build()


def write_project(project: Project, files: dict[str, bytes]) -> None:
    project.write("conf.py", BASE_CONF + "nb_execution_timeout = 30\n")
    docs = "\n".join(sorted(Path(name).stem for name in files))
    project.write("index.md", f"# Index\n\n```{{toctree}}\n{docs}\n```\n")
    for name, content in files.items():
        (project.root / name).write_bytes(content)


def test_named_malformed_notebooks_leave_the_build_going(named_build: Build) -> None:
    assert named_build.returncode == 0, named_build.stderr
    assert "Extension error" not in named_build.stderr
    assert "good neighbour ran" in named_build.html("good")


@pytest.mark.parametrize(("file", "expected"), [(f, e) for f, _, e in UNREADABLE])
def test_unreadable_notebook_gets_one_readable_warning(
    named_build: Build, file: str, expected: str
) -> None:
    (warning,) = page_warnings(named_build, file)
    assert expected in warning
    assert INTERNAL.search(warning) is None, warning
    assert expected in named_build.html(Path(file).stem).replace("\u2018", "'").replace(
        "\u2019", "'"
    )


@pytest.mark.parametrize(("file", "output"), [(f, o) for f, _, o in REPAIRED])
def test_omissions_jupyter_tolerates_are_filled_in(
    named_build: Build, file: str, output: str
) -> None:
    assert not [w for w in named_build.warnings if f"/{file}" in w]
    assert output in named_build.html(Path(file).stem)


def test_absolute_dependency_is_ignored_with_a_warning(named_build: Build) -> None:
    file = ABSOLUTE_DEPENDENCY[0]
    (warning,) = page_warnings(named_build, file)
    assert "dependency pattern '/etc/passwd' in its metadata is ignored: it is an absolute" in (
        warning
    )
    assert "dependency ran" in named_build.html(Path(file).stem)


def test_cell_error_warning_has_no_colour_codes(named_build: Build) -> None:
    (warning,) = page_warnings(named_build, "coloured_error.ipynb", "nbcache.cell")
    assert "in code cell 1: MemoryError: out of memory" in warning
    assert "\x1b" not in warning


def test_undecodable_page_that_is_no_notebook_is_shown_with_replacement_characters(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path / "project")
    write_project(
        project,
        {
            "plain.md": "# Plain page\n\nna\xefve\n".encode("latin-1"),
            "prose.rst": "Prose\n=====\n\ncaf\xe9\n".encode("latin-1"),
            "good.ipynb": good_ipynb().encode(),
        },
    )
    build = project.build()
    assert build.returncode == 0, build.stderr
    for file, page, line in [("plain.md", "plain", 3), ("prose.rst", "prose", 4)]:
        (warning,) = page_warnings(build, file)
        assert f"{file}:{line}: WARNING: the file is not valid UTF-8 text: byte 0x" in warning
        assert "\ufffd" in build.html(page)
    assert "good neighbour ran" in build.html("good")


# --- generated notebooks -------------------------------------------------------------------

MD_CONFIG = MdParserConfig()
NB_CONFIG = NbParserConfig(execution_mode="cache", custom_formats=CUSTOM_FORMATS)
FIELDS = (
    "metadata",
    "kernelspec",
    "name",
    "language_info",
    "cells",
    "cell_type",
    "source",
    "outputs",
    "output_type",
    "data",
    "text",
    "tags",
    "execution_count",
    "nbformat",
    "nbformat_minor",
    "attachments",
    "mystnb",
    "execution",
    "nbcache",
    "id",
)
"""Field names a mutation adds, so that wrong types land where readers look."""

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["python3", "code", "markdown", "stream", "text/plain", "/etc/passwd", ""])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
trivial_code = st.sampled_from(["x = 1", "print('ran')", "", "1 + 1", "%time x = 2"])


def base_notebooks(trivial: bool) -> list[dict[str, Any]]:
    """Real notebooks to mutate: every kind of cell and output; the example book's too,
    unless they must execute fast."""
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]},
        {
            "output_type": "display_data",
            "data": {"text/plain": "x", "application/json": {"a": [1]}},
            "metadata": {},
        },
        {"output_type": "execute_result", "data": {"text/plain": ["2"]}, "metadata": {}},
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["t"]},
    ]
    attachment = {"image/png": "iVBORw0KGgo="}
    synthetic = notebook_dict(
        {**markdown("# Title\n![](attachment:a.png)"), "attachments": {"a.png": attachment}},
        code("x = 1", tags=["hide-input"], outputs=outputs),
        {"cell_type": "raw", "metadata": {}, "source": "raw"},
        code("print(x)", metadata={"mystnb": {"execution_timeout": 5}}),
    )
    found = [synthetic, notebook_dict(code("x = 1"))]
    if not trivial:
        found += [json.loads(p.read_text()) for p in sorted(EXAMPLE_BOOK.glob("*.ipynb"))]
    return found


def paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*at, index))


@st.composite
def mutated_ipynb(draw: st.DrawFn, trivial: bool = False) -> bytes:
    """A real notebook with 1 to 4 random edits: a value replaced by one of another kind,
    a key removed or added, a huge or empty cell, or many cells."""
    notebook = copy.deepcopy(draw(st.sampled_from(base_notebooks(trivial))))
    if trivial:
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["source"] = draw(trivial_code)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.sampled_from(list(paths(notebook))))
        parent = _walk(notebook, at[:-1]) if at else None
        edit = draw(st.sampled_from(["replace", "delete", "add", "cells"]))
        if edit == "cells" and isinstance(notebook, dict):
            huge = draw(st.sampled_from(["x = 1\n" * 20000, "# " + "long " * 20000]))
            many = [code(draw(trivial_code)) for _ in range(300)]
            notebook["cells"] = draw(st.sampled_from([[code("")], [code(huge)], many]))
        elif edit == "cells" or not at:
            notebook = draw(json_values) if edit == "replace" else notebook
        elif edit == "replace":
            parent[at[-1]] = draw(json_values)
        elif edit == "delete":
            del parent[at[-1]]
        elif isinstance(target := parent[at[-1]], dict):
            target[draw(st.sampled_from(FIELDS))] = draw(json_values)
    return dumped(notebook)


def _walk(node: Any, at: tuple[Any, ...]) -> Any:
    for step in at:
        node = node[step]
    return node


def text_notebooks() -> list[tuple[str, str]]:
    pages = [
        ("myst.md", MYST_PAGE),
        ("script.py", PY_PAGE),
        ("options.md", myst_notebook("```{code-cell} ipython3\n:tags: [hide-input]\nx=1\n```\n")),
    ]
    pages += [(p.name, p.read_text()) for p in sorted(EXAMPLE_BOOK.glob("*.md"))]
    return pages


@st.composite
def mutated_text(draw: st.DrawFn, trivial: bool = False) -> tuple[str, bytes]:
    """A MyST or jupytext notebook with random bytes put in (invalid UTF-8, UTF-16 byte
    order marks, NULs), or a front matter field set to a value of another kind."""
    choices = text_notebooks()[:3] if trivial else text_notebooks()
    name, text = draw(st.sampled_from(choices))
    if name.endswith(".md") and draw(st.booleans()):
        head, body = text.removeprefix("---\n").split("\n---\n", 1)
        front = yaml.safe_load(head)
        front[draw(st.sampled_from(["kernelspec", "mystnb", "execution", "nbcache"]))] = draw(
            json_values
        )
        text = "---\n" + yaml.safe_dump(front) + "---\n" + body
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=1, max_size=6) | st.sampled_from([b"\xff\xfe", b"\x00"]))
        data[at:at] = junk
    return name, bytes(data)


def read(name: str, content: bytes) -> SourceNotebook | None:
    """The read layer as a build runs it: the source decoded as Sphinx does, with the
    extension's codec, and myst-nb's readers with real settings."""
    text = content.decode(escaping(ENCODING))
    return read_notebook(Path("/nowhere") / name, text, MD_CONFIG, NB_CONFIG, None, ENCODING)


def assert_read_or_told_why(name: str, content: bytes) -> None:
    """Either a readable message, or a notebook the rest of the build can key, send to a
    kernel and have myst-nb render."""
    note(f"{name}: {content[:2000]!r}")
    try:
        notebook = read(name, content)
    except NotebookReadError as exc:
        message = str(exc)
        note(f"message: {message}")
        assert message.strip(), "empty message"
        assert INTERNAL.search(message) is None, message
        return
    if notebook is None:
        return
    notebook_key(notebook.notebook, notebook.options, {})
    nbformat.writes(notebook.notebook)
    publish_doctree(
        json.dumps(notebook.notebook),
        source_path="page.ipynb",
        parser=DocutilsNbParser(),
        settings_overrides={
            "nb_execution_mode": "off",
            "report_level": 5,
            "halt_level": 5,
            "warning_stream": False,
        },
    )


@EXPLORE
@given(mutated_ipynb())
def test_mutated_ipynb_is_read_or_told_why(content: bytes) -> None:
    assert_read_or_told_why("page.ipynb", content)


@EXPLORE
@given(mutated_text())
def test_mutated_text_notebook_is_read_or_told_why(page: tuple[str, bytes]) -> None:
    assert_read_or_told_why(*page)


generated_project = st.lists(
    st.one_of(
        mutated_ipynb(trivial=True).map(lambda content: ("page.ipynb", content)),
        mutated_text(trivial=True),
    ),
    min_size=PAGES_PER_BUILD,
    max_size=PAGES_PER_BUILD,
)


@settings(EXPLORE, max_examples=BUILDS)
@given(generated_project)
def test_build_of_generated_notebooks_renders_every_page(
    tmp_path_factory: pytest.TempPathFactory, pages: list[tuple[str, bytes]]
) -> None:
    project = Project(tmp_path_factory.mktemp("generated"))
    files = {"good.ipynb": good_ipynb().encode()}
    for number, (name, content) in enumerate(pages):
        files[f"page{number:03d}{Path(name).suffix}"] = content
    write_project(project, files)
    note(f"project: {project.root}")
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert "good neighbour ran" in build.html("good")
    for file, content in files.items():
        assert (build.outdir / f"{Path(file).stem}.html").exists(), file
        warnings = page_warnings(build, file)
        for warning in warnings:
            assert INTERNAL.search(warning) is None, warning
        try:
            read(file, content)
        except NotebookReadError:
            assert len(warnings) == 1, (file, warnings)
        else:
            bad_bytes = ESCAPED.search(content.decode(escaping(ENCODING))) is not None
            expected = [w for w in warnings if "dependency pattern" not in w]
            assert len(expected) <= 1 and (bad_bytes or not expected), (file, warnings)
