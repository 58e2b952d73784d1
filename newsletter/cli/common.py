"""What every command needs: settings, the database, the newsletters, and a way to fail clearly."""

from __future__ import annotations

from functools import cache
from typing import NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

from newsletter.config import ConfigError, Newsletter, Settings, load_all, settings_from_env

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@cache
def settings() -> Settings:
    try:
        return settings_from_env()
    except ConfigError as exc:
        fail(str(exc))


def engine() -> Engine:
    from newsletter.store.db import get_engine

    try:
        return get_engine(settings().database_url)
    except Exception as exc:  # a bad URL or an unreachable server: say which, without the password
        from newsletter.config import redact_url

        fail(f"cannot open the database {redact_url(settings().database_url)}: {exc}")


def newsletters(*, strict: bool = False) -> dict[str, Newsletter]:
    """All schedule files; broken ones are reported (and fatal when strict)."""
    result = load_all(settings().schedules_dir)
    for error in result.errors:
        err_console.print(f"[yellow]warning:[/] {error}", highlight=False)
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
