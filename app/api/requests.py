"""`/api/requests` views (SPEC §7.3): parameters in, one short read, JSON out."""

from __future__ import annotations

from flask import Response, jsonify, request

from app.api import bp, params, serialise
from app.errors import NotFound
from app.storage import queries


@bp.get("/requests")
def list_requests() -> Response:
    """Exchanges matching the filters, newest first, without bodies or headers."""
    args = request.args.to_dict(flat=False)
    filters = params.request_filter(args)
    limit, offset = params.list_paging(args)
    with queries.read_session():
        rows, total = queries.list_requests(filters, limit, offset)
    return jsonify({"requests": [serialise.summary(row) for row in rows], "total": total,
                    "limit": limit, "offset": offset})


@bp.get("/requests/<raw_id>")
def get_request(raw_id: str) -> Response:
    """One exchange with every column, bodies included."""
    request_id = _known_id(raw_id)
    with queries.read_session():
        row = queries.get_request(request_id)
    if row is None:
        raise _not_found(raw_id)
    return jsonify(serialise.detail(row))


@bp.get("/requests/<raw_id>/chunks")
def get_chunks(raw_id: str) -> Response:
    """The stored SSE events of one streamed exchange, in arrival order."""
    request_id = _known_id(raw_id)
    limit, offset = params.chunk_paging(request.args.to_dict(flat=False))
    with queries.read_session():
        chunks, total = queries.list_chunks(request_id, limit, offset)
        # No chunks may mean an unknown id: one more lookup, only in that case.
        if not chunks and not queries.request_exists(request_id):
            raise _not_found(raw_id)
    return jsonify({"request_id": request_id, "chunks": [serialise.chunk(c) for c in chunks],
                    "total": total, "limit": limit, "offset": offset})


def _known_id(raw_id: str) -> str:
    request_id = params.request_id(raw_id)
    if request_id is None:
        raise _not_found(raw_id)
    return request_id


def _not_found(raw_id: str) -> NotFound:
    return NotFound(f"No request with id {raw_id[:100]!r}.")
