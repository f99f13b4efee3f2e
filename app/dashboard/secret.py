"""The key that signs dashboard sessions: SECRET_KEY, or one generated once and kept on disk."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_PATH = Path("data") / "secret_key"


def secret_key(configured: str | None, path: Path = DEFAULT_PATH) -> str:
    """`configured`, else the key in `path`, created (mode 0600) on first use. Processes
    starting together agree: the key is written aside and linked into place, which only one of
    them can do; the others read the winner's."""
    if configured:
        return configured
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    key = path.read_text().strip()
    if len(key) < 16:
        raise ValueError(f"{path} holds no usable key; delete it to have a new one made")
    return key
