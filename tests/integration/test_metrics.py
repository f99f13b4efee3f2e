"""`/metrics` through a real proxy process: a known mix of exchanges, then the scrape's counters,
token sums, histogram counts and writer figures, exactly (SPEC §9.3)."""

from __future__ import annotations

import json
import socket
import time
from collections import defaultdict

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.version import __version__
from tests.fakes.sse import fold_sse
from tests.fakes.upstream import ErrorReply, Reply, text_block
from tests.integration.recording_support import stored

KEY = "sk-ant-api03-metrics-test-0000000000"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
SONNET, OPUS, HAIKU = "claude-sonnet-4-5", "claude-opus-4-8", "claude-haiku-4-5"
TOOLS = [{"name": "read", "description": "Read a file", "input_schema": {"type": "object"}}]


def body(model: str, stream: bool, tools: bool = False) -> dict:
    extra = {"tools": TOOLS} if tools else {}
    return {"model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": "Hello"}], **extra}


def scrape(proxy, **headers) -> dict[str, list]:
    """{family name: [(sample name, labels, value), ...]} of one scrape."""
    response = requests.get(proxy.url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: [(s.name, s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(response.text)}


def values(families: dict, sample: str, *keys: str) -> dict:
    """{label values (in `keys` order): value summed over the other labels} of one sample
    name, zero values left out."""
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    out: dict[tuple, float] = defaultdict(float)
    for name, labels, value in families[family]:
        if name == sample and value:
            out[tuple(labels[k] for k in keys)] += value
    return dict(out)


def disconnect_mid_stream(proxy, model: str) -> str:
    """Start a stream, read until its first text delta, hang up; returns the request id."""
    data = json.dumps(body(model, True)).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
                     f"Content-Type: application/json\r\nx-api-key: {KEY}\r\n"
                     f"anthropic-version: 2023-06-01\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        received = b""
        while b"content_block_delta" not in received:
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            received += chunk
    return received.split(b"x-nexus-request-id: ")[1].split(b"\r\n")[0].decode()


def wait_for(proxy, check, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(proxy)
        if check(families) or time.monotonic() > deadline:
            return families
        time.sleep(0.05)


def test_metrics_count_exactly_what_went_through(start_proxy, upstream, tmp_path):
    url = f"sqlite:///{tmp_path}/nexus.db"
    proxy = start_proxy(DATABASE_URL=url, STORAGE_BATCH_INTERVAL_MS="50")
    domain = f"127.0.0.1:{proxy.port}"
    before = scrape(proxy)
    assert values(before, "nexus_requests_total", "status") == {}
    assert values(before, "nexus_build_info", "version") == {(__version__,): 1.0}

    usage_seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def post(model: str, stream: bool, tools: bool = False, *, expect: int = 200,
             headers: dict | None = None) -> requests.Response:
        response = requests.post(proxy.url + "/v1/messages", json=body(model, stream, tools),
                                 headers=HEADERS if headers is None else headers, timeout=30)
        assert response.status_code == expect, response.text
        if expect == 200:
            usage = fold_sse(response.content)["usage"] if stream else response.json()["usage"]
            for kind in ("input", "output", "cache_creation", "cache_read"):
                key = f"{kind}_input_tokens" if kind.startswith("cache") else f"{kind}_tokens"
                usage_seen[model][kind] += usage.get(key) or 0
        return response

    upstream.script(
        Reply(usage={"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 900}),
        Reply(usage={"input_tokens": 80, "output_tokens": 45,
                     "cache_creation_input_tokens": 300}),
        Reply(usage={"input_tokens": 10, "output_tokens": 7}),
        Reply(usage={"input_tokens": 11, "output_tokens": 8}),
        ErrorReply(400, error_type="invalid_request_error", message="max_tokens: too large"),
        ErrorReply(529), Reply(usage={"input_tokens": 5, "output_tokens": 6}),
        Reply(content=[text_block("word " * 300)], event_delay_s=0.05),
    )
    post(SONNET, stream=False, tools=True)          # inference, plain
    post(SONNET, stream=True, tools=True)           # inference, streamed
    post(OPUS, stream=False)                        # query_evaluation, plain
    post(OPUS, stream=True)                         # query_evaluation, streamed
    post(OPUS, stream=False, expect=400)            # the upstream's 4xx
    post(SONNET, stream=False, tools=True)          # 529, retried, then 200
    hung_up = disconnect_mid_stream(proxy, HAIKU)   # the client goes away mid-stream
    proxy.exchange(hung_up)
    post(SONNET, stream=False, expect=401, headers={"anthropic-version": "2023-06-01"})
    assert requests.get(proxy.url + "/v1/models", headers=HEADERS, timeout=10).ok
    total = 9

    families = wait_for(proxy, lambda f: values(f, "nexus_writer_rows_written_total") ==
                        {(): total})
    assert values(families, "nexus_writer_rows_written_total") == {(): total}
    assert values(families, "nexus_writer_queue_depth") == {}
    assert values(families, "nexus_requests_in_flight") == {}

    requests_seen = values(families, "nexus_requests_total", "domain", "method",
                           "request_type", "model", "status")
    assert requests_seen == {
        (domain, "POST", "inference", SONNET, "200"): 3,
        (domain, "POST", "query_evaluation", OPUS, "200"): 2,
        (domain, "POST", "query_evaluation", OPUS, "400"): 1,
        (domain, "POST", "query_evaluation", HAIKU, "client_disconnected"): 1,
        (domain, "POST", "query_evaluation", SONNET, "401"): 1,  # no key: the proxy's own
        (domain, "GET", "other", "none", "200"): 1,
    }

    rows, _ = stored(url)
    assert len(rows) == total
    recorded: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cost: dict[str, float] = defaultdict(float)
    for row in rows:
        model = row["model"] or "none"
        recorded[model]["input"] += row["input_tokens"] or 0
        recorded[model]["output"] += row["output_tokens"] or 0
        recorded[model]["cache_creation"] += row["cache_creation_input_tokens"] or 0
        recorded[model]["cache_read"] += row["cache_read_input_tokens"] or 0
        cost[model] += float(row["cost_usd"] or 0)
    tokens = values(families, "nexus_tokens_total", "domain", "model", "kind")
    expected = {(domain, model, kind): count for model in (SONNET, OPUS)
                for kind, count in usage_seen[model].items() if count}
    assert {k: v for k, v in tokens.items() if k[1] != HAIKU} == expected
    # The hung-up stream counts what arrived before the hang-up, as its row does.
    assert recorded[HAIKU]["input"] > 0
    assert {kind: count for (_, model, kind), count in tokens.items() if model == HAIKU} == \
        {kind: count for kind, count in recorded[HAIKU].items() if count}
    assert {m: dict(recorded[m]) for m in (SONNET, OPUS)} == \
        {m: dict(usage_seen[m]) for m in (SONNET, OPUS)}
    costs = values(families, "nexus_cost_usd_total", "domain", "model")
    assert {(domain, SONNET), (domain, OPUS)} <= set(costs) <= \
        {(domain, SONNET), (domain, OPUS), (domain, HAIKU)}
    for model in (SONNET, OPUS):
        assert costs[(domain, model)] == pytest.approx(cost[model], abs=1e-9)

    durations = values(families, "nexus_request_duration_seconds_count", "model", "stream")
    assert durations == {(SONNET, "false"): 3, (SONNET, "true"): 1, (OPUS, "false"): 2,
                         (OPUS, "true"): 1, (HAIKU, "true"): 1, ("none", "false"): 1}
    first_tokens = values(families, "nexus_time_to_first_token_seconds_count", "model")
    assert first_tokens[(SONNET,)] == 1 and first_tokens[(OPUS,)] == 1
    assert set(first_tokens) <= {(SONNET,), (OPUS,), (HAIKU,)}
    latency = values(families, "nexus_upstream_latency_seconds_count", "model")
    assert latency == {(SONNET,): 4, (OPUS,): 3, (HAIKU,): 1, ("none",): 1}
    buckets = [(labels["le"], value) for name, labels, value
               in families["nexus_upstream_latency_seconds"]
               if name.endswith("_bucket") and labels["model"] == SONNET]
    assert buckets[-1] == ("+Inf", 4.0) and [b for b, _ in buckets][0] == "0.05"

    assert values(families, "nexus_upstream_attempts_total", "outcome") == \
        {("2xx",): 7, ("4xx",): 1, ("5xx",): 1}
    assert values(families, "nexus_upstream_retries_total", "reason") == {("529",): 1}
    assert values(families, "nexus_upstream_errors_total", "error_type") == \
        {("invalid_request_error",): 1}
    assert values(families, "nexus_database_up") == {(): 1.0}
    assert values(families, "nexus_spool_pending_rows") == {}
    assert values(families, "nexus_writer_rows_spooled_total") == {}
    assert values(families, "nexus_uptime_seconds")[()] > 0
    assert "process_cpu_seconds" in families


def test_metrics_need_the_dashboard_key_once_it_is_set(start_proxy):
    key = "metrics-scrape-key-0123456789"
    proxy = start_proxy(DASHBOARD_API_KEY=key)
    refused = requests.get(proxy.url + "/metrics", timeout=5)
    assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
    assert requests.get(proxy.url + "/metrics", timeout=5,
                        headers={"Authorization": "Bearer wrong-key-0123456789"}
                        ).status_code == 401
    assert "nexus_build_info" in scrape(proxy, Authorization=f"Bearer {key}")
    assert "nexus_build_info" in scrape(proxy, **{"X-Dashboard-Key": key})
    assert requests.get(proxy.url + "/health", timeout=5).ok, "health stays open"


def test_openmetrics_when_asked(proxy):
    response = requests.get(proxy.url + "/metrics", timeout=5,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_workers_sharing_a_multiprocess_dir_sum_their_counters(start_proxy, upstream,
                                                               tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    first = start_proxy(PROMETHEUS_MULTIPROC_DIR=str(folder))
    second = start_proxy(PROMETHEUS_MULTIPROC_DIR=str(folder))
    for proxy, count in ((first, 2), (second, 3)):
        for _ in range(count):
            response = requests.post(proxy.url + "/v1/messages", json=body(SONNET, False),
                                     headers=HEADERS, timeout=30)
            assert response.status_code == 200
    for proxy in (first, second):
        families = scrape(proxy)
        assert sum(values(families, "nexus_requests_total", "status").values()) == 5
        assert sum(values(families, "nexus_tokens_total", "kind").values()) > 0
        assert values(families, "nexus_requests_in_flight") == {}
        assert values(families, "nexus_build_info", "version") == {(__version__,): 1.0}
        # The scrape-time state is the answering worker's own: its writer, its uptime.
        assert len(values(families, "nexus_writer_rows_written_total")) <= 1


def test_every_app_has_its_own_registry_and_strangers_are_let_in_without_a_key(tmp_path):
    from app import create_app

    apps = [create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/{n}.db"}, env_file=None)
            for n in range(2)]
    for app in apps:
        response = app.test_client().get("/metrics",
                                         environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert response.status_code == 200
        assert b"nexus_requests_in_flight 0.0" in response.data
    assert apps[0].extensions["nexus.metrics"].registry is not \
        apps[1].extensions["nexus.metrics"].registry
