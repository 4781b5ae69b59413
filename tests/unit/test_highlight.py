"""Which lexers notebook pages register (the classes Pygments itself would pick), and
the blocks instance pages share."""

from __future__ import annotations

from typing import Any

from docutils import nodes
from myst_nb.core.lexers import AnsiColorLexer
from sphinx.highlighting import PygmentsBridge

from sphinx_nbcache.notebook.highlight import SharedBlocks, code_lexer, lexers_to_register


def test_plugin_lexers_are_registered_with_the_class_pygments_finds() -> None:
    """IPython's lexers (in IPython itself or ipython-pygments-lexers, by version) and
    myst-nb's, each once; names that are no lexer are left out."""
    found = lexers_to_register(["ipython3", "myst-ansi", "ipythontb", "ipython3", None, ""])
    assert {name: lexer.__name__ for name, lexer in found.items()} == {
        "ipython3": "IPython3Lexer",
        "myst-ansi": "AnsiColorLexer",
        "ipythontb": "IPythonTracebackLexer",
    }
    assert found["myst-ansi"] is AnsiColorLexer


def test_names_sphinx_knows_or_pygments_does_not_are_left_to_sphinx() -> None:
    assert lexers_to_register(["python", "none", "no-such-lexer"]) == {}


def test_the_code_lexer_is_the_one_myst_nb_chooses() -> None:
    kernelspec = {"kernelspec": {"name": "python3", "language": "python"}}
    executed = {**kernelspec, "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    assert code_lexer(executed) == "ipython3"
    assert code_lexer({**kernelspec, "language_info": {"name": "R"}}) == "R"
    assert code_lexer(kernelspec) == "python"
    assert code_lexer({}) is None


def test_blocks_of_instance_templates_are_highlighted_once() -> None:
    """The HTML Sphinx's own highlighter renders, computed once per block of a template
    file however many pages show it; blocks of other files are highlighted every time."""
    bridge = PygmentsBridge("html")
    calls: list[str] = []

    def counted(source: str, lang: str, *args: Any, **kwargs: Any) -> str:
        calls.append(source)
        return bridge.highlight_block(source, lang, *args, **kwargs)

    shared = SharedBlocks(counted, {"/book/explore.ipynb"})
    in_template, elsewhere = nodes.literal_block(), nodes.literal_block()
    in_template.source, in_template.line = "/book/explore.ipynb", 3
    elsewhere.source, elsewhere.line = "/book/other.md", 3
    expected = bridge.highlight_block("x = 1", "python", location=in_template)
    for _ in range(3):
        assert shared("x = 1", "python", location=in_template) == expected
        assert shared("x = 1", "python", location=elsewhere) == expected
    assert shared("x = 1", "python", location=in_template, linenos=True) != expected
    assert shared("x = 2", "python", location=in_template) != expected
    assert calls == ["x = 1", "x = 1", "x = 1", "x = 1", "x = 1", "x = 2"]
