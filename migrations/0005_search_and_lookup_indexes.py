"""Indexes for the read side at a million requests: text search, request type, ledger pairs.

- Text search (`q`, SPEC §7.2/§7.3) looks in a bounded *search text* of each exchange rather than
  in its whole bodies (20-80 KB each, the whole conversation history every turn): the last
  message of the request (what this exchange asked; the whole body when it is not a Messages
  body), the start of the response and of the error message, joined by newlines. PostgreSQL gets
  it as the IMMUTABLE function `nexus_search_text(request_body, response_body, error_message)`
  and a pg_trgm GIN index on it, which serves `ILIKE '%…%'` of any text of three characters or
  more; `app/storage/queries.py` spells the same text for SQLite, where a search stays a scan.
  The function computes nothing the writer must send: rows written by any version, and the
  bulk-loaded ones, are indexed alike. The index holds the function's results: a later change
  of its body (the bounds, say) must come with a REINDEX of `requests_search_trgm`.
  Costs: upgrading builds the index over every stored request (about 9 minutes per million on
  two busy cores, with inserts into `requests` waiting: PostgreSQL cannot build an index on a
  partitioned table CONCURRENTLY), about 1.1 GB per million bench rows, and each insert
  computes the text and its trigrams (some tenths of a millisecond to a millisecond of
  PostgreSQL CPU per exchange).
- `requests (request_type, received_at)`: the list filtered by type (`quota`, ...) and its count;
  `requests (account_id, model, received_at)`: the list filtered by account and model, whose
  count otherwise reads every heap page of the account's rows (tens of thousands at scale).
- `ratelimit_samples (account_id, domain, sampled_at DESC)`: the accounts view walks the pairs
  of the ledger one index probe each, newest sample first, instead of grouping a month of it.

pg_trgm ships with PostgreSQL (Debian/Ubuntu `postgresql-contrib`, in the official Docker image)
and is a trusted extension since PostgreSQL 13: the database's owner may create it without being
a superuser. When it cannot be created (not installed, or a role without CREATE on the
database), the migration still applies without the GIN index and logs how to add it later:
search then reads every row of its range, as before this version.

Explicit DDL for both engines, and no import of the application.
"""

import logging

import peewee as pw

log = logging.getLogger("nexus.migrations")

# The bounds of the search text, in characters (kept in step with app/storage/queries.py).
ASKED_CHARS = 3000
ANSWER_CHARS = 3000
ERROR_CHARS = 1000
# The planner's cost of one call, in units of an operator (1): it parses a body of up to 80 KB
# as JSON. At the default (100) the planner would rather walk `received_at` newest first and
# call it on every row until a page fills (the whole range for a rare word) than read the
# trigram index and call it on its few candidates. PARALLEL RESTRICTED: its exception block
# is a subtransaction, which a parallel worker may not start.
FUNCTION_COST = 10000

SEARCH_FUNCTION = f"""
CREATE OR REPLACE FUNCTION nexus_search_text(request_body TEXT, response_body TEXT,
                                             error_message TEXT)
RETURNS TEXT LANGUAGE plpgsql IMMUTABLE PARALLEL RESTRICTED COST {FUNCTION_COST} AS $$
DECLARE
    asked TEXT;
BEGIN
    BEGIN
        asked := (request_body::jsonb -> 'messages' -> -1)::TEXT;
    EXCEPTION WHEN OTHERS THEN
        asked := NULL;  -- not JSON (or JSON jsonb refuses, such as \\u0000): the text itself
    END;
    RETURN COALESCE(left(COALESCE(asked, request_body), {ASKED_CHARS}), '') || E'\\n'
        || COALESCE(left(response_body, {ANSWER_CHARS}), '') || E'\\n'
        || COALESCE(left(error_message, {ERROR_CHARS}), '');
END
$$
"""
SEARCH_INDEX = "requests_search_trgm"
SEARCH_INDEX_SQL = (f"CREATE INDEX {SEARCH_INDEX} ON requests USING gin "
                    "(nexus_search_text(request_body, response_body, error_message) "
                    "gin_trgm_ops)")

INDEXES = (
    ("requests_type_received_at", "requests", "request_type, received_at"),
    ("requests_account_model_received_at", "requests", "account_id, model, received_at"),
    ("ratelimit_samples_pair_sampled_at", "ratelimit_samples",
     "account_id, domain, sampled_at DESC"),
)


def _engine(database):
    if isinstance(database, pw.Proxy):
        database = database.obj
    return "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"


def _trigram_extension(database) -> bool:
    """Whether pg_trgm is (now) installed; a refusal is rolled back to a savepoint, so the rest
    of the migration still applies."""
    try:
        with database.atomic():
            database.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        return True
    except pw.DatabaseError as err:
        log.warning("pg_trgm unavailable (%s): text search will scan its range; once the "
                    "extension exists, run: %s", str(err).strip().splitlines()[0],
                    SEARCH_INDEX_SQL)
        return False


def migrate(migrator, database, fake=False, **kwargs):
    """Create the two B-tree indexes, and on PostgreSQL the search function and its index."""
    for name, table, columns in INDEXES:
        migrator.sql(f"CREATE INDEX {name} ON {table} ({columns})")
    if _engine(database) == "postgres":
        migrator.sql(SEARCH_FUNCTION)
        if not fake and _trigram_extension(database):
            migrator.sql(SEARCH_INDEX_SQL)


def rollback(migrator, database, **kwargs):
    """Drop the indexes and the function (the extension stays: other schemas may use it)."""
    for name in (SEARCH_INDEX, *(name for name, _, _ in INDEXES)):
        migrator.sql(f"DROP INDEX IF EXISTS {name}")
    if _engine(database) == "postgres":
        migrator.sql("DROP FUNCTION IF EXISTS nexus_search_text(TEXT, TEXT, TEXT)")
