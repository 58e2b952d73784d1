"""Approve, hold and reopen an issue from the web pages and the API: the scheduler's rules
(newsletter.compose.approval), plus the one thing a web editor can get wrong that the CLI's operator cannot:
approving an issue with nothing in it (every story dropped and no intro).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.compose import approval
from newsletter.compose.issue import has_content
from newsletter.store.models import IssueRow

ApprovalError = approval.ApprovalError
hold = approval.hold
reopen = approval.reopen
is_approved_as_is = approval.is_approved_as_is
approval_state = approval.approval_state


def approve(session: Session, issue_id: int, editor: str) -> None:
    row = session.get(IssueRow, issue_id)
    if row is not None and row.status not in approval.FROZEN and not has_content(row):
        raise ApprovalError(f"issue {issue_id} has no stories and no intro: there is nothing to send")
    approval.approve(session, issue_id, editor)
