"""Taking one PostgreSQL database away from a proxy without stopping the suite's server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2


@contextmanager
def postgres_away(admin_dsn: str, url: str) -> Iterator[None]:
    """While the block runs, the database of `url` refuses connections and its open ones are
    cut, as if its server were down: only this database, so other tests' servers carry on."""
    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s", (name,))
        yield
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
