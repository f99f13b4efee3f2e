"""Clients that misbehave on purpose, on raw sockets: they stop at a chosen phase, read slowly,
or open hundreds of streams at once from one thread. And the proxy's memory, from /proc."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

import requests

from tests.fakes.sse import build_sse, sse_event
from tests.fakes.upstream import Reply, text_block
from tests.reliability.tally import Ledger, Sent

KEY = "sk-ant-api03-reliability-0000000000000000"


def message(stream: bool, text: str = "Tell me a story", **extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": text}], **extra}


def request_bytes(port: int, entry: Sent, body: bytes, *, path: str = "/v1/messages",
                  length: int | None = None, close: bool = True) -> bytes:
    """A POST's head and body as a client sends them, tagged for the ledger."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nx-api-key: {KEY}\r\n"
            f"anthropic-version: 2023-06-01\r\nUser-Agent: {Ledger.agent(entry)}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


def post(proxy, ledger: Ledger, body: dict | bytes, *, timeout: float = 60,
         path: str = "/v1/messages", headers: dict | None = None,
         session: requests.Session | None = None) -> requests.Response | None:
    """One tagged request with `requests`; the answer is read whole and noted in the ledger.
    None when the connection broke before a complete answer (noted as unanswered)."""
    entry = ledger.new()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        response = (session or requests).post(
            proxy.url + path, data=data, timeout=timeout, headers={
                "x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type":
                "application/json", "user-agent": Ledger.agent(entry), **(headers or {})})
        entry.body = response.content
    except requests.RequestException:
        return None
    entry.status, entry.request_id = response.status_code, response.headers.get(
        "x-nexus-request-id")
    return response


def big_stream(megabytes: int) -> bytes:
    """A valid event stream of about this size: 16 KB text deltas between start and stop."""
    head, *_ = build_sse(message(stream=True), Reply(content=[text_block("x")]))
    delta = sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": "z" * 16000}})
    count = (megabytes << 20) // len(delta)
    opened = sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
    closing = sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}) + \
        sse_event("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": count}})
    return head + opened + delta * count + closing + sse_event("message_stop",
                                                               {"type": "message_stop"})


def assert_anthropic_error(response: requests.Response, status: int, error_type: str) -> dict:
    """The proxy's (or the upstream's) error in Anthropic's shape, with this status and type."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def sse_events(data: bytes) -> list[tuple[str | None, dict | str]]:
    """(event name, data parsed when JSON) of each event in an SSE body."""
    out = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, lines = None, []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].strip())
        if name is None and not lines:
            continue
        try:
            out.append((name, json.loads("\n".join(lines))))
        except ValueError:
            out.append((name, "\n".join(lines)))
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def head_and_body(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and de-chunked body of a raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(data[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


@dataclass
class Crowd:
    """Many requests at once from one thread (a selector, no thread per client): each sends its
    request whole, reads its answer to the end (`Connection: close`), and keeps it."""

    port: int
    requests: list[tuple[Sent, bytes]]
    answers: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def run(self, timeout: float = 120.0) -> Crowd:
        selector = selectors.DefaultSelector()
        pending: dict[socket.socket, tuple[Sent, bytearray]] = {}
        for entry, data in self.requests:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.sendall(data)
            sock.setblocking(False)
            pending[sock] = (entry, bytearray())
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                entry, buffer = pending[sock]
                try:
                    chunk = sock.recv(262144)
                except BlockingIOError:
                    continue
                except OSError as err:
                    self.errors[entry.tag] = repr(err)
                    chunk = b""
                if chunk:
                    buffer += chunk
                    continue
                selector.unregister(sock)
                sock.close()
                del pending[sock]
                self.answers[entry.tag] = bytes(buffer)
        for sock, (entry, _) in pending.items():
            self.errors[entry.tag] = "no end of answer in time"
            sock.close()
        selector.close()
        for entry, _ in self.requests:
            if entry.tag in self.answers and self.answers[entry.tag]:
                status, headers, body = head_and_body(self.answers[entry.tag])
                entry.status, entry.request_id, entry.body = \
                    status, headers.get("x-nexus-request-id"), body
        return self


class Load:
    """Steady traffic through a proxy until `stop()`: `workers` threads, each sending streams
    and plain calls in turn on a keep-alive session, every request in the ledger."""

    def __init__(self, proxy, ledger: Ledger, workers: int = 6):
        self.proxy, self.ledger = proxy, ledger
        self.answers: list[requests.Response | None] = []
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,), daemon=True)
                         for n in range(workers)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _work(self, number: int) -> None:
        session = requests.Session()
        turn = number
        while not self._stopping.is_set():
            turn += 1
            self.answers.append(post(self.proxy, self.ledger, message(stream=turn % 2 == 0),
                                     session=session))
        session.close()

    def wait_sent(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more requests have been answered (bounded)."""
        target = len(self.answers) + count
        deadline = time.monotonic() + timeout
        while len(self.answers) < target:
            assert time.monotonic() < deadline, f"load stalled at {len(self.answers)}"
            time.sleep(0.02)

    def stop(self) -> list[requests.Response | None]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.answers


def health(proxy) -> dict:
    """The proxy's /health report."""
    return requests.get(proxy.url + "/health", timeout=10).json()


def eventually(proxy, check, what: str, timeout: float = 30.0) -> dict:
    """The first /health report `check` accepts; fails with the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        report = health(proxy)
        if check(report):
            return report
        assert time.monotonic() < deadline, f"never {what}: {report}"
        time.sleep(0.05)
