"""Notebooks as read from text formats, kept between builds so that an unchanged page is
not parsed again; signed like entries, and re-checked on every read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sphinx_nbcache.cache.jsonfile import json_digest, read_json_file, write_json_file
from sphinx_nbcache.cache.signing import sign, verify

PARSED_SCHEMA = 2


PARSED_FOLDER = "parsed"
"""Beside the entries: :class:`ParsedStore`'s files."""


class ParsedStore:
    """Notebooks as a reader made them from a text source, one JSON file per source in the
    cache's ``parsed`` folder, each valid for one key (what the reading depended on).

    A reading says which code runs, so each file is signed with ``secret``: the project's
    own when set, else one that never leaves this machine
    (:func:`sphinx_nbcache.cache.signing.machine_secret`). A file that someone else wrote is a
    miss like a missing one, and the notebook is read from its source.

    The file is named after the source's path under the project's source folder, so that
    editing a notebook replaces its file rather than adding one, and a copy of the project
    elsewhere finds it. Best effort on both sides: a file that is missing or fails its
    checks is a miss, and one that cannot be written is not kept.
    """

    def __init__(self, cache_path: Path, srcdir: Path, secret: bytes) -> None:
        self.folder = cache_path / PARSED_FOLDER
        self.root = srcdir.resolve()
        self.secret = secret

    def _file(self, source: Path) -> Path:
        resolved = source.resolve()
        where = resolved.relative_to(self.root) if resolved.is_relative_to(self.root) else resolved
        return self.folder / f"{hashlib.sha256(where.as_posix().encode()).hexdigest()[:32]}.json"

    def get(self, source: Path, key: str) -> dict[str, Any] | None:
        envelope = read_json_file(self._file(source))
        try:
            if envelope["schema"] != PARSED_SCHEMA or envelope["key"] != key:
                return None
            notebook = envelope["notebook"]
            digest = json_digest(notebook)
            if not isinstance(notebook, dict) or envelope["digest"] != digest:
                return None
            if not verify(self.secret, envelope.get("signature"), key, digest):
                return None
            return notebook
        except (KeyError, TypeError, ValueError):
            return None

    def prune(self, sources: Iterable[Path]) -> int:
        """Remove the files of sources other than ``sources`` (notebooks deleted or renamed
        since; an edited notebook's file is replaced, never left behind); how many."""
        keep = {self._file(source) for source in sources}
        removed = 0
        for path in self.folder.glob("*.json"):
            if path not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def put(self, source: Path, key: str, notebook: dict[str, Any]) -> None:
        """Keep ``notebook`` unless it holds what JSON cannot (front matter YAML can give
        dates), as reading it back would not give the same notebook."""
        try:
            digest = json_digest(notebook)
        except (TypeError, ValueError):
            return
        envelope = {
            "schema": PARSED_SCHEMA,
            "key": key,
            "digest": digest,
            "signature": sign(self.secret, key, digest),
            "notebook": notebook,
        }
        write_json_file(self._file(source), envelope)
