"""`/api/conversations` views (SPEC §7.3, CONVERSATIONS.md): parameters in, a few short reads,
JSON out.

Relative times (`since=24h`) count back from the app's clock (`nexus.clock`).
"""

from __future__ import annotations

from flask import Response, current_app, jsonify, request

from app.api import bp, params, serialise
from app.errors import NotFound
from app.storage import conversation_queries, queries


@bp.get("/conversations")
def list_conversations() -> Response:
    """Conversations matching the filters, latest activity first, with their figures."""
    args = request.args.to_dict(flat=False)
    filters = params.conversation_filter(args, current_app.extensions["nexus.clock"]())
    limit, offset = params.conversation_paging(args)
    with queries.read_session():
        rows, total = conversation_queries.list_conversations(filters, limit, offset)
    return jsonify({"conversations": [serialise.conversation(row) for row in rows],
                    "total": total, "limit": limit, "offset": offset})


@bp.get("/conversations/<raw_id>")
def get_conversation(raw_id: str) -> Response:
    """One conversation with its requests in received order and its branches."""
    params.no_parameters(request.args.to_dict(flat=False))
    conversation_id = params.conversation_id(raw_id)
    if conversation_id is None:
        raise _not_found(raw_id)
    with queries.read_session():
        found = conversation_queries.get_conversation(conversation_id,
                                                      conversation_queries.MAX_REQUESTS)
    if found is None:
        raise _not_found(raw_id)
    return jsonify(serialise.conversation_detail(found))


def _not_found(raw_id: str) -> NotFound:
    return NotFound(f"No conversation with id {raw_id[:100]!r}.")
