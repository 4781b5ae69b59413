"""Lexers of notebook pages, looked up once per build instead of once per code block.

Sphinx resolves a block's language through Pygments' ``get_lexer_by_name`` every time it
highlights, unless the name was registered with ``app.add_lexer``. That lookup scans
Pygments' list of built-in lexers and then every installed plugin's entry points, and
the lexers of executed notebooks are plugins: the kernel's ``ipython3`` for code cells,
myst-nb's ``myst-ansi`` for text outputs, ``ipythontb`` for tracebacks. Registering the
very class the lookup would find makes every output block cost a dictionary lookup
instead, and renders the same HTML.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pygments.lexer import Lexer
from pygments.lexers import find_lexer_class_by_name
from pygments.util import ClassNotFound
from sphinx.highlighting import lexer_classes


def code_lexer(metadata: Mapping[str, Any]) -> str | None:
    """The lexer name myst-nb gives a notebook's code cells (the order of its
    ``nb_source_code_lexer``): the kernel's Pygments lexer, else its language."""
    language_info = metadata.get("language_info") or {}
    name = language_info.get("pygments_lexer") or language_info.get("name")
    if name is None:
        name = (metadata.get("kernelspec") or {}).get("language")
    return name if isinstance(name, str) else None


def lexers_to_register(names: Iterable[str | None]) -> dict[str, type[Lexer]]:
    """Each name with the class Pygments resolves it to; names Sphinx or another extension
    already registered, and names Pygments does not know, are left to Sphinx."""
    found = {}
    for name in set(names):
        if not name or name in lexer_classes:
            continue
        try:
            found[name] = find_lexer_class_by_name(name)
        except ClassNotFound:
            continue
    return found


class SharedBlocks:
    """Sphinx's ``highlight_block``, highlighting once per build each code block shown at
    the same place of the same file on many pages.

    Instance pages are such pages: each shows its template's code cells, and writing
    highlighted every one of them again (a Pygments formatter set up and run per block,
    most of the time of writing a notebook page). Only blocks from ``files`` are kept, so
    other pages cost no memory; a block's HTML depends on nothing but the arguments and
    the builder, so a kept block is the one Sphinx would render, and a problem with it is
    reported once, as its location is one.
    """

    def __init__(self, highlight: Callable[..., str], files: Collection[str]) -> None:
        self.highlight = highlight
        self.files = files
        self.done: dict[tuple[Any, ...], str] = {}

    def __call__(
        self,
        source: str,
        lang: str,
        opts: Mapping[str, Any] | None = None,
        force: bool = False,
        location: Any = None,
        **kwargs: Any,
    ) -> str:
        where = (getattr(location, "source", None), getattr(location, "line", None))
        if where[0] not in self.files:
            return self.highlight(source, lang, opts, force, location, **kwargs)
        options = repr(sorted((opts or {}).items())), repr(sorted(kwargs.items()))
        key = (source, lang, force, *options, *where)
        html = self.done.get(key)
        if html is None:
            html = self.done[key] = self.highlight(source, lang, opts, force, location, **kwargs)
        return html
