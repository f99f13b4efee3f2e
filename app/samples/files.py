"""The folder of samples (TEST_SAMPLES_DIR): one JSON file per exchange, written atomically,
listed newest first, found by file name or id prefix, read back. No Flask."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from app.samples.sample import FORMAT, file_name

HINT = "set COLLECT_TEST_SAMPLES=true and send requests through the proxy"
_STRING = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\[\s+({_STRING}),\s+({_STRING})\s+\]")


class SampleError(Exception):
    """A sample that cannot be found or read; the message is one line for the user."""


def write_sample(folder: Path, sample: dict[str, Any]) -> Path:
    """Write a sample under its file name: a temp file renamed into place, so a reader never
    sees half a file. Creates the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(sample)
    temp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        temp.write_text(dumps(sample), encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write any JSON document atomically (fixtures)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(dumps(document), encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def dumps(document: dict[str, Any]) -> str:
    """Indented JSON with each header pair on one line (`["name", "value"]`), for people."""
    return _PAIR.sub(r"[\1, \2]", json.dumps(document, ensure_ascii=False, indent=2)) + "\n"


def sample_paths(folder: Path) -> list[Path]:
    """Every sample file of the folder, newest first (names start with the time); raises
    SampleError when there is none."""
    if not folder.is_dir():
        raise SampleError(f"No samples: {folder} does not exist ({HINT}).")
    paths = sorted((p for p in folder.glob("*.json") if not p.name.startswith(".")),
                   key=lambda p: p.name, reverse=True)
    if not paths:
        raise SampleError(f"No samples in {folder} ({HINT}).")
    return paths


def find_sample(folder: Path, name: str) -> Path:
    """The sample called `name`: its file name (with or without `.json`), a path to it, or a
    prefix of its file name or of its exchange id. Raises SampleError when none or several
    match."""
    given = Path(name)
    if given.suffix == ".json" and given.is_file() and given.parent != Path("."):
        return given
    paths = sample_paths(folder)
    for path in paths:
        if name in (path.name, path.stem):
            return path
    found = [p for p in paths if p.name.startswith(name)] or _by_id(paths, name.lower())
    if len(found) == 1:
        return found[0]
    if not found:
        raise SampleError(f"No sample {name!r} in {folder} (see `samples list`).")
    shown = ", ".join(p.name for p in found[:3]) + (", …" if len(found) > 3 else "")
    raise SampleError(f"{name!r} matches {len(found)} samples ({shown}): give more of the "
                      "name or id.")


def _by_id(paths: list[Path], prefix: str) -> list[Path]:
    if len(prefix) < 4:
        return []
    # The file name ends with the id's first 8 characters: read only the files that may match.
    candidates = [p for p in paths if _id8(p).startswith(prefix[:8])]
    if len(prefix) <= 8:
        return candidates
    return [p for p in candidates if str(_peek_id(p)).lower().startswith(prefix)]


def _id8(path: Path) -> str:
    return path.stem.rsplit("_", 1)[-1].lower()


def _peek_id(path: Path) -> str | None:
    try:
        return load_sample(path).get("id")
    except SampleError:
        return None


def load_sample(path: Path) -> dict[str, Any]:
    """A sample file's document; raises SampleError when it cannot be read or is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SampleError(f"Cannot read {path}: {err.strerror or err}.") from None
    except ValueError as err:
        raise SampleError(f"Cannot read {path}: not valid JSON ({err}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SampleError(f"Cannot read {path}: not a test sample (no \"format\": "
                          f"\"{FORMAT}\").")
    return document
