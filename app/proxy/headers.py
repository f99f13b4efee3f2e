"""Header rules of SPEC §3.2, both ways. Pure functions over lists of (name, value) pairs."""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[str, str]]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-connection", "proxy-authenticate", "proxy-authorization",
})
# Not hop-by-hop by the letter, but about this hop: the body is read before forwarding
# (Expect: 100-continue is answered here), and Host and Content-Length are set anew.
PER_HOP_REQUEST = frozenset({"host", "content-length", "expect"})
CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key"})
OAUTH_BETA = "oauth-2025-04-20"


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in `Connection:` are hop-by-hop too (RFC 9110 §7.6.1)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_hop_by_hop(lower_name: str, extra: set[str]) -> bool:
    return lower_name in HOP_BY_HOP or lower_name.startswith("proxy-") or lower_name in extra


def upstream_request_headers(
    client_headers: Iterable[tuple[str, str]],
    *,
    drop_credentials: bool = False,
    add_betas: Iterable[str] = (),
) -> Headers:
    """What goes upstream: the client's headers minus hop-by-hop, Host, Content-Length, Expect.

    `drop_credentials` removes the client's own key when the proxy supplies one; `add_betas`
    are appended to the client's `anthropic-beta` list, never replacing it.
    """
    client_headers = list(client_headers)
    extra = _connection_tokens(client_headers)
    out: Headers = []
    for name, value in client_headers:
        lower = name.lower()
        if _is_hop_by_hop(lower, extra) or lower in PER_HOP_REQUEST:
            continue
        if drop_credentials and lower in CLIENT_CREDENTIALS:
            continue
        out.append((name, value))
    add_betas = [b for b in add_betas if b]
    if add_betas:
        out = _with_betas(out, add_betas)
    return out


def _with_betas(headers: Headers, betas: list[str]) -> Headers:
    for i, (name, value) in enumerate(headers):
        if name.lower() == "anthropic-beta":
            present = [b.strip() for b in value.split(",") if b.strip()]
            merged = present + [b for b in betas if b not in present]
            headers[i] = (name, ",".join(merged))
            return headers
    return [*headers, ("anthropic-beta", ",".join(betas))]


def client_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> Headers:
    """What goes back to the client: the upstream's headers minus hop-by-hop ones."""
    upstream_headers = list(upstream_headers)
    extra = _connection_tokens(upstream_headers)
    return [(n, v) for n, v in upstream_headers if not _is_hop_by_hop(n.lower(), extra)]


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of a header, case-insensitively."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
