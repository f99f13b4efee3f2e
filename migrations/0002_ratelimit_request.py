"""One rate-limit sample per exchange: a UNIQUE index on `ratelimit_samples(request_id)`.

The writer records each exchange's sample with `ON CONFLICT DO NOTHING`, like its request and
chunk rows, so that replaying the spool never doubles a sample. The column stays nullable: both
engines let any number of NULLs through a unique index.

Explicit DDL, the same on both engines, and no import of the application.
"""

INDEX = "ratelimit_samples_request"


def migrate(migrator, database, **kwargs):
    """Create the unique index (keeping the first sample of a request, should one repeat:
    nothing recorded samples before this version, so there is none in practice)."""
    migrator.sql("DELETE FROM ratelimit_samples WHERE request_id IS NOT NULL AND id NOT IN "
                 "(SELECT MIN(id) FROM ratelimit_samples WHERE request_id IS NOT NULL "
                 "GROUP BY request_id)")
    migrator.sql(f"CREATE UNIQUE INDEX {INDEX} ON ratelimit_samples (request_id)")


def rollback(migrator, database, **kwargs):
    """Drop the index (the samples stay)."""
    migrator.sql(f"DROP INDEX IF EXISTS {INDEX}")
