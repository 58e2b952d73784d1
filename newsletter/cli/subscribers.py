"""`newsletter subscribers ...`: add, import, list."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from newsletter.cli.common import console, engine, fail, newsletter
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.subscribers.manage import InvalidAddress, add_subscriber, import_csv, list_subscriptions

NEWSLETTER_OPT = typer.Option(..., "--newsletter", "-n", help="The newsletter's slug.")


def register(app: typer.Typer) -> None:
    sub_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)
    app.add_typer(sub_app, name="subscribers")

    @sub_app.command("add")
    def add_cmd(
        email: str = typer.Argument(..., help="The address."),
        slug: str = NEWSLETTER_OPT,
        name: str = typer.Option(None, "--name", help="The person's name."),
    ) -> None:
        """Subscribe one address. Example: `newsletter subscribers add ann@example.com -n ai-weekly`"""
        nl = newsletter(slug)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            try:
                result = add_subscriber(session, row, email, name=name)
            except InvalidAddress as exc:
                fail(f"{email}: {exc}")
        messages = {"added": "subscribed", "exists": "already subscribed",
                    "suppressed": "NOT subscribed: the address unsubscribed, bounced or complained before"}
        console.print(f"{result.email}: {messages[result.status]}")

    @sub_app.command("import")
    def import_cmd(
        path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV with an 'email' column."),
        slug: str = NEWSLETTER_OPT,
    ) -> None:
        """Import subscribers from CSV (email, name, any other columns). Bad rows are reported, the rest kept.

        Example: `newsletter subscribers import people.csv -n ai-weekly`
        """
        nl = newsletter(slug)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            try:
                report = import_csv(session, row, path)
            except (InvalidAddress, UnicodeDecodeError) as exc:
                fail(str(exc))
        for problem in report.problems:
            console.print(f"[yellow]{path}: line {problem.row}:[/] {problem.value!r}: {problem.reason}",
                          highlight=False)
        console.print(f"{report.added} added, {report.existing} already subscribed, "
                      f"{report.suppressed} suppressed, {len(report.problems)} rejected.")

    @sub_app.command("list")
    def list_cmd(
        slug: str = NEWSLETTER_OPT,
        status: str = typer.Option(None, "--status", help="Only this status (active, pending, unsubscribed...)."),
    ) -> None:
        """List subscribers. Example: `newsletter subscribers list -n ai-weekly --status active`"""
        nl = newsletter(slug)
        table = Table()
        for col in ("email", "name", "status", "since"):
            table.add_column(col)
        with session_scope(engine()) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            rows = list_subscriptions(session, row, status)
        for email, name, state, created in rows:
            table.add_row(email, name or "", state, f"{created:%Y-%m-%d}")
        console.print(table)
        console.print(f"{len(rows)} subscribers")
