"""Approve, hold and reopen an issue from the web and the API.

The scheduler's rules (newsletter.build.approval) are used when they are installed; until then these
functions apply the same rule themselves: approval records the content hash of the issue as approved, so an
edit afterwards means approving again.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sqlalchemy.orm import Session

from newsletter.build.build import load_issue
from newsletter.build.issue import content_hash
from newsletter.store.models import IssueRow, utcnow


class ApprovalError(ValueError):
    pass


def _scheduler() -> ModuleType | None:
    try:
        return importlib.import_module("newsletter.build.approval")
    except ImportError:
        return None


def _row(session: Session, issue_id: int) -> IssueRow:
    row = session.get(IssueRow, issue_id)
    if row is None:
        raise ApprovalError(f"no issue {issue_id}")
    return row


def _call(name: str, *args: object) -> bool:
    """Run the scheduler's function when it exists; its own errors become ApprovalError."""
    module = _scheduler()
    func = getattr(module, name, None) if module else None
    if func is None:
        return False
    refused = getattr(module, "ApprovalError", ValueError)
    try:
        func(*args)
    except refused as exc:
        raise ApprovalError(str(exc)) from None
    return True


def approve(session: Session, issue_id: int, editor: str) -> None:
    row = _row(session, issue_id)
    if row.status in ("sending", "sent"):
        raise ApprovalError(f"issue {issue_id} is {row.status}: there is nothing to approve")
    if not any(i.included for i in row.items):
        raise ApprovalError(f"issue {issue_id} has no stories: include at least one before approving")
    if _call("approve", session, issue_id, editor):
        return
    issue = load_issue(session, issue_id)
    row.status, row.approved_at, row.approved_by = "approved", utcnow(), editor
    row.approved_hash = content_hash(issue)


def hold(session: Session, issue_id: int) -> None:
    row = _row(session, issue_id)
    if row.status in ("sending", "sent"):
        raise ApprovalError(f"issue {issue_id} is {row.status}: it can no longer be held")
    if _call("hold", session, issue_id):
        return
    row.status = "held"
    row.approved_at = row.approved_by = row.approved_hash = None


def reopen(session: Session, issue_id: int) -> None:
    """Back to a draft: it needs approving before it goes out."""
    row = _row(session, issue_id)
    if row.status in ("sending", "sent"):
        raise ApprovalError(f"issue {issue_id} is {row.status}: it can no longer be reopened")
    if _call("reopen", session, issue_id):
        return
    row.status = "draft"
    row.approved_at = row.approved_by = row.approved_hash = None


def is_approved_as_is(session: Session, issue_id: int) -> bool:
    module = _scheduler()
    func = getattr(module, "is_approved_as_is", None) if module else None
    if func is not None:
        return bool(func(session, issue_id))
    row = _row(session, issue_id)
    if row.status != "approved" or not row.approved_hash:
        return False
    issue = load_issue(session, issue_id)
    return issue is not None and content_hash(issue) == row.approved_hash
