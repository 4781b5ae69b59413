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

from collections.abc import Iterable, Mapping
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
