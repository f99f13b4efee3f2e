"""Routes of the proxy (SPEC §3.1): thin, over inbound reading and the Proxy service."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request

from app.logs import request_id_var
from app.proxy import cors
from app.proxy.inbound import load_request, new_exchange
from app.version import __version__

bp = Blueprint("proxy", __name__)

FORWARDED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


@bp.route("/v1/<path:subpath>", methods=FORWARDED_METHODS, provide_automatic_options=False)
def forward(subpath: str) -> Response:
    """Every /v1 request: read it, record it, send it upstream, relay the answer."""
    settings = current_app.config["NEXUS_SETTINGS"]
    exchange = new_exchange(request.environ, current_app.extensions["nexus.events"].publish)
    g.exchange = exchange  # the error handler ends it if anything below raises
    request_id_var.set(exchange.id)
    exchange.start()
    access = current_app.extensions["nexus.access"]
    credential = access.admit(exchange.domain, exchange.request_headers)  # before the body
    load_request(exchange, request.environ, settings.max_request_bytes)
    authorisation = access.authorise(exchange.domain, exchange.request_headers,
                                     exchange.request_json, credential)
    exchange.account_id = authorisation.account_id
    exchange.auth_mode = authorisation.mode
    return current_app.extensions["nexus.proxy"].forward(exchange, request.environ,
                                                         authorisation)


@bp.route("/v1/<path:subpath>", methods=["OPTIONS"])
def preflight(subpath: str) -> Response:
    return cors.preflight(request.headers.get("Origin"),
                          request.headers.get("Access-Control-Request-Headers"))


@bp.route("/", methods=["GET", "HEAD"])
def descriptor() -> Response:
    """What this server is; Claude Code sends `HEAD /` to warm its connection up. A browser
    (asking for HTML) is sent to the dashboard."""
    if request.method == "GET" and request.accept_mimetypes.accept_html \
            and request.accept_mimetypes.best == "text/html":
        return redirect("/dashboard/")
    return jsonify({
        "name": "Claude Nexus Proxy",
        "version": __version__,
        "links": {"messages": "/v1/messages", "health": "/health"},
    })


@bp.after_app_request
def cors_headers(response: Response) -> Response:
    # On every /v1 answer, the proxy's own errors included, or a browser hides them.
    if request.path.startswith("/v1/") and request.method != "OPTIONS":
        return cors.add_cors(response, request.headers.get("Origin"))
    return response

