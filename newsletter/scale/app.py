"""The procrastinate App: jobs live in the same PostgreSQL database as everything else (no other broker).

Tasks are registered on one module-level App (newsletter.scale.tasks imports it); the database it talks to is
chosen at run time with `connected(url)`, because the URL comes from the environment of the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import procrastinate
from sqlalchemy.engine import make_url

from newsletter.config import ConfigError, Settings, redact_url

SCALE_ENV = "NEWSLETTER_SCALE"

# The connector given here is a placeholder: connected() swaps in one for the configured database.
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["newsletter.scale.tasks"],
)


def is_postgres(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except Exception:  # noqa: BLE001 - an unparsable URL is simply not PostgreSQL
        return False


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`, `postgresql://...`) as the libpq URI psycopg opens.

    Query parameters (e.g. `options=-csearch_path=...`, `sslmode=require`) are kept: libpq understands them.
    """
    if not is_postgres(url):
        raise ConfigError(f"scale mode needs PostgreSQL: NEWSLETTER_DATABASE_URL is {redact_url(url)}")
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def scale_mode(settings: Settings, flag: bool = False) -> bool:
    """Scale mode: asked for (NEWSLETTER_SCALE=1 or --scale) on a PostgreSQL database.

    Asking for it on SQLite is an error rather than a silent fallback: workers on other machines could never
    see that database.
    """
    wanted = flag or os.environ.get(SCALE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not wanted:
        return False
    if not is_postgres(settings.database_url):
        raise ConfigError(f"scale mode ({SCALE_ENV}=1 or --scale) needs a PostgreSQL NEWSLETTER_DATABASE_URL, "
                          f"not {redact_url(settings.database_url)}")
    return True


def connector_for(url: str) -> procrastinate.PsycopgConnector:
    return procrastinate.PsycopgConnector(conninfo=libpq_dsn(url))


@contextmanager
def connected(url: str) -> Iterator[procrastinate.App]:
    """The app, talking to `url`, opened for synchronous use (defer jobs, apply the schema)."""
    import newsletter.scale.tasks  # noqa: F401 - registers the tasks

    with app.replace_connector(connector_for(url)) as bound, bound.open():
        yield bound


def ensure_schema(url: str) -> bool:
    """Create procrastinate's tables in the database (the schema first on its search_path) unless present.

    Returns True when it created them. Two machines running this at once are serialized by an advisory lock.
    """
    import psycopg

    lock = "SELECT pg_advisory_{}(hashtext('newsletter:procrastinate-schema'))"
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute(lock.format("lock"))  # type: ignore[arg-type]
        try:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
            if row and row[0]:
                return False
            with conn.transaction():
                conn.execute(procrastinate.schema.SchemaManager.get_schema())
            return True
        finally:
            conn.execute(lock.format("unlock"))  # type: ignore[arg-type]
