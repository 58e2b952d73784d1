"""Engine, sessions and automatic schema upgrades (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session

from newsletter.store.models import Meta, NewsletterRow

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
    cur = dbapi_connection.cursor()
    # WAL lets the web app read while a send writes; busy_timeout waits for a lock instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def alembic_config(engine: Engine | None) -> Config:
    """Alembic's config for our migrations; without an engine it can read the scripts but not migrate."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = alembic_config(None)
    return ScriptDirectory.from_config(cfg).get_current_head() or ""


@cache
def _engine_for(url: str) -> Engine:
    engine = make_engine(url)
    if current_revision(engine) != head_revision():
        upgrade(engine)
    return engine


def get_engine(url: str) -> Engine:
    """The engine for a URL, with the schema created or upgraded on first use."""
    return _engine_for(url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ensure_newsletter(session: Session, slug: str, name: str) -> NewsletterRow:
    row = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == slug))
    if row is None:
        row = NewsletterRow(slug=slug, name=name)
        session.add(row)
        session.flush()
    elif row.name != name:
        row.name = name
    return row


def secret_key(session: Session, configured: str | None) -> str:
    """The signing key: NEWSLETTER_SECRET_KEY, or one generated once and kept in the database.

    Generating it keeps tokens signed on a fresh install without asking the user for a secret first; keeping it
    in the database keeps unsubscribe links in already-sent emails valid across restarts.
    """
    if configured:
        return configured
    row = session.get(Meta, "secret_key")
    if row is None:
        row = Meta(key="secret_key", value=secrets.token_urlsafe(48))
        session.add(row)
        session.flush()
    return row.value
