"""Undecodable bytes in a source file: a located message instead of a stopped build.

Sphinx 9 decodes every source file strictly, with ``Path.read_text(encoding=
env.settings["input_encoding"])``, before any event an extension sees: one byte that is
not valid UTF-8 in one page raised ``UnicodeDecodeError`` and stopped the whole build.
The only thing an extension can choose there is the encoding's name, so the build names a
codec of its own: it decodes exactly as the configured encoding does, but keeps each byte
it cannot decode as a lone surrogate (U+DC00 + the byte), a character decoded text never
holds. Files that decode are read unchanged; in the others, the surrogates say which byte
was bad and where.
"""

from __future__ import annotations

import codecs
import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

PREFIX = "nbcache_escaped_"
"""Codec names this module answers for: the prefix, then the configured encoding."""
ERRORS = "nbcache-escape"
"""The error handler that keeps undecodable bytes as lone surrogates."""
ESCAPED = re.compile("[\udc00-\udcff]")
UTF16_STARTS = ("\udcff\udcfe", "\udcfe\udcff")
"""How a UTF-16 file (its byte order mark) starts when decoded as UTF-8 with escapes."""


def escaping(encoding: str) -> str:
    """The name of a codec that decodes as ``encoding`` does, keeping undecodable bytes."""
    _register()
    return PREFIX + encoding


@functools.cache
def _register() -> None:
    """Once per process: a codec search function and an error handler are process-wide
    (both are pure functions of their arguments)."""
    codecs.register_error(ERRORS, _escape)
    codecs.register(_search)


def _escape(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), error.end


def _search(name: str) -> codecs.CodecInfo | None:
    """``codecs.lookup`` has lower-cased the name and turned ``-`` into ``_``."""
    if not name.startswith(PREFIX):
        return None
    base = codecs.lookup(name.removeprefix(PREFIX))

    def decode(data: ReadableBuffer, errors: str = "strict") -> tuple[str, int]:
        return base.decode(data, ERRORS)

    class Decoder(codecs.IncrementalDecoder):
        def __init__(self, errors: str = "strict") -> None:
            super().__init__(errors)
            self.inner = base.incrementaldecoder(ERRORS)

        def decode(self, data: ReadableBuffer, final: bool = False) -> str:
            return self.inner.decode(data, final)

        def reset(self) -> None:
            self.inner.reset()

        def getstate(self) -> tuple[bytes, int]:
            return self.inner.getstate()

        def setstate(self, state: tuple[bytes, int]) -> None:
            self.inner.setstate(state)

    return codecs.CodecInfo(
        name=name,
        encode=base.encode,
        decode=decode,
        incrementalencoder=base.incrementalencoder,
        incrementaldecoder=Decoder,
        streamreader=base.streamreader,
        streamwriter=base.streamwriter,
    )


def undecodable(text: str, encoding: str) -> tuple[str, int] | None:
    """What is wrong with text read through :func:`escaping`, and its line; None if the
    file decoded."""
    found = ESCAPED.search(text)
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    byte = ord(found.group()) - 0xDC00
    count = len(ESCAPED.findall(text))
    name = codecs.lookup(encoding).name
    shown = "UTF-8" if name in ("utf-8", "utf-8-sig") else encoding
    message = f"the file is not valid {shown} text: byte 0x{byte:02x} at line {line}, "
    message += f"column {column} cannot be decoded"
    if count > 1:
        message += f" ({count} such bytes in all)"
    if text.startswith(UTF16_STARTS):
        message += "; it looks saved as UTF-16: save it as UTF-8"
    return message, line


def replace_undecodable(text: str) -> str:
    """``text`` with each undecodable byte shown as U+FFFD, the replacement character."""
    return ESCAPED.sub("\ufffd", text)
