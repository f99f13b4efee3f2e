"""Request type classification (SPEC §3.5), a pure function of the request body."""

from __future__ import annotations

from typing import Any

QUOTA = "quota"
QUERY_EVALUATION = "query_evaluation"
INFERENCE = "inference"

# Claude Code prepends a billing marker as a system block; it says nothing about the request.
BILLING_PREFIX = "x-anthropic-billing-header:"


def classify_request(body: Any) -> str:
    """`quota`, `query_evaluation` or `inference` for a /v1/messages body."""
    if not isinstance(body, dict):
        return INFERENCE
    if _last_user_text(body.get("messages")).strip().lower() == QUOTA:
        return QUOTA
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and output_config.get("format"):
        return QUERY_EVALUATION
    if not body.get("tools") and _system_block_count(body.get("system")) <= 1:
        return QUERY_EVALUATION
    return INFERENCE


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(b.get("text", "") for b in content
                               if isinstance(b, dict) and b.get("type") == "text"
                               and isinstance(b.get("text"), str))
            return ""
    return ""


def _system_block_count(system: Any) -> int:
    if isinstance(system, str):
        return 1 if system.strip() else 0
    if not isinstance(system, list):
        return 0
    return sum(1 for block in system
               if not (isinstance(block, dict) and isinstance(block.get("text"), str)
                       and block["text"].startswith(BILLING_PREFIX)))
