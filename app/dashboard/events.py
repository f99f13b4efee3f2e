"""`GET /dashboard/events`: the live feed as Server-Sent Events (static/app.js listens).

    retry: 3000                      reconnect after 3 s when the stream ends
    : connected
    event: request                   one per stored request
    data: {"id": "…", "domain": "…", "account_id": "…", "status": 200, "received_at": "…Z"}
    : keep-alive                     every KEEPALIVE_S when nothing happens

Behind the dashboard's guard like every page. The stream ends when the client goes away (its
socket is looked at every HANGUP_CHECK_S; a failed write closes the generator too) and when the
feed stops at shutdown.
When the feed does not run (an app that is not served by `python wsgi.py`) the answer is 204,
which tells EventSource not to reconnect; past the feed's client limit, 503.
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Iterator

from flask import Response, current_app, request
from flask.sansio.blueprints import BlueprintSetupState

from app.dashboard import bp, live

KEEPALIVE_S = 15.0
HANGUP_CHECK_S = 1.0
RETRY_MS = 3000
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@bp.record_once
def _create_feed(state: BlueprintSetupState) -> None:
    live.init_app(state.app)


@bp.get("/events")
def events():
    feed: live.LiveFeed | None = current_app.extensions.get("nexus.live")
    if feed is None or not feed.running:
        return Response(status=204, headers=HEADERS)
    client = feed.connect(request.environ.get("nexus.client_socket"))
    if client is None:
        return Response("too many live clients\n", status=503, mimetype="text/plain",
                        headers={**HEADERS, "Retry-After": "30"})
    return Response(stream(feed, client), mimetype="text/event-stream", headers=HEADERS)


def stream(feed: live.LiveFeed, client: live.Client) -> Iterator[str]:
    """The SSE text of one client until it goes away or the feed stops (no request context:
    everything it needs is in its arguments)."""
    # A client that hangs up is noticed by watching its socket every HANGUP_CHECK_S rather
    # than at the next write: else closed tabs would hold their slots for up to KEEPALIVE_S.
    wait = KEEPALIVE_S if client.sock is None else HANGUP_CHECK_S
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        last = time.monotonic()
        while True:
            notices = client.take(wait)
            if notices is None:
                return
            if notices:
                yield "".join(f"event: request\ndata: {json.dumps(notice, separators=(',', ':'))}"
                              "\n\n" for notice in notices)
            elif _hung_up(client.sock):
                return
            elif time.monotonic() - last >= KEEPALIVE_S - wait / 2:
                yield ": keep-alive\n\n"
            else:
                continue
            last = time.monotonic()
    finally:
        feed.disconnect(client)


def _hung_up(sock) -> bool:
    """True when the client closed its end: an event stream's client sends nothing after its
    request, so a readable socket means end of file (or a client we need not serve)."""
    if sock is None:
        return False
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us
        return True
