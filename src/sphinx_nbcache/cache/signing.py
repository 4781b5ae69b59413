"""Secrets and HMAC signatures: what tells an entry this project wrote from a forged one.

A checksum only tells damage; anyone who can write the cache folder can recompute it. A
signature needs a secret the writer of a forged entry does not have: the project's own
(``NBCACHE_SECRET``, or the variable ``nbcache_secret_env`` names), or, for what must never
be shared (the readings of text notebooks, which say what code runs), a secret that never
leaves this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

MACHINE_SECRET_BYTES = 32


def secret_from_env(name: str | None) -> bytes | None:
    """The secret in environment variable ``name``; None when unset or empty."""
    value = os.environ.get(name) if name else None
    return value.encode("utf-8") if value else None


def state_folder() -> Path:
    """Where this user keeps sphinx-nbcache's local state: never inside a project, so a
    cache folder restored from elsewhere cannot bring it along."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "sphinx-nbcache"


def machine_secret() -> bytes:
    """A random secret created once per user and machine, readable by that user only; a
    new one for this process when it cannot be kept (then nothing signed with it outlives
    the process, which costs time, never trust)."""
    path = state_folder() / "secret"
    with contextlib.suppress(OSError):
        found = path.read_bytes()
        if len(found) == MACHINE_SECRET_BYTES:
            return found
    secret = secrets.token_bytes(MACHINE_SECRET_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f"secret.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secret)
        temporary.replace(path)
    except OSError:
        return secret
    return path.read_bytes()  # another process may have written its own first


def sign(secret: bytes, *parts: str) -> str:
    """HMAC-SHA256 of ``parts``, each told apart from the next."""
    message = "\0".join(parts).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(secret: bytes, signature: object, *parts: str) -> bool:
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(secret, *parts))
