"""The JSON API under `/api` (SPEC §7.3): the blueprint, its access rule and its error mapping.

Views are thin: `params` checks the query string, `app.storage.queries` reads, `serialise`
shapes rows. Every `/api` path — unknown ones included, so they reveal nothing — passes the
access rule of `access` first.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, current_app, request
from flask_login import current_user

from app.api import access
from app.errors import NexusError, error_response
from app.storage.database import StorageError

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")


class StorageUnavailable(NexusError):
    status = 503
    error_type = "api_error"


def init_app(app: Flask) -> None:
    """Register the `/api` routes and the access rule in front of them."""
    from app.api import (  # noqa: F401  (their routes attach to `bp` on import)
        conversations,
        requests,
        usage,
    )

    app.register_blueprint(bp)


@bp.before_app_request
def _check_access() -> None:
    # App-wide, not per-blueprint: a path under /api that matches no route must be refused
    # like the others rather than answered 404 to strangers.
    if request.path == "/api" or request.path.startswith("/api/"):
        if current_user.is_authenticated:  # a dashboard session
            return
        key = current_app.config["NEXUS_SETTINGS"].dashboard_api_key
        access.check(request.remote_addr, request.headers, key)


@bp.errorhandler(StorageError)
def _storage_unavailable(err: StorageError) -> Response:
    log.warning("api: %s", err)
    return error_response(StorageUnavailable("The database cannot be read right now; the "
                                             "proxy keeps serving. See the server log."))


@bp.after_request
def _no_store(response: Response) -> Response:
    # Answers hold request bodies: keep them out of browser and intermediary caches.
    response.headers["Cache-Control"] = "no-store"
    return response
