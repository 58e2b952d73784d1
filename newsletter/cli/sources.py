"""`newsletter sources`: what collect knows of each feed, and `enable` to poll a feed that answered 410 again."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlalchemy import select

from newsletter.cli.common import console, engine, fail
from newsletter.store.db import session_scope
from newsletter.store.models import Source


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Feeds as collect knows them: status, permanent redirects, 410 Gone.",
                        no_args_is_help=True)
    app.add_typer(group, name="sources")

    @group.command("list")
    def list_cmd() -> None:
        """Every feed collected so far, with its last status and where it is polled.

        Example: `newsletter sources list`
        """
        table = Table(title="Sources")
        for col in ("url", "status", "polled at", "failures", "problem"):
            table.add_column(col, overflow="fold")
        with session_scope(engine()) as session:
            for row in session.scalars(select(Source).order_by(Source.url)):
                status = "gone" if row.gone_at else (row.last_status or "never collected")
                table.add_row(row.url, status, row.moved_to or "", str(row.failures or 0), row.last_error or "")
        console.print(table)

    @group.command("enable")
    def enable_cmd(url: str = typer.Argument(..., help="The feed's URL as the schedule file lists it.")) -> None:
        """Poll a feed that answered 410 Gone (or kept failing) again on the next collect.

        Example: `newsletter sources enable https://example.com/feed.xml`
        """
        with session_scope(engine()) as session:
            row = session.scalar(select(Source).where(Source.url == url))
            if row is None:
                fail(f"no source {url} (collect has never seen it; `newsletter sources list` shows those it has)")
            was = "gone (410)" if row.gone_at else (row.last_status or "never collected")
            row.gone_at = None
            row.next_attempt_at = None
            row.failures = 0
        console.print(f"{url}: was {was}; the next `newsletter collect` polls it.")
