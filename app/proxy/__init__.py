"""The proxy: routes, the Exchange record, forwarding, relay, headers, SSE folding."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Create the process's Proxy (and its upstream pool) and register the routes."""
    # Imported here, not at module level: `app.auth` uses `app.proxy.headers`, and importing
    # that must not drag in the service, which in turn needs `app.auth`.
    from app.proxy.retry import RetryPolicy
    from app.proxy.service import Proxy
    from app.proxy.upstream import Upstream
    from app.proxy.views import bp

    settings = app.config["NEXUS_SETTINGS"]
    upstream = Upstream(settings.claude_api_base_url, settings.claude_api_timeout,
                        RetryPolicy(max_retries=settings.upstream_max_retries))
    # Collected test samples hold the raw events too; the writer keeps its own flag for rows.
    keep_chunks = settings.store_streaming_chunks or settings.collect_test_samples
    app.extensions["nexus.proxy"] = Proxy(upstream, keep_chunks=keep_chunks)
    app.register_blueprint(bp)
