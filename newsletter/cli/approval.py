"""`newsletter issue approve/hold/reopen`: the editor decides what a schedule may send."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable

import typer
from sqlalchemy.orm import Session

from newsletter.cli.common import console, engine, fail
from newsletter.compose.approval import ApprovalError, approve, hold, reopen
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow


def _default_editor() -> str:
    return os.environ.get("NEWSLETTER_EDITOR") or getpass.getuser()


def _change(change: Callable[[Session, int, str], IssueRow], issue_id: int) -> tuple[int, str]:
    """Hold or reopen the issue as the default editor; the issue's number and newsletter, or the reason it fails."""
    with session_scope(engine(existing=True)) as session:
        try:
            row = change(session, issue_id, _default_editor())
        except ApprovalError as exc:
            fail(str(exc))
        return row.number, row.newsletter.slug


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the commands join the `issue` group
    from newsletter.cli.issues import issue_app

    @issue_app.command("approve")
    def approve_cmd(
        issue_id: int = typer.Argument(..., help="Issue id (see `newsletter issue list`)."),
        by: str = typer.Option(None, "--by", help="Who approves (default: $NEWSLETTER_EDITOR or your login)."),
    ) -> None:
        """Approve the issue exactly as it is now; any later change needs a new approval.

        Example: `newsletter issue approve 3 --by ann@example.com`
        """
        editor = by or _default_editor()
        with session_scope(engine(existing=True)) as session:
            try:
                row = approve(session, issue_id, editor)
            except ApprovalError as exc:
                fail(str(exc))
            number, slug, digest = row.number, row.newsletter.slug, row.approved_hash or ""  # approve() set it
        console.print(f"Approved issue #{number} of {slug} (id {issue_id}) as {editor}; content {digest[:12]}. "
                      "A scheduled send will deliver exactly this.", highlight=False)

    @issue_app.command("hold")
    def hold_cmd(issue_id: int = typer.Argument(..., help="Issue id.")) -> None:
        """Stop a scheduled send of this issue until it is approved or reopened.

        Example: `newsletter issue hold 3`
        """
        number, slug = _change(hold, issue_id)
        console.print(f"Held issue #{number} of {slug} (id {issue_id}): the schedule will not send it.")

    @issue_app.command("reopen")
    def reopen_cmd(issue_id: int = typer.Argument(..., help="Issue id.")) -> None:
        """Make the issue an editable, unapproved draft again.

        Example: `newsletter issue reopen 3`
        """
        number, slug = _change(reopen, issue_id)
        console.print(f"Reopened issue #{number} of {slug} (id {issue_id}) as a draft.")
