"""Which lexers notebook pages register: the classes Pygments itself would pick."""

from __future__ import annotations

from myst_nb.core.lexers import AnsiColorLexer

from sphinx_nbcache.notebook.highlight import code_lexer, lexers_to_register


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
