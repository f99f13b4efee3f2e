from app.proxy.headers import (
    OAUTH_BETA,
    client_response_headers,
    header_value,
    upstream_request_headers,
)

CLIENT = [
    ("Host", "127.0.0.1:3000"),
    ("Connection", "keep-alive, X-Hop"),
    ("Keep-Alive", "timeout=5"),
    ("X-Hop", "1"),
    ("Proxy-Authorization", "Basic abc"),
    ("Content-Length", "12"),
    ("Transfer-Encoding", "chunked"),
    ("TE", "trailers"),
    ("Upgrade", "h2c"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
    ("User-Agent", "claude-cli/2.1.197 (external, sdk-cli)"),
    ("x-app", "cli"),
    ("X-Stainless-Retry-Count", "0"),
    ("X-Claude-Code-Session-Id", "4e583aa5"),
    ("x-api-key", "sk-ant-api03-secret"),
    ("Authorization", "Bearer sk-ant-oat01-secret"),
]


def test_upstream_headers_drop_hop_by_hop_host_and_length_only():
    out = upstream_request_headers(CLIENT)
    names = [n.lower() for n, _ in out]
    assert names == ["anthropic-version", "anthropic-beta", "user-agent", "x-app",
                     "x-stainless-retry-count", "x-claude-code-session-id", "x-api-key",
                     "authorization"]
    assert dict(out)["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"


def test_client_credentials_dropped_when_the_proxy_supplies_its_own():
    out = upstream_request_headers(CLIENT, drop_credentials=True)
    assert header_value(out, "x-api-key") is None
    assert header_value(out, "authorization") is None
    assert header_value(out, "x-app") == "cli"


def test_oauth_beta_is_added_never_replacing():
    out = upstream_request_headers(CLIENT, add_betas=[OAUTH_BETA])
    assert header_value(out, "anthropic-beta") == (
        "claude-code-20250219,interleaved-thinking-2025-05-14,oauth-2025-04-20")
    again = upstream_request_headers(out, add_betas=[OAUTH_BETA])
    assert header_value(again, "anthropic-beta").count(OAUTH_BETA) == 1
    bare = upstream_request_headers([("x-app", "cli")], add_betas=[OAUTH_BETA])
    assert header_value(bare, "anthropic-beta") == OAUTH_BETA


def test_response_headers_keep_everything_but_hop_by_hop():
    upstream = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                ("Connection", "keep-alive"), ("request-id", "req_1"), ("retry-after", "3"),
                ("x-should-retry", "true"), ("anthropic-ratelimit-requests-remaining", "49"),
                ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    out = client_response_headers(upstream)
    assert out == [("Content-Type", "text/event-stream"), ("request-id", "req_1"),
                   ("retry-after", "3"), ("x-should-retry", "true"),
                   ("anthropic-ratelimit-requests-remaining", "49"),
                   ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
