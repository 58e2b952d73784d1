"""The procrastinate App: jobs live in the same PostgreSQL database as everything else (no other broker).

Tasks are registered on one module-level App (newsletter.scale.tasks imports it; this module loads the tasks
through the App's import paths, as a worker does, so the two never import each other); the database it talks to
is chosen at run time with `connected(url)`, because the URL comes from the environment of the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import procrastinate

from newsletter.scale.mode import libpq_dsn

# The connector given here is a placeholder: connected() swaps in one for the configured database.
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["newsletter.scale.tasks"],
)


def connector_for(url: str) -> procrastinate.PsycopgConnector:
    return procrastinate.PsycopgConnector(conninfo=libpq_dsn(url))


@contextmanager
def connected(url: str) -> Iterator[procrastinate.App]:
    """The app, talking to `url`, opened for synchronous use (defer jobs, apply the schema)."""
    app.perform_import_paths()  # registers the tasks

    with app.replace_connector(connector_for(url)) as bound, bound.open():
        yield bound


def ensure_schema(url: str) -> bool:
    """Create procrastinate's tables in the database (the schema first on its search_path) unless present.

    Returns True when it created them. Two machines running this at once are serialized by an advisory lock.
    """
    import psycopg

    lock = "SELECT pg_advisory_{}(hashtext('newsletter:procrastinate-schema'))"
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute(lock.format("lock"))
        try:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
            if row and row[0]:
                return False
            with conn.transaction():
                conn.execute(procrastinate.schema.SchemaManager.get_schema())
            return True
        finally:
            conn.execute(lock.format("unlock"))
