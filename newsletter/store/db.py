"""Engine, sessions and automatic schema upgrades (Alembic) for SQLite and PostgreSQL.

Opening the database compares its `alembic_version` with the newest migration read from the scripts' own
`revision =` / `down_revision =` lines, without importing Alembic (a tenth of a second, on every command); Alembic
runs only when the two differ or cannot be read, and then decides everything itself.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from newsletter.store.models import Meta, NewsletterRow
from newsletter.store.revision import MIGRATIONS, script_head

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_POOL_SIZE = 40  # anyio's default thread limit, which Starlette's run_in_threadpool uses


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
        pool: dict[str, int] = {}
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": 10}
        # One pooled connection per thread that can use it at once (the web app's thread pool runs up to 40
        # handlers), kept open: SQLAlchemy's default pool of 5 closed every connection above that on return,
        # so under load each request opened a new one and paid the PRAGMAs below again. In WAL mode readers
        # do not block each other, so many open connections cost only their page cache.
        engine = create_engine(url, connect_args={"timeout": 30}, **pool)
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


def stored_revisions(engine: Engine) -> list[str] | None:
    """The revisions `alembic_version` holds, or None when it cannot be read (a new database, say).

    A database that cannot be reached raises, as it would from Alembic.
    """
    with engine.connect() as conn:
        try:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
        except DBAPIError:  # no such table: Alembic creates it
            return None


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration, known without importing Alembic."""
    head = script_head()
    return head is not None and stored_revisions(engine) == [head]


@cache
def _engine_for(url: str) -> Engine:
    engine = make_engine(url)
    if not schema_is_current(engine) and current_revision(engine) != head_revision():
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


def install_id(engine: Engine) -> str:
    """This database's own identity (a uuid4 generated once, kept in `meta`; migration 0004_install).

    It goes into every SendGrid request beside the send and batch numbers, which restart at 1 in every database:
    with it, mail sent from another database on the same SendGrid account never answers for ours.
    """
    from sqlalchemy.exc import IntegrityError

    for _ in range(2):
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                row = session.get(Meta, "install_id")
                if row is None:
                    row = Meta(key="install_id", value=str(uuid.uuid4()))
                    session.add(row)
                return row.value
        except IntegrityError:  # another process wrote it first: read theirs
            continue
    raise RuntimeError("the install id could not be read or written")
