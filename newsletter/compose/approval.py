"""The editor approves exactly what goes out.

Approving records a hash of everything a subscriber would see (`content_hash`); a scheduled send goes ahead only
while the issue still hashes to it, so any edit after approval needs a new approval. Holding stops automatic
sends; reopening makes the issue an editable draft again. The CLI and the editors' web UI both call these.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.orm import Session

from newsletter.compose.issue import content_hash
from newsletter.store.models import IssueRow, utcnow

FROZEN = ("sending", "sent")  # what is going out, or went out, stays as it went out

ApprovalState = Literal["approved", "changed-since-approval", "held", "not-approved", "sending", "sent"]


class ApprovalError(Exception):
    """The issue cannot be approved, held or reopened in its current state; the message says why."""


def _row(session: Session, issue_id: int) -> IssueRow:
    row = session.get(IssueRow, issue_id)
    if row is None:
        raise ApprovalError(f"no issue {issue_id}")
    return row


def current_hash(session: Session, issue_id: int) -> str:
    # Here, not at the top: build pulls in story selection, which `newsletter issue list` has no use for.
    from newsletter.compose.build import load_issue

    session.flush()  # edits made in this session count
    issue = load_issue(session, issue_id)
    if issue is None:
        raise ApprovalError(f"no issue {issue_id}")
    return content_hash(issue)


def approve(session: Session, issue_id: int, editor: str) -> IssueRow:
    """Freeze the issue as it is now: who approved it, when, and the hash of its content."""
    editor = (editor or "").strip()
    if not editor:
        raise ApprovalError("say who approves (an editor's email address)")
    row = _row(session, issue_id)
    if row.status in FROZEN:
        raise ApprovalError(f"issue {issue_id} is already {row.status}: there is nothing to approve")
    row.approved_hash = current_hash(session, issue_id)
    row.approved_at = utcnow()
    row.approved_by = editor[:320]
    row.status = "approved"
    session.flush()
    return row


def hold(session: Session, issue_id: int, editor: str | None = None) -> IssueRow:
    """Stop automatic sending of this issue (and drop any approval) until it is reopened or approved."""
    row = _row(session, issue_id)
    if row.status in FROZEN:
        raise ApprovalError(f"issue {issue_id} is {row.status}: too late to hold it")
    row.status = "held"
    row.approved_at = row.approved_by = row.approved_hash = None
    session.flush()
    return row


def reopen(session: Session, issue_id: int, editor: str | None = None) -> IssueRow:
    """Back to an editable, unapproved draft."""
    row = _row(session, issue_id)
    if row.status in FROZEN:
        raise ApprovalError(f"issue {issue_id} is {row.status}: it can no longer be reopened")
    row.status = "draft"
    row.approved_at = row.approved_by = row.approved_hash = None
    session.flush()
    return row


def is_approved_as_is(session: Session, issue_id: int) -> bool:
    """True only when the issue was approved and its content still hashes to what was approved."""
    row = _row(session, issue_id)
    if not row.approved_hash or row.status == "held":
        return False
    return current_hash(session, issue_id) == row.approved_hash


def approval_state(session: Session, issue_id: int) -> ApprovalState:
    """One word for operators and the editors' UI."""
    row = _row(session, issue_id)
    if row.status in ("sending", "sent", "held"):
        return row.status  # type: ignore[return-value]
    if not row.approved_hash:
        return "not-approved"
    return "approved" if is_approved_as_is(session, issue_id) else "changed-since-approval"
