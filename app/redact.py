"""Masking of secrets before anything is stored or logged (SPEC §3.2).

`mask_text` masks every secret form wherever it appears in a string:

- Anthropic keys and tokens (`sk-ant-api03-…`, `sk-ant-oat01-…`, `sk-ant-ort01-…`) become
  `sk-ant-…WXYZ` (the last four), our client keys `cnp_live_…` become `cnp_live_…WXYZ`;
- the value under a secret-looking name (`api_key`, `x-api-key`, `refresh_token`, `password`,
  `cookie`, `session`, `authorization`, `client_secret`, `*_token`…, matched as a whole name)
  becomes `[redacted]`, in JSON (`"key": "v"`, also JSON-escaped inside a JSON string:
  `\\"key\\": \\"v\\"`), Python reprs (`'key': 'v'`, `('key', 'v')`), query strings and form
  bodies (`key=v&…`), and header-like text (`x-api-key: v`, `Cookie: a=b; c=d`);
- `Bearer <token>` and `Basic <user:password in base64>` anywhere become `Bearer [redacted]`.

A value already masked (`[redacted]`, `…WXYZ`, `sk-ant-…WXYZ`) is kept, so masking twice
changes nothing. It runs on every log line and every stored body: each family of patterns runs
only when a plain substring test says it could match, and text with no quote, `=`, `:`,
backslash, space or tab (ids, model names, numbers) holds no name/value pair nor scheme: only
the key forms are looked for there.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "set-cookie",
                            "proxy-authorization", "x-dashboard-key"})

# Anthropic keys and OAuth tokens: sk-ant-api03-…, sk-ant-oat01-…, sk-ant-ort01-…
_ANTHROPIC_SECRET = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")
_CLIENT_KEY = re.compile(r"cnp_live_[A-Za-z0-9_\-]+")  # `keys generate` (app/cli.py)
_MASKED = re.compile(r"(?:sk-ant-|cnp_live_)?…[A-Za-z0-9_\-]{0,4}|\[redacted\]")

# A secret-looking name: optional `client_`, `x-`, `access` (camelCase) parts, then one of the
# endings below, and nothing after it: `input_tokens`, `session_id`, `tokens` are not secrets.
# Each part can be cut from a name one way only, or failing names would backtrack for ever.
_NAME = (r"(?:[A-Za-z0-9]+[-_]|(?-i:[A-Z]?[a-z0-9]+(?=[A-Z])))*"
         r"(?:api[-_]?key|(?:dashboard|private|secret|access)[-_]?key"
         r"|(?:access|refresh|id|auth)?token|(?:client)?secret|password|passwd"
         r"|code[-_]?verifier|authorization|cookie|session)"
         r"(?![A-Za-z0-9_\-])")
# The endings searched for (as bytes: see mask_text); `passw` is password and passwd at once.
_NAME_ENDINGS = (b"key", b"token", b"secret", b"passw", b"verifier", b"authorization",
                 b"cookie", b"session")
# Header names (besides `*authorization` and `*cookie`) masked in `name: value` text.
_HEADER = r"(?:[A-Za-z0-9]+-)*(?:api-key|auth-token|dashboard-key)"
_AFTER_NAME = frozenset(b"\"'\\=:")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_NAME_MAX = 128
_FLAGS = re.IGNORECASE | re.ASCII

_SECRET_NAME = re.compile(_NAME, _FLAGS)
# "key": "v" / \"key\": \"v\" / 'key': 'v' / ('key', 'v') / ["x-api-key", "v"] (a list
# only for header names: `"required": ["token", "url"]` holds no secret); an unclosed value (a
# line cut short) is masked to the end of the line.
_QUOTED = re.compile(
    r"(?:(?P<open>\(\s*)|(?P<list>\[\s*))?(?P<q>\\*[\"'])"
    r"(?(list)(?:(?:[A-Za-z0-9]+-)*(?:authorization|cookie)|" + _HEADER + r")|" + _NAME + r")"
    r"(?P=q)\s*(?:[:=]|(?(open),|(?(list),|(?!))))\s*"
    r"(?P<vq>\\*[\"'])(?P<v>.*?)(?:(?P=vq)|$)", _FLAGS | re.MULTILINE)
# key=v in query strings, form bodies, cookies and `k=v` log fields.
# A value never starts with the name of another secret (`Authorization: x-api-key: v`): that
# name's own match masks it.
_NOT_A_NAME = r"(?!" + _NAME + r"[:=])"
_ASSIGNED = re.compile(r"(?<![A-Za-z0-9_\-])" + _NAME + r"=" + _NOT_A_NAME
                       + r"(?P<v>[^\s&;,\"'\\<>()\[\]{}]+)", _FLAGS)
# x-api-key: v / Authorization: Bearer v (a scheme, then one token) / Cookie: a=b; c=d (to
# the end of the line, or of the JSON string it sits in).
_HEADER_LINE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:(?P<cookie>(?:[A-Za-z0-9]+-)*cookie)"
    r"|(?P<auth>(?:[A-Za-z0-9]+-)*authorization)|" + _HEADER + r"):[ \t]*+"
    r"(?P<v>(?(cookie)[^\r\n\"'\\()\[\]{}]+|(?(auth)(?:[A-Za-z][A-Za-z0-9_\-]*[ \t]+)?)"
    r"(?!(?:bearer|basic)\b)" + _NOT_A_NAME + r"[^\s\"'\\,;()<>\[\]{}]+))", _FLAGS)
# A token has a digit or punctuation: `bearer tokens`, `Bearer authentication` are words.
_BEARER = re.compile(r"\bbearer[ \t]+(?P<v>(?=[A-Za-z]*[0-9\-._~+/=])[A-Za-z0-9\-._~+/]+=*)",
                     _FLAGS)
_BASIC = re.compile(r"\bbasic[ \t]+(?!basic\b)(?P<v>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])",
                    _FLAGS)
_SCHEME = re.compile(r"(?:bearer|basic)[ \t]+", _FLAGS)
_DIGITS_AND_MARKS = frozenset("0123456789-._~+/=")
# Every named form needs one of these after its name (_AFTER_NAME) and both schemes a space or
# a tab after the word: text without any of them can only hold the key forms.
_PAIRED = re.compile(r"[\"'\\=: \t]")


def mask_secret(secret: str) -> str:
    """`sk-ant-…` plus the last four characters: enough to tell keys apart, never to use one."""
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"sk-ant-…{tail}"


def _mask_client_key(key: str) -> str:
    tail = key[-4:] if len(key) >= 17 else ""  # eight characters after `cnp_live_`
    return f"cnp_live_…{tail}"


def mask_text(text: str) -> str:
    """The string with every secret form in it masked (see the module docstring)."""
    return _mask(text, None)


def mask_decoded(text: str, utf8: bytes) -> str:
    """`mask_text(text)` of a text just decoded from `utf8`, its exact UTF-8 (a body): the
    same result without encoding the text again."""
    return _mask(text, utf8)


def mask_texts(texts: list[str]) -> list[str]:
    """`[mask_text(t) for t in texts]`, for many short texts (a stream's events): the words
    masking acts on are looked for once in all of them, and only the texts holding one are
    masked (one by one); each search then costs one scan instead of one per text."""
    joined = "\n".join(texts)  # no word looked for holds a line end: none straddles two texts
    low = joined.encode("utf-8", "surrogatepass").lower()
    marks = [at for word in _WORDS for at in _found(low, word)]
    marks += [at for ending in _NAME_ENDINGS for at in _found(low, ending)
              if _named_hit(low, at, ending)]
    if not marks:
        return list(texts)
    if len(low) != len(joined):
        marks = _char_offsets(low, sorted(marks))
    starts = list(itertools.accumulate((len(text) + 1 for text in texts[:-1]), initial=0))
    marked = {bisect.bisect_right(starts, at) - 1 for at in marks}
    return [mask_text(text) if n in marked else text for n, text in enumerate(texts)]


# What mask_text acts on besides the names: the keys (case-sensitive there, so found here
# with some words that are no key: those texts are only masked for nothing) and the schemes.
_WORDS = (b"sk-ant-", b"cnp_live_", b"bearer", b"basic")


def _found(data: bytes, word: bytes) -> Iterator[int]:
    at = data.find(word)
    while at != -1:
        yield at
        at = data.find(word, at + len(word))


def _named_hit(low: bytes, at: int, ending: bytes) -> bool:
    """An ending found at `at` is followed by what a name's value follows: a quote, `=`, `:`."""
    after = at + len(ending)
    if ending == b"passw":  # password or passwd
        after += 3 if low.startswith(b"ord", after) else 1 if \
            low.startswith(b"d", after) else len(low)
    return after < len(low) and low[after] in _AFTER_NAME


def _mask(text: str, utf8: bytes | None) -> str:
    # The keys first: masked, they cannot be mistaken for a name any more (`sk-ant-x-api-key:`).
    if "sk-ant-" in text:
        text, utf8 = _ANTHROPIC_SECRET.sub(lambda m: mask_secret(m.group(0)), text), None
    if "cnp_live_" in text:
        text, utf8 = _CLIENT_KEY.sub(lambda m: _mask_client_key(m.group(0)), text), None
    if _PAIRED.search(text) is None:
        return text
    # Lowered as UTF-8 bytes: `bytes.lower` folds ASCII letters only, exactly what the patterns
    # (re.ASCII) compare, and at C speed where `str.lower` of a body holding one emoji takes
    # eight times longer. An ASCII needle matches UTF-8 only at ASCII bytes, so a hit is a hit.
    low = (utf8 if utf8 is not None else text.encode("utf-8", "surrogatepass")).lower()
    text = _mask_named(text, low)
    if b"bearer" in low:
        text = _BEARER.sub(_masked_bearer, text)
    if b"basic" in low:
        text = _BASIC.sub(_masked_basic, text)
    return text


def _mask_named(text: str, low: bytes) -> str:
    """Mask the values under secret-looking names. Scanning a 64 KB body with the patterns
    costs milliseconds; finding the names' endings first (plain `bytes.find` in the lowered
    UTF-8 of `text`) and trying the patterns only where one is followed by a quote, `=` or
    `:` costs a tenth of that."""
    hits = sorted(at for ending in _NAME_ENDINGS for at in _found(low, ending)
                  if _named_hit(low, at, ending))
    if not hits:
        return text
    if len(low) != len(text):  # byte offsets to character offsets
        hits = _char_offsets(low, hits)
    parts, done = [], 0
    for at in hits:
        if at < done:
            continue  # inside a value already masked
        match = _named_secret_at(text, _name_start(text, at, done), done)
        if match is not None:
            parts += (text[done:match.start()], _masked_value(match))
            done = match.end()
    parts.append(text[done:])
    return "".join(parts)


def _char_offsets(data: bytes, offsets: list[int]) -> list[int]:
    """Sorted byte offsets of UTF-8 `data` (each at an ASCII byte) as character offsets."""
    out, byte, char = [], 0, 0
    for at in offsets:
        char += len(data[byte:at].decode("utf-8", "surrogatepass"))
        byte = at
        out.append(char)
    return out


def _name_start(text: str, at: int, floor: int) -> int:
    start = at
    while start > floor and at - start < _NAME_MAX and text[start - 1] in _NAME_CHARS:
        start -= 1
    return start


def _named_secret_at(text: str, start: int, floor: int) -> re.Match | None:
    """The secret-form match whose name begins at `start`, if any."""
    quote = start
    if quote > floor and text[quote - 1] in "\"'":
        quote -= 1
        while quote > floor and text[quote - 1] == "\\":
            quote -= 1
        opener = quote
        while opener > floor and text[opener - 1] in " \t\r\n\f\v":
            opener -= 1
        match = None
        if opener > floor and text[opener - 1] in "([":
            match = _QUOTED.match(text, opener - 1)
        match = match or _QUOTED.match(text, quote)
        if match is not None:
            return match
    return _HEADER_LINE.match(text, start) or _ASSIGNED.match(text, start)


@lru_cache(maxsize=1024)  # header names: a few dozen, seen on every request and row
def is_secret_name(name: str) -> bool:
    """True for a name whose value is a secret: `api_key`, `X-Auth-Token`, `refreshToken`…"""
    return _SECRET_NAME.fullmatch(name) is not None


def _masked_value(match: re.Match) -> str:
    start, end = match.span("v")
    whole = match.group(0)
    base = match.start()
    return whole[:start - base] + _mask_value(match.group("v")) + whole[end - base:]


def _mask_value(value: str) -> str:
    """A secret value masked, keeping an auth scheme and the sk-ant/cnp_live forms."""
    scheme = _SCHEME.match(value)
    prefix = scheme.group(0) if scheme else ""
    rest = value[len(prefix):]
    if not rest or _MASKED.fullmatch(rest):
        return value
    if _ANTHROPIC_SECRET.fullmatch(rest):
        return prefix + mask_secret(rest)
    if _CLIENT_KEY.fullmatch(rest):
        return prefix + _mask_client_key(rest)
    return prefix + REDACTED


def _masked_bearer(match: re.Match) -> str:
    token = match.group("v")
    kept = len(token.rstrip("."))
    token, tail = token[:kept], token[kept:]  # a sentence's full stop is not part of it
    if (len(token) < 6 or token.startswith(("sk-ant-", "cnp_live_"))
            or _DIGITS_AND_MARKS.isdisjoint(token)):
        return match.group(0)
    return match.group(0)[:match.start("v") - match.start()] + REDACTED + tail


def _masked_basic(match: re.Match) -> str:
    encoded = match.group("v")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    if b":" not in decoded:  # `Basic information`: a word, not user:password
        return match.group(0)
    return match.group(0)[:match.start("v") - match.start()] + REDACTED


def mask_header_value(name: str, value: str) -> str:
    """A header value as it may be stored: credentials reduced to their scheme and last 4."""
    lower = name.lower()
    if lower not in SECRET_HEADERS and not is_secret_name(name):
        return mask_text(value)
    scheme, sep, token = value.partition(" ")
    if sep and lower in ("authorization", "proxy-authorization"):
        return f"{scheme} {_mask_token(token)}"
    if lower in ("cookie", "set-cookie"):
        return REDACTED
    return _mask_token(value)


def _mask_token(token: str) -> str:
    if token.startswith("sk-ant-"):
        return mask_secret(token)
    return f"…{token[-4:]}" if len(token) >= 12 else REDACTED


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with every secret masked."""
    return [(name, mask_header_value(name, value)) for name, value in headers]
