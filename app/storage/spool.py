"""The spool: rows the database has not taken yet, as JSON-lines files in SPOOL_DIR (SPEC §5.4).

Each line is one row, `{"table": "requests", "row": {…}}`, followed by the `ratelimit_samples`
line of that request when it has one (files written before samples were recorded have none),
then its `request_chunks` lines; datetimes are ISO 8601 text. Appends are fsynced per batch.

Files and who may touch them, so that processes sharing the folder (gunicorn workers) never
lose or double a row:
- `spool-<ns>-<pid>.part` is the file a process appends to; it holds an flock on it. When it
  reaches FILE_BYTES, a replay needs it, or the process stops, it is *sealed*: renamed to
  `.jsonl`. A `.part` whose flock is free lost its process (a crash) and is sealed by whoever
  finds it.
- `.jsonl` files are replayed oldest name first, under an flock so that one process replays a
  file at a time, and deleted only after every row in them is committed. A replay cut short
  restarts from the last committed batch (inserts ignore rows already there).
- `rejected-<ns>-<pid>.jsonl` keeps rows the database refused one by one (with the reason):
  never replayed, kept for a person to look at.

Not thread-safe and blocking (file I/O): the writer calls one method at a time, under gevent in
a native thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from peewee import DateTimeField

from app.storage.models import RateLimitSample, Request, RequestChunk
from app.storage.rows import SAMPLE, Item, sample_of

FILE_BYTES = 64 << 20  # rotation: a file's disk space comes back once all of it is replayed
_REQUEST_LINE = b'{"table":"requests"'

_DATETIMES = {model._meta.table_name: [f.name for f in model._meta.sorted_fields
                                       if isinstance(f, DateTimeField)]
              for model in (Request, RequestChunk, RateLimitSample)}


def encode(items: list[Item]) -> bytes:
    """JSON lines of these items: each request row, its rate-limit sample, its chunk rows."""
    lines = []
    for request, chunks in items:
        sample = sample_of(request)
        if sample is None:
            lines.append(_line("requests", request))
        else:
            lines.append(_line("requests", {k: v for k, v in request.items() if k != SAMPLE}))
            lines.append(_line("ratelimit_samples", sample))
        lines.extend(_line("request_chunks", chunk) for chunk in chunks)
    return b"".join(lines)


def decode(line: bytes) -> tuple[str, dict[str, Any]]:
    """(table, row) of one line; raises ValueError (or KeyError) when it is not one."""
    record = json.loads(line)
    table, row = record["table"], record["row"]
    for name in _DATETIMES[table]:
        if row.get(name) is not None:
            row[name] = datetime.fromisoformat(row[name])
    return table, row


def _line(table: str, row: dict[str, Any]) -> bytes:
    text = json.dumps({"table": table, "row": row}, ensure_ascii=False, separators=(",", ":"),
                      default=_plain)
    return text.encode("utf-8") + b"\n"


def _plain(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot spool a {type(value).__name__}")


@dataclass
class _Replay:
    path: Path
    handle: IO[bytes]
    offset: int = 0          # first byte not yet committed
    read_to: int = 0         # end of the batch handed out
    at_end: bool = False     # that batch reached the end of the file
    done_rows: int = 0


class Spool:
    """Appends batches, seals and finds files, hands out replay batches in order."""

    def __init__(self, folder: str | Path, file_bytes: int = FILE_BYTES):
        self.folder = Path(folder)
        self.file_bytes = file_bytes
        self.pending = 0          # request rows in the folder's files, not yet replayed
        self.skipped_lines = 0    # unreadable lines met while replaying (torn by a crash)
        self.orphans: list[str] = []  # `.part` files sealed for a dead process, to be logged
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._counted: dict[Path, tuple[int, int]] = {}  # bytes counted, request rows in them
        self._replay: _Replay | None = None

    # ---------------------------------------------------------------- appending

    def append(self, items: list[Item]) -> int:
        """Write the items durably (flush + fsync); returns the request rows written.

        Raises OSError (a full disk, a folder that cannot be written); nothing half-written is
        left behind: the file is cut back to where it was.
        """
        data = encode(items)
        if self._fd is None or self._size >= self.file_bytes:
            self._open_new()
        fd, before = self._fd, self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, before)
            except OSError:
                self.seal()  # cannot even cut it back: a torn line, skipped at replay
            raise
        self._size += len(data)
        counted = self._counted.get(self._path, (0, 0))[1] + len(items)
        self._counted[self._path] = (self._size, counted)
        self.pending += len(items)
        return len(items)

    def _open_new(self) -> None:
        self.seal()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"spool-{time.time_ns():020d}-{os.getpid()}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._path, self._size = fd, path, 0

    def seal(self) -> None:
        """Close the file being appended to, making it replayable (an empty one is removed)."""
        if self._fd is None:
            return
        fd, path, self._fd, self._path = self._fd, self._path, None, None
        try:
            if self._size:
                os.rename(path, path.with_suffix(".jsonl"))
                self._counted[path.with_suffix(".jsonl")] = self._counted.pop(path, (0, 0))
            else:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # releases the flock only now: nobody claims it mid-rename

    def reject(self, items: list[Item], reason: str) -> None:
        """Keep rows the database refused, with the reason, out of the replay."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rejected-{time.time_ns():020d}-{os.getpid()}.jsonl"
        with open(path, "ab") as out:
            out.write(json.dumps({"reason": reason}).encode() + b"\n" + encode(items))
            out.flush()
            os.fsync(out.fileno())

    # ---------------------------------------------------------------- finding and counting

    def scan(self) -> int:
        """Seal orphaned `.part` files, count the rows of every file; returns `pending`."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            names = []
        for name in names:
            path = self.folder / name
            if name.startswith("spool-") and name.endswith(".part") and path != self._path:
                self._claim(path)
        files = [p for p in self.folder.glob("spool-*") if p.suffix in (".part", ".jsonl")]
        self._counted = {path: self._count(path) for path in files}
        self.pending = sum(rows for _, rows in self._counted.values())
        if self._replay is not None and self._replay.path in self._counted:
            self.pending -= self._replay.done_rows
        return self.pending

    def _claim(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive and appending
            return
        try:
            if os.fstat(fd).st_size:
                os.rename(path, path.with_suffix(".jsonl"))
                self.orphans.append(path.name)
            else:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass  # sealed by another process meanwhile
        finally:
            os.close(fd)

    def _count(self, path: Path) -> tuple[int, int]:
        """(bytes counted, request rows), reading only what was added since the last count."""
        counted, rows = self._counted.get(path, (0, 0))
        try:
            size = path.stat().st_size
            if size == counted:
                return counted, rows
            if size < counted:
                counted, rows = 0, 0
            with open(path, "rb") as source:
                source.seek(counted)
                for line in source:
                    if not line.endswith(b"\n"):
                        break  # still being written: counted next time
                    counted += len(line)
                    rows += line.startswith(_REQUEST_LINE)
        except FileNotFoundError:
            return 0, 0
        return counted, rows

    # ---------------------------------------------------------------- replaying

    def next_batch(self, limit: int) -> list[Item] | None:
        """Up to `limit` requests (with their samples and chunks) from the oldest sealed file,
        after the last committed batch; None when no file is ready. Call `committed` once
        written."""
        replay = self._replay or self._open_oldest()
        if replay is None:
            return None
        source = replay.handle
        source.seek(replay.offset)
        items: list[Item] = []
        position, replay.at_end = replay.offset, False
        while True:
            line = source.readline()
            if not line.endswith(b"\n"):  # the end, or a line torn by a crash
                replay.at_end = True
                self.skipped_lines += bool(line)
                break
            if line.startswith(_REQUEST_LINE) and len(items) >= limit:
                break
            position += len(line)
            try:
                table, row = decode(line)
            except (ValueError, KeyError, TypeError):
                self.skipped_lines += 1
                continue
            if table == "requests":
                items.append((row, []))
            elif not items or row.get("request_id") != items[-1][0].get("id"):
                self.skipped_lines += 1
            elif table == "ratelimit_samples":
                items[-1][0][SAMPLE] = row
            else:
                items[-1][1].append(row)
        replay.read_to = position
        return items

    def committed(self, rows: int) -> None:
        """The last batch is in the database: move past it; delete the file once all is."""
        replay = self._replay
        if replay is None:
            return
        replay.offset = replay.read_to
        replay.done_rows += rows
        self.pending = max(0, self.pending - rows)
        if replay.at_end:
            self._replay = None
            self._counted.pop(replay.path, None)
            try:
                replay.path.unlink(missing_ok=True)
            finally:
                replay.handle.close()

    def _open_oldest(self) -> _Replay | None:
        for attempt in range(2):
            for path in sorted(self.folder.glob("spool-*.jsonl")):
                try:
                    handle = open(path, "rb")  # held across batches, with its flock
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()  # another process replays it
                    continue
                if not path.exists():  # replayed and deleted by another process meanwhile
                    handle.close()
                    continue
                self._replay = _Replay(path, handle)
                return self._replay
            if attempt == 0 and self._size:
                self.seal()  # only the file being appended to is left: replay it too
            else:
                return None
        return None

    def close(self) -> None:
        """Seal the file being appended to and let go of the one being replayed."""
        try:
            self.seal()
        finally:
            if self._replay is not None:
                self._replay.handle.close()
                self._replay = None
