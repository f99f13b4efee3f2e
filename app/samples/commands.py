"""`flask --app wsgi samples …`: list, show and export the collected test samples.

Every failure (no such sample, an empty folder, an unreadable file) is one line and exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app

from app.commandline import Group
from app.samples.files import SampleError, find_sample, load_sample, sample_paths, write_json
from app.samples.fixture import NotReplayable, fixture_of

samples = Group("samples", help="Test samples collected with COLLECT_TEST_SAMPLES=true (one JSON "
                                "file per exchange in TEST_SAMPLES_DIR, secrets masked), and "
                                "their export as test fixtures.")

dir_option = click.option(
    "--dir", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None, help="Folder of the samples (default: TEST_SAMPLES_DIR).")

PREVIEW_CHARS = 300


def _folder(folder: Path | None) -> Path:
    return folder or Path(current_app.config["NEXUS_SETTINGS"].test_samples_dir)


def _reported(work, *args):
    try:
        return work(*args)
    except SampleError as err:
        raise click.ClickException(str(err)) from None


@samples.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many samples, newest first.")
@dir_option
def list_samples(limit: int, folder: Path | None) -> None:
    """List the samples, newest first: name, time, request, status, model, stream, tokens."""
    folder = _folder(folder)
    paths = _reported(sample_paths, folder)
    rows = [("NAME", "TIME (UTC)", "REQUEST", "STATUS", "MODEL", "STREAM", "TOKENS IN/OUT")]
    for path in paths[:limit]:
        try:
            rows.append(_row(path.name, load_sample(path)))
        except SampleError:
            rows.append((path.name, "", "(unreadable)", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip())
    if len(paths) > limit:
        click.echo(f"({len(paths) - limit} older sample(s) not shown; see --limit)")


def _row(name: str, sample: dict[str, Any]) -> tuple[str, ...]:
    usage = sample.get("usage") or {}
    tokens = (f"{usage.get('input_tokens', '-')}/{usage.get('output_tokens', '-')}"
              if usage else "")
    when = (sample.get("received_at") or "")[:19].replace("T", " ")
    return (name, when, _target(sample), str(sample.get("status")),
            str(sample.get("model") or ""), "yes" if sample.get("stream") else "no", tokens)


def _target(sample: dict[str, Any]) -> str:
    query = f"?{sample['query']}" if sample.get("query") else ""
    return f"{sample.get('method')} {sample.get('path')}{query}"


@samples.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole sample file instead of "
                                                      "the summary.")
@dir_option
def show(name: str, as_json: bool, folder: Path | None) -> None:
    """Show one sample: NAME is its file name, or a prefix of the name or of the exchange id."""
    folder = _folder(folder)
    path = _reported(find_sample, folder, name)
    sample = _reported(load_sample, path)
    if as_json:
        click.echo(json.dumps(sample, ensure_ascii=False, indent=2))
        return
    for label, value in _summary(path.name, sample):
        click.echo(f"{label:<10}{value}")
    headers = (sample.get("request") or {}).get("headers") or []
    if headers:
        click.echo("Request headers:")
        for header_name, header_value in headers:
            click.echo(f"  {header_name}: {header_value}")


def _summary(name: str, sample: dict[str, Any]) -> list[tuple[str, str]]:
    timing = sample.get("timing") or {}
    usage = sample.get("usage") or {}
    response = sample.get("response") or {}
    account = ", ".join(str(v) for v in (sample.get("account_id"), sample.get("auth_mode")) if v)
    kind = ", ".join(str(v) for v in (sample.get("request_type"), sample.get("model"),
                                      "stream" if sample.get("stream") else None) if v)
    lines = [
        ("Sample", name),
        ("Id", str(sample.get("id"))),
        ("Received", f"{sample.get('received_at')} from {sample.get('domain')}"
                     + (f" ({account})" if account else "")),
        ("Request", _target(sample) + (f"  [{kind}]" if kind else "")),
        ("Status", f"{sample.get('status')} ({sample.get('outcome')}), "
                   f"{len(sample.get('attempts') or [])} attempt(s)"),
        ("Timing", f"{_ms(timing.get('duration_ms'))} total, first byte "
                   f"{_ms(timing.get('first_byte_ms'))}, first token "
                   f"{_ms(timing.get('first_token_ms'))}"),
    ]
    if usage:
        lines.append(("Tokens", f"in {usage.get('input_tokens')}, out "
                                f"{usage.get('output_tokens')}, cache write "
                                f"{usage.get('cache_creation_input_tokens') or 0}, cache read "
                                f"{usage.get('cache_read_input_tokens') or 0}"))
    tools = [str(t.get("name")) for t in sample.get("tool_uses") or [] if isinstance(t, dict)]
    if tools:
        lines.append(("Tools", ", ".join(tools)))
    error = sample.get("error")
    if error:
        lines.append(("Error", f"{error.get('type')}: {error.get('message')}"))
    prompt = _prompt(sample)
    if prompt:
        lines.append(("Prompt", _preview(prompt)))
    reply = _reply(response.get("body"))
    if reply:
        lines.append(("Reply", _preview(reply)))
    if response.get("stream"):
        lines.append(("Events", f"{len(response.get('events') or [])} SSE event(s)"))
    return lines


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _prompt(sample: dict[str, Any]) -> str:
    """The last text of the last user message of a Messages request (Claude Code puts its
    reminders before what the user typed)."""
    body = (sample.get("request") or {}).get("body")
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                texts = [b["text"] for b in content
                         if isinstance(b, dict) and isinstance(b.get("text"), str)]
                return texts[-1] if texts else ""
            return _text(content)
    return ""


def _reply(body: Any) -> str:
    if isinstance(body, dict):
        return _text(body.get("content")) or _text((body.get("error") or {}).get("message"))
    return body if isinstance(body, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(block.get("text", "") for block in content
                        if isinstance(block, dict) and isinstance(block.get("text"), str))
    return ""


@samples.command("export")
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Export every sample of the folder.")
@click.option("--out", "out_dir", metavar="DIR", required=True,
              help="Folder to write the fixtures into (created), one `<sample name>.json` "
                   "each.")
@dir_option
def export(names: tuple[str, ...], everything: bool, out_dir: str, folder: Path | None) -> None:
    """Write samples as test fixtures (request to send, upstream answer to replay, expected
    record): give sample NAMES (file names or id prefixes) or --all."""
    if bool(names) == everything:
        raise click.UsageError("Give sample names or --all (not both).")
    out = Path(out_dir)
    folder = _folder(folder)
    if everything:
        paths = _reported(sample_paths, folder)
    else:
        paths = list(dict.fromkeys(_reported(find_sample, folder, name) for name in names))
        for path in paths:  # named samples: any that cannot be exported fails before writing
            try:
                fixture_of(_reported(load_sample, path), path.stem)
            except NotReplayable as err:
                raise click.ClickException(f"Cannot export {path.name}: {err}.") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"Cannot create {out}: {err.strerror or err}.") from None
    written, skipped = 0, []
    # On stderr, as `conversations relink` does: stdout keeps only the result line.
    with click.progressbar(paths, label="Exporting", file=sys.stderr) as bar:
        for path in bar:
            try:
                fixture = fixture_of(_reported(load_sample, path), path.stem)
            except (NotReplayable, click.ClickException) as err:
                skipped.append(f"{path.name}: {_message(err)}")
                continue
            try:
                write_json(out / path.name, fixture)
            except OSError as err:
                raise click.ClickException(f"Cannot write {out / path.name}: "
                                           f"{err.strerror or err}.") from None
            written += 1
    for line in skipped:
        click.echo(f"skipped {line}", err=True)
    if not written:
        raise click.ClickException(f"No sample could be exported ({len(skipped)} skipped).")
    click.echo(f"Exported {written} fixture(s) to {out}"
               + (f" ({len(skipped)} skipped)." if skipped else "."))


def _message(err: Exception) -> str:
    return err.format_message() if isinstance(err, click.ClickException) else str(err)
