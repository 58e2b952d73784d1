"""`newsletter report SLUG [--issue N] [--json]`: what happened after the sends (the figures of the editor's
report page and of GET /api/newsletters/{slug}/report, from newsletter.report.figures)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from newsletter.cli.common import console, engine, fail, missing_database, settings


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        slug: str = typer.Argument(..., help="The newsletter."),
        issue: int = typer.Option(None, "--issue", help="The issue's number: its full report (default: every "
                                  "sent issue, one line each)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (the same as the API's)."),
        release: bool = typer.Option(False, "--release", help="Release the guard's hold on scheduled sends "
                                     "(after a complaint or bounce rate passed its line)."),
    ) -> None:
        """What happened after the sends: delivered, bounced, complained, unsubscribed, clicks per story, opens.

        Example: `newsletter report ai-weekly --issue 3`
        """
        from sqlalchemy import select

        from newsletter.config import load_all
        from newsletter.report import guard
        from newsletter.report.figures import issue_report, trend
        from newsletter.store.db import session_scope
        from newsletter.store.models import IssueRow, NewsletterRow

        if missing_database() is not None:
            fail("no database yet: nothing has been sent")
        with session_scope(engine()) as session:
            nl_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug))
            if nl_id is None:
                fail(f"no newsletter '{slug}' in the database")
            if release:
                n = guard.release(session, slug, "cli")
                console.print(f"{slug}: released, scheduled sends go out again" if n else f"{slug}: nothing was held")
                return
            nl = load_all(settings().schedules_dir).newsletters.get(slug)
            if nl is not None:
                guard.check(session, nl)
            if issue is not None:
                issue_id = session.scalar(select(IssueRow.id).where(IssueRow.newsletter_id == nl_id,
                                                                    IssueRow.number == issue))
                if issue_id is None:
                    fail(f"{slug} has no issue #{issue}")
                r = issue_report(session, issue_id)
                if as_json:
                    typer.echo(json.dumps(r.to_json(), indent=2))
                    return
                _print_issue(r)
                return
            t = trend(session, slug)
        if as_json:
            typer.echo(json.dumps(t.to_json(), indent=2))
            return
        if t.hold:
            console.print(f"[red]HELD:[/] {t.hold}", highlight=False)
        table = Table(title=f"{slug}: sent issues")
        for col in ("issue", "sent", "audience", "delivered", "unique clickers", "click rate", "unsubscribed"):
            table.add_column(col)
        for i in t.issues:
            table.add_row(f"#{i.number}", i.sent_at or "—", str(i.audience), str(i.delivered), str(i.clickers),
                          f"{i.click_rate:.2%}", str(i.unsubscribed))
        console.print(table)


def _print_issue(r) -> None:  # noqa: ANN001 - an IssueReport
    from newsletter.report.figures import summary_rows

    console.print(f"{r.newsletter} issue #{r.number}: {r.subject}", highlight=False)
    console.print(f"sent {r.sent_at or 'not yet'} via {r.mailer or '—'}", highlight=False)
    table = Table(show_header=False)
    for name, value in summary_rows(r):
        table.add_row(name, value)
    console.print(table)
    stories = Table(title="Clicks per story")
    for col in ("#", "story", "clicks", "unique clicks"):
        stories.add_column(col)
    for s in r.stories:
        stories.add_row(str(s.position), s.title, str(s.clicks), str(s.unique_clicks))
    console.print(stories)
    days = Table(title="First days")
    for col in ("day", "date", "clicks", "opens"):
        days.add_column(col)
    for d in r.days:
        days.add_row(str(d.day), d.date, str(d.clicks), str(d.opens))
    console.print(days)
