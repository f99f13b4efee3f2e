"""Real Claude Code 2.1.197 requests replayed through the proxy reach the upstream unchanged:
body, query string and every non-hop-by-hop header (name case, order and value)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

TRAFFIC = Path(__file__).resolve().parents[1] / "data" / "traffic"
FILES = sorted(p for p in TRAFFIC.rglob("*.json"))
DROPPED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
           "upgrade", "trailer"}


def _body_bytes(sample: dict) -> bytes:
    if sample["body"] is None:
        return b""
    # The capture kept the parsed body; its compact form has the captured length.
    return json.dumps(sample["body"], ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(TRAFFIC)) for p in FILES])
def test_replayed_request_reaches_upstream_unchanged(proxy, upstream, path):
    sample = json.loads(path.read_text())
    body = _body_bytes(sample)
    headers = [(k, v) for k, v in sample["headers"].items()
               if k.lower() not in ("host", "content-length")]
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest(sample["method"], sample["raw_path"], skip_host=True,
                    skip_accept_encoding=True)
    conn.putheader("Host", f"127.0.0.1:{proxy.url.rsplit(':', 1)[1]}")
    for name, value in headers:
        conn.putheader(name, value)
    if body or sample["method"] == "POST":
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    answer = response.read()
    conn.close()

    if sample["method"] == "HEAD" and sample["path"] == "/":
        assert response.status == 200  # answered by the proxy itself
        assert not upstream.received
        return
    assert response.status == 200, answer[:500]
    assert response.getheader("x-nexus-request-id")
    received = upstream.wait_for(1)[0]
    assert received.method == sample["method"]
    assert received.raw_path == sample["raw_path"]  # query string untouched (?beta=true)
    assert received.body == body
    expected = [(k, v) for k, v in headers if k.lower() not in DROPPED]
    forwarded = [(k, v) for k, v in received.headers if k.lower() not in DROPPED]
    assert forwarded == expected
    if sample["body"] and sample["body"].get("stream"):
        assert answer == received.response_body
