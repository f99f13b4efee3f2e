"""The tables as peewee models, bound to the process's database through `database_proxy`.

Field names are the JSON API's names. The schema itself is built by `migrations/`, never by
`create_table`: these classes only read and write rows, so each field here must match a column
of the migrations (a test compares them on both engines).

Strings the product makes (ids, hashes, enums) are VARCHAR(n); strings that come from clients
or the upstream are TEXT, so that an unexpectedly long value can never make PostgreSQL refuse a
row.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    DecimalField,
    FloatField,
    IntegerField,
    Model,
    TextField,
)

database_proxy = DatabaseProxy()


class UTCDateTimeField(DateTimeField):
    """Stored as naive UTC (PostgreSQL TIMESTAMP, SQLite text); read back as aware UTC.

    Naive values given to it are taken as UTC already.
    """

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


class JSONTextField(TextField):
    """Any JSON value, stored as compact JSON text (the same on both engines)."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(Model):
    """Binds every table model to the process's database (migrations never use it)."""

    class Meta:
        database = database_proxy


class Request(BaseModel):
    """One exchange: what the client sent, what came back, timing, usage and conversation."""

    id = CharField(max_length=36, primary_key=True)
    received_at = UTCDateTimeField()
    completed_at = UTCDateTimeField(null=True)
    domain = TextField()
    account_id = TextField(null=True)
    auth_mode = CharField(max_length=32, null=True)
    method = CharField(max_length=16)
    path = TextField()
    query = TextField(default="")
    model = TextField(null=True)
    request_type = CharField(max_length=32, null=True)
    stream = BooleanField(default=False)
    status = CharField(max_length=32, null=True)        # "200", … or "client_disconnected"
    outcome = CharField(max_length=32, null=True)       # completed, failed, client_disconnected
    error_type = TextField(null=True)
    error_message = TextField(null=True)
    attempts = IntegerField(default=0)
    attempts_detail = JSONTextField(null=True)
    duration_ms = FloatField(null=True)
    first_byte_ms = FloatField(null=True)
    first_token_ms = FloatField(null=True)
    input_tokens = IntegerField(null=True)
    output_tokens = IntegerField(null=True)
    cache_creation_input_tokens = IntegerField(null=True)
    cache_creation_5m_tokens = IntegerField(null=True)
    cache_creation_1h_tokens = IntegerField(null=True)
    cache_read_input_tokens = IntegerField(null=True)
    service_tier = TextField(null=True)
    tool_call_count = IntegerField(default=0)
    tool_names = JSONTextField(null=True)
    cost_usd = DecimalField(max_digits=12, decimal_places=6, auto_round=True, null=True)
    cost_flagged = BooleanField(default=False)
    request_headers = JSONTextField(null=True)
    response_headers = JSONTextField(null=True)
    request_body = TextField(null=True)
    response_body = TextField(null=True)
    response_truncated = BooleanField(default=False)
    session_id = TextField(null=True)
    agent_id = TextField(null=True)
    parent_agent_id = TextField(null=True)
    user_agent = TextField(null=True)
    client_addr = TextField(null=True)
    conversation_id = CharField(max_length=64, null=True)
    branch_id = CharField(max_length=64, null=True)
    parent_request_id = CharField(max_length=36, null=True)
    current_message_hash = CharField(max_length=64, null=True)
    parent_message_hash = CharField(max_length=64, null=True)
    system_hash = CharField(max_length=64, null=True)
    message_count = IntegerField(null=True)
    is_subtask = BooleanField(default=False)
    parent_task_request_id = CharField(max_length=36, null=True)
    is_compaction_request = BooleanField(default=False)
    is_compaction_continuation = BooleanField(default=False)
    is_retry = BooleanField(default=False)
    response_hash = CharField(max_length=64, null=True)

    class Meta:
        table_name = "requests"


class RequestChunk(BaseModel):
    """One SSE event of a streamed answer, in arrival order."""

    request_id = CharField(max_length=36)
    seq = IntegerField()
    offset_ms = FloatField()                 # since the request was received
    data = TextField()
    received_at = UTCDateTimeField()         # the request's, so chunks share its partition

    class Meta:
        table_name = "request_chunks"
        primary_key = CompositeKey("request_id", "seq")


class RateLimitSample(BaseModel):
    """The upstream's rate-limit headers on one answer, raw and parsed."""

    id = BigAutoField()
    account_id = TextField(null=True)
    domain = TextField()
    request_id = CharField(max_length=36, null=True)
    sampled_at = UTCDateTimeField()
    headers = JSONTextField()
    unified_status = TextField(null=True)
    unified_5h_utilization = FloatField(null=True)
    unified_5h_reset = UTCDateTimeField(null=True)
    unified_7d_utilization = FloatField(null=True)
    unified_7d_reset = UTCDateTimeField(null=True)
    unified_representative_claim = TextField(null=True)
    unified_fallback_percentage = FloatField(null=True)
    unified_overage_status = TextField(null=True)
    requests_remaining = BigIntegerField(null=True)
    requests_limit = BigIntegerField(null=True)
    tokens_remaining = BigIntegerField(null=True)
    tokens_limit = BigIntegerField(null=True)

    class Meta:
        table_name = "ratelimit_samples"


class UsageHourly(BaseModel):
    """The requests of one hour, domain, account and model, added up by the writer as it
    inserts them (no NULL in the key: an absent account or model is '')."""

    hour = UTCDateTimeField()
    domain = TextField()
    account_id = TextField(default="")
    model = TextField(default="")
    request_count = BigIntegerField(default=0)
    error_count = BigIntegerField(default=0)
    disconnected_count = BigIntegerField(default=0)
    input_tokens = BigIntegerField(default=0)
    output_tokens = BigIntegerField(default=0)
    cache_creation_input_tokens = BigIntegerField(default=0)
    cache_creation_5m_tokens = BigIntegerField(default=0)
    cache_creation_1h_tokens = BigIntegerField(default=0)
    cache_read_input_tokens = BigIntegerField(default=0)
    cost_microusd = BigIntegerField(default=0)
    cost_flagged_count = BigIntegerField(default=0)
    tool_call_count = BigIntegerField(default=0)
    duration_count = BigIntegerField(default=0)
    first_token_count = BigIntegerField(default=0)
    duration_ms_sum = FloatField(default=0)
    first_token_ms_sum = FloatField(default=0)

    class Meta:
        table_name = "usage_hourly"
        primary_key = CompositeKey("hour", "domain", "account_id", "model")


class UsageToolHourly(BaseModel):
    """Tool calls of one hour, domain and account, per tool name."""

    hour = UTCDateTimeField()
    domain = TextField()
    account_id = TextField(default="")
    tool_name = TextField()
    call_count = BigIntegerField(default=0)

    class Meta:
        table_name = "usage_tool_hourly"
        primary_key = CompositeKey("hour", "domain", "account_id", "tool_name")


class Conversation(BaseModel):
    """One conversation's figures, kept by the writer as it links requests to it."""

    id = CharField(max_length=64, primary_key=True)
    domain = TextField()
    account_id = TextField(null=True)
    session_id = TextField(null=True)
    first_request_id = CharField(max_length=36)
    created_at = UTCDateTimeField()
    last_request_at = UTCDateTimeField()
    title = TextField(null=True)
    request_count = BigIntegerField(default=0)
    message_count = IntegerField(default=0)
    branch_count = IntegerField(default=0)
    subtask_count = IntegerField(default=0)
    compact_count = IntegerField(default=0)
    input_tokens = BigIntegerField(default=0)
    output_tokens = BigIntegerField(default=0)
    cache_creation_input_tokens = BigIntegerField(default=0)
    cache_read_input_tokens = BigIntegerField(default=0)
    cost_microusd = BigIntegerField(default=0)

    class Meta:
        table_name = "conversations"


class ConversationAnchor(BaseModel):
    """Something a later request links to that its history does not show: a sub-agent spawn
    (`Task`/`Agent` tool_use) or the answer of a summarisation request."""

    id = BigAutoField()
    kind = CharField(max_length=16)           # "spawn" or "compaction"
    domain = TextField()
    key_hash = CharField(max_length=64, default="")
    request_id = CharField(max_length=36)
    received_at = UTCDateTimeField()
    session_id = TextField(null=True)
    conversation_id = CharField(max_length=64, null=True)
    tool_use_id = TextField(default="")
    summary_key = TextField(null=True)
    child_request_id = CharField(max_length=36, null=True)

    class Meta:
        table_name = "conversation_anchors"


class DashboardUser(BaseModel):
    """A person allowed into the dashboard."""

    name = TextField(unique=True)
    password_hash = TextField()
    created_at = UTCDateTimeField()
    last_login_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "dashboard_users"


MODELS = (Request, RequestChunk, RateLimitSample, UsageHourly, UsageToolHourly, Conversation,
          ConversationAnchor, DashboardUser)


def bind(db) -> None:
    """Point every model at `db` (the process's one database)."""
    database_proxy.initialize(db)
