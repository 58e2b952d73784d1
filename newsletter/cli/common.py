"""What every command needs: settings, the database, the newsletters, and a way to fail clearly."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine

from newsletter.config import ConfigError, Newsletter, Settings, load_all, settings_from_env

# soft_wrap: Rich never breaks a printed line itself (the terminal wraps it on screen), so a path or a URL in a
# message stays one piece that can be copied or clicked. Tables still fit the terminal's width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    # Messages are plain text (they quote paths, URLs and `newsletter[postgres]`, never Rich markup), and one
    # message is one line however narrow the terminal: Rich must not cut a path in the middle.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@cache
def settings() -> Settings:
    try:
        return settings_from_env()
    except ConfigError as exc:
        fail(str(exc))


def require_scale(flag: bool) -> bool:
    """Whether scale mode is on (NEWSLETTER_SCALE=1 or --scale); fails in one line when it is asked for without
    PostgreSQL or without the `postgres` extra. Never imports procrastinate: the base install runs everything else.
    """
    from newsletter.scale.mode import require_postgres_extra, scale_mode

    try:
        wanted = scale_mode(settings(), flag)
        if wanted:
            require_postgres_extra()
        return wanted
    except ConfigError as exc:
        fail(str(exc))


def require_postgres_driver() -> None:
    """A PostgreSQL URL on the base install: name the extra, not a traceback from SQLAlchemy."""
    from newsletter.scale.mode import is_postgres, require_postgres_extra

    if is_postgres(settings().database_url):
        try:
            require_postgres_extra("a PostgreSQL NEWSLETTER_DATABASE_URL", modules=("psycopg",))
        except ConfigError as exc:
            fail(str(exc))


def missing_database() -> str | None:
    """The SQLite file the settings name, when it does not exist yet (None for PostgreSQL or an existing file)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(settings().database_url)
    except Exception:  # noqa: BLE001 - engine() reports a bad URL with the reason
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return None if Path(url.database).exists() else url.database


def engine(*, existing: bool = False) -> Engine:
    """The database, its schema created or upgraded. `existing`: for commands that only read (or change what
    is already there): with no database yet they say so instead of creating an empty one in this folder."""
    from newsletter.store.db import get_engine

    if existing and (path := missing_database()) is not None:
        fail(f"no database here yet ({path}, from NEWSLETTER_DATABASE_URL or the default): nothing has been "
             "collected, built or sent with it. Run this where you ran `newsletter collect`, or start with "
             "`newsletter init SLUG`")
    require_postgres_driver()
    try:
        return get_engine(settings().database_url)
    except Exception as exc:  # a bad URL or an unreachable server: say which, without the password
        from newsletter.config import redact_url

        fail(f"cannot open the database {redact_url(settings().database_url)}: {exc}")


def newsletters(*, strict: bool = False) -> dict[str, Newsletter]:
    """All schedule files; broken ones are reported (and fatal when strict)."""
    result = load_all(settings().schedules_dir)
    for error in result.errors:
        warn(error)
    if strict and result.errors:
        raise typer.Exit(1)
    return result.newsletters


def newsletter(slug: str) -> Newsletter:
    from newsletter.config import load_newsletter

    path = settings().schedules_dir / f"{slug}.toml"
    if path.exists():
        try:
            return load_newsletter(path)
        except ConfigError as exc:
            fail(str(exc))
    found = newsletters().get(slug)
    if found is None:
        known = ", ".join(sorted(newsletters())) or "none"
        fail(f"no newsletter '{slug}' in {settings().schedules_dir}/ (known: {known}); "
             f"`newsletter init {slug}` makes one")
    return found
