"""`newsletter build` and `newsletter issue ...`: make the next issue and look at issues."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum

import typer
from rich.markup import escape
from sqlalchemy import select

from newsletter.cli.common import console, engine, fail, newsletter
from newsletter.cli.start import IssueLine, issue_table
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow

# Module level so that other command modules (approval) add their commands to the same `issue` group.
issue_app = typer.Typer(help="Look at, approve and hold issues.", no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        slug: str = typer.Argument(..., help="The newsletter (its schedule file name)."),
        no_enrich: bool = typer.Option(False, "--no-enrich", help="Skip summaries, quotes and related reading."),
        since: datetime = typer.Option(None, "--since", formats=["%Y-%m-%d"], help="Take items published since "
                                       "this date (UTC), instead of the last `window_days` (a first issue from "
                                       "older feeds)."),
        window_days: int = typer.Option(None, "--window-days", min=1, help="This time only: a window of N days "
                                        "instead of the schedule file's `digest.window_days`."),
    ) -> None:
        """Build the next issue as a draft from the items collected in the window.

        Rebuilding replaces the current draft. Example: `newsletter build ai-weekly`, or for a first issue from
        older feeds `newsletter build ai-weekly --since 2026-01-01`
        """
        from newsletter.compose.build import BuildError, build_issue  # selection and enrichment: not for `list`

        nl = newsletter(slug)
        if since is not None and window_days is not None:
            fail("--since and --window-days both set the window: give one of them")
        if window_days is not None:  # not capped as the file's setting is: a one-off, chosen by hand
            nl = nl.model_copy(update={"digest": nl.digest.model_copy(update={"window_days": window_days})})
        try:
            result = build_issue(engine(), nl, enrich=not no_enrich, since=since)
        except BuildError as exc:
            fail(str(exc))
        if result.stale:
            fail(f"no issue built: {result.stale}")
        for problem in result.problems:
            console.print(f"[yellow]note:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        if result.issue_id is None:
            console.print(f"Run `newsletter collect {slug}` to fetch new items.")
            return
        verb = "Rebuilt" if result.rebuilt else "Built"
        console.print(f"{verb} issue #{result.number} (id {result.issue_id}) of {slug} with {result.items} stories.")
        if result.enrichment:
            console.print(f"Enriched: {result.enrichment}", highlight=False)

    app.add_typer(issue_app, name="issue")

    @issue_app.command("show")
    def show_cmd(
        issue_id: int = typer.Argument(..., help="Issue id (see `newsletter issue list`)."),
        fmt: Format = typer.Option(Format.table, "--format", help="table, or json (a stable, documented format)."),
    ) -> None:
        """Show an issue. Example: `newsletter issue show 3 --format json`"""
        from newsletter.compose.build import BuildError, resolve_issue
        from newsletter.compose.issue import issue_to_json

        with session_scope(engine(existing=True)) as session:
            row = session.get(IssueRow, issue_id)
            if row is None:
                fail(f"no issue {issue_id}")
            try:
                issue = resolve_issue(session, row.newsletter.slug, issue_id)
            except BuildError as exc:
                fail(str(exc))
        if fmt is Format.json:
            typer.echo(json.dumps(issue_to_json(issue), indent=2, ensure_ascii=False))
            return
        # Feed text is data, not Rich markup (a "[1]" in a title must print as it is); URLs never wrap.
        console.print(f"[bold]{escape(issue.subject)}[/] — {issue.newsletter} #{issue.number}, {issue.status}")
        for story in issue.stories:
            console.print(f"\n[bold]{story.position + 1}. {escape(story.title)}[/]\n   "
                          f"{escape(story.source)} · {escape(story.url)}", highlight=False, soft_wrap=True)
            if story.summary:
                console.print(f"   {escape(story.summary)}", highlight=False)
            for quote in story.quotes:
                console.print(f"   “{escape(quote.text)}”" + (f" — {escape(quote.speaker)}" if quote.speaker else ""),
                              highlight=False)
            for label, links in (("related", story.related), ("also covered by", story.also_covered_by)):
                for link in links:
                    console.print(f"   {label}: {escape(link.title)} ({escape(link.source or '')}) {escape(link.url)}",
                                  highlight=False, soft_wrap=True)

    @issue_app.command("list")
    def list_cmd(slug: str = typer.Argument(None, help="Only this newsletter.")) -> None:
        """List issues, newest first. Example: `newsletter issue list ai-weekly`"""
        # On SQLite at the newest schema, cli/start.py answers this before Typer loads, with the same table.
        with session_scope(engine(existing=True)) as session:
            query = select(IssueRow).join(NewsletterRow).order_by(IssueRow.id.desc())
            if slug:
                query = query.where(NewsletterRow.slug == slug)
            lines = [IssueLine(row.id, row.newsletter.slug, row.number, row.status,
                               sum(1 for i in row.items if isinstance(i, IssueItem) and i.included),
                               row.subject, row.created_at)
                     for row in session.scalars(query)]
        console.print(issue_table(lines))
