"""Client faults: hang-ups at every phase of an exchange, slow readers, 500 streams at once.

A client that goes away is recorded once as `client_disconnected`, and the upstream connection
is closed (the upstream stops generating). A client reading 1 byte/s holds the relay back
rather than making the proxy buffer the upstream's answer: its memory stays within a bound.
Single hang-ups are pinned down in tests/integration/test_streams.py (logs, timing); here they
come several at a time and the rows are counted.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes.upstream import ErrorReply, RawReply, Reply, text_block
from tests.reliability.clients import (
    Crowd,
    big_stream,
    message,
    request_bytes,
    rss_kib,
    sse_events,
)

SSE = [("Content-Type", "text/event-stream; charset=utf-8"), ("Transfer-Encoding", "chunked")]
CLIENTS = 4


@pytest.fixture(scope="module")
def proxy(module_proxy, engine_url):
    return module_proxy(DATABASE_URL=engine_url, STORAGE_BATCH_INTERVAL_MS="50")


def open_request(proxy, book, body: dict, *, cut_body: bool = False) -> socket.socket:
    entry = book.new()
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    if cut_body:  # the head announces the whole body; a third of it is sent
        sock.sendall(request_bytes(proxy.port, entry, data[: len(data) // 3], length=len(data)))
    else:
        sock.sendall(request_bytes(proxy.port, entry, data))
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {data[:300]!r}"
        data += chunk
    return data


def hang_up(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def check_disconnected(book, engine_url) -> None:
    audit = book.audit(engine_url)
    for entry in book.sent.values():
        row = audit.row(entry.tag)
        assert (row["outcome"], row["status"]) == ("client_disconnected", "client_disconnected")


def upstream_let_go(received) -> None:
    """Each upstream exchange ended without being completed: the proxy closed it."""
    for rec in received:
        assert rec.wait_finished(timeout=10), "the upstream connection was never closed"
        assert not rec.completed


def test_hang_up_during_the_body_upload(proxy, engine_url, ledger, upstream):
    book = ledger("client: hang-up during body upload")
    socks = [open_request(proxy, book, message(stream=n % 2 == 0, text="y" * 5000),
                          cut_body=True) for n in range(CLIENTS)]
    time.sleep(0.2)  # the proxy is reading the bodies
    hang_up(socks)
    check_disconnected(book, engine_url)
    assert upstream.received == [], "a body cut short is never forwarded"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_hang_up_before_the_first_byte(proxy, engine_url, ledger, upstream, stream):
    book = ledger("client: hang-up before first byte")
    upstream.script(*[Reply(delay_s=20) for _ in range(CLIENTS)])  # the upstream "thinks"
    socks = [open_request(proxy, book, message(stream=stream)) for _ in range(CLIENTS)]
    received = upstream.wait_for(CLIENTS)
    hang_up(socks)
    check_disconnected(book, engine_url)
    upstream_let_go(received)


def test_hang_up_while_the_proxy_waits_to_retry(proxy, engine_url, ledger, upstream):
    book = ledger("client: hang-up during retry wait")
    upstream.script(*[ErrorReply(529, retry_after=20) for _ in range(CLIENTS)])
    socks = [open_request(proxy, book, message(stream=True)) for _ in range(CLIENTS)]
    upstream.wait_for(CLIENTS)
    time.sleep(0.2)  # the 529s are in: the proxy is waiting out retry-after
    hang_up(socks)
    audit = book.audit(engine_url)
    for entry in book.sent.values():
        row = audit.row(entry.tag)
        assert (row["outcome"], row["attempts"]) == ("client_disconnected", 1)
    time.sleep(0.3)
    assert len(upstream.received) == CLIENTS, "no retry for a client that left"


def test_hang_up_mid_stream(proxy, engine_url, ledger, upstream):
    book = ledger("client: hang-up mid-stream")
    upstream.script(*[Reply(content=[text_block("word " * 300)], event_delay_s=0.05)
                      for _ in range(CLIENTS)])
    socks = [open_request(proxy, book, message(stream=True)) for _ in range(CLIENTS)]
    for sock in socks:
        read_until(sock, b"content_block_delta")
    received = upstream.wait_for(CLIENTS)
    hang_up(socks)
    check_disconnected(book, engine_url)
    upstream_let_go(received)


def test_slow_readers_do_not_make_the_proxy_buffer(start_proxy, ledger, upstream, tmp_path):
    """8 clients read 1 byte/s from 32 MB streams that the upstream sends at once. Buffered,
    that would be 256 MB in the proxy (twice that with the record's copy); relayed at the
    readers' pace, the proxy holds what the readers' sockets took (the kernel's send buffers,
    a few MB each) and its record of it."""
    book = ledger("client: slow readers (1 byte/s)")
    engine_url = f"sqlite:///{tmp_path}/slow.db"  # memory is the point here, not the engine
    proxy = start_proxy(DATABASE_URL=engine_url, STORAGE_BATCH_INTERVAL_MS="50")
    readers, megabytes = 8, 32
    body = big_stream(megabytes)
    upstream.script(Reply())  # warm up, then the baseline
    warm = open_request(proxy, book, message(stream=True))
    while warm.recv(65536):
        pass
    warm.close()
    time.sleep(0.3)
    before = rss_kib(proxy.proc.pid)
    upstream.script(*[RawReply(200, SSE, body) for _ in range(readers)])
    socks = []
    for _ in range(readers):
        entry = book.new()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(request_bytes(proxy.port, entry, json.dumps(message(stream=True)).encode()))
        socks.append(sock)
    upstream.wait_for(readers + 1)
    peak = before
    for _ in range(3):  # 1 byte a second from each
        for sock in socks:
            assert sock.recv(1)
        time.sleep(1.0)
        peak = max(peak, rss_kib(proxy.proc.pid))
    growth_mib = (peak - before) / 1024
    print(f"\nproxy RSS {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB at most with "
          f"{readers} slow readers of {megabytes} MB streams (+{growth_mib:.1f} MiB)")
    assert growth_mib < 12 * readers, f"the proxy grew {growth_mib:.0f} MiB for slow readers"
    hang_up(socks)
    audit = book.audit(engine_url)
    outcomes = sorted(audit.row(entry.tag)["outcome"] for entry in book.sent.values())
    assert outcomes == ["client_disconnected"] * readers + ["completed"]


def test_500_concurrent_streams(proxy, engine_url, ledger, upstream):
    book = ledger("client: 500 concurrent streams")
    count = 500
    upstream.script(*[Reply(content=[text_block("one two three four five six seven eight "
                                                "nine ten eleven twelve")],
                            event_delay_s=0.1) for _ in range(count)])
    body = json.dumps(message(stream=True)).encode()
    crowd = Crowd(proxy.port, [(entry, request_bytes(proxy.port, entry, body))
                               for entry in (book.new() for _ in range(count))])
    with ThreadPoolExecutor(1) as pool:  # the crowd reads in its own thread
        crowd = pool.submit(crowd.run, 120).result()
    assert crowd.errors == {}
    sent_by_tag = {rec.header("user-agent").split("/", 1)[1]: rec
                   for rec in upstream.wait_for(count)}
    for entry in book.sent.values():
        assert entry.status == 200, (entry.status, entry.body[:300])
        assert entry.body == sent_by_tag[entry.tag].response_body, "byte for byte"
        assert sse_events(entry.body)[-1][0] == "message_stop"
    audit = book.audit(engine_url, timeout=60)
    assert {audit.row(entry.tag)["outcome"] for entry in book.sent.values()} == {"completed"}
