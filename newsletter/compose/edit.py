"""Editors' changes to an issue: include or drop a story, reorder, rewrite a summary, pick quotes, set the intro.

Each change is refused once the issue is sending or sent (what went out stays as it went out). A change to an
approved issue puts it back to needing approval: approval is of the exact content, so a new version needs a
new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from newsletter.compose import approval
from newsletter.compose.issue import has_content
from newsletter.store.models import IssueItem, IssueRow, utcnow

FROZEN = ("sending", "sent")
MAX_SUMMARY = 4000
MAX_INTRO = 10000

T = TypeVar("T")


class EditError(ValueError):
    """The change cannot be made; the message says why."""


class NotFound(EditError):
    """No such issue, or no such story in it."""


class Frozen(EditError):
    """The issue is sending or sent."""


@dataclass
class Edit:
    issue_id: int
    changed: bool
    reopened: bool = False  # the issue was approved and now needs approval again


def editable_issue(session: Session, issue_id: int) -> IssueRow:
    row = session.get(IssueRow, issue_id)
    if row is None:
        raise NotFound(f"no issue {issue_id}")
    if row.status in FROZEN:
        raise Frozen(f"issue {issue_id} is {row.status}: it can no longer be changed")
    return row


def _item(row: IssueRow, item_id: int) -> IssueItem:
    for item in row.items:
        if item.id == item_id:
            return item
    raise NotFound(f"issue {row.id} has no story {item_id}")


def _done(session: Session, row: IssueRow, changed: bool) -> Edit:
    if not changed:
        return Edit(row.id, False)
    row.updated_at = utcnow()
    row.html = row.text = row.rendered_hash = None  # the stored render is of the old content
    reopened = row.status == "approved"
    if reopened:
        _unapprove(session, row)
    session.flush()
    return Edit(row.id, True, reopened)


def _unapprove(session: Session, row: IssueRow) -> None:
    session.flush()
    approval.reopen(session, row.id)


def set_included(session: Session, issue_id: int, item_id: int, included: bool) -> Edit:
    row = editable_issue(session, issue_id)
    item = _item(row, item_id)
    if item.included == included:
        return Edit(row.id, False)
    item.included = included
    if not has_content(row):  # the same rule as sending: stories, or at least an editor's note
        item.included = True
        raise EditError("an issue needs at least one story or an intro note: include another story (or write "
                        "an intro) before dropping this one")
    return _done(session, row, True)


def reorder(session: Session, issue_id: int, item_ids: list[int]) -> Edit:
    """Put the stories in this order; the list must name every story of the issue once."""
    row = editable_issue(session, issue_id)
    current = [i.id for i in sorted(row.items, key=lambda i: i.position)]
    if sorted(item_ids) != sorted(current) or len(set(item_ids)) != len(item_ids):
        raise EditError(f"the new order must list each story of issue {issue_id} once: {sorted(current)}")
    if item_ids == current:
        return Edit(row.id, False)
    by_id = {i.id: i for i in row.items}
    for position, item_id in enumerate(item_ids):
        by_id[item_id].position = position
    return _done(session, row, True)


def move(session: Session, issue_id: int, item_id: int, offset: int) -> Edit:
    """Move a story up (negative offset) or down, stopping at either end."""
    row = editable_issue(session, issue_id)
    order = [i.id for i in sorted(row.items, key=lambda i: i.position)]
    if item_id not in order:
        raise NotFound(f"issue {issue_id} has no story {item_id}")
    old = order.index(item_id)
    new = max(0, min(len(order) - 1, old + offset))
    order.insert(new, order.pop(old))
    return reorder(session, issue_id, order)


def set_summary(session: Session, issue_id: int, item_id: int, summary: str) -> Edit:
    row = editable_issue(session, issue_id)
    item = _item(row, item_id)
    summary = " ".join((summary or "").split())  # summaries are one paragraph; pasted line breaks are noise
    if len(summary) > MAX_SUMMARY:
        raise EditError(f"the summary is {len(summary)} characters long; keep it under {MAX_SUMMARY}")
    if summary == item.summary:
        return Edit(row.id, False)
    item.summary = summary
    if item.summary_method != "editor":
        item.notes = {**(item.notes or {}), "summary_before_editor": item.summary_method}
    item.summary_method = "editor"
    return _done(session, row, True)


def quote_candidates(item: IssueItem) -> list[dict[str, Any]]:
    """Every quote build found for the story, so a dropped quote can be picked again later."""
    kept = (item.notes or {}).get("quote_candidates")
    return list(kept) if isinstance(kept, list) else list(item.quotes or [])


def keep_quotes(session: Session, issue_id: int, item_id: int, keep: list[int]) -> Edit:
    """Keep these quotes (indexes into quote_candidates), in the candidates' order."""
    row = editable_issue(session, issue_id)
    item = _item(row, item_id)
    candidates = quote_candidates(item)
    wrong = [k for k in keep if not 0 <= k < len(candidates)]
    if wrong:
        raise EditError(f"story {item_id} has {len(candidates)} quote(s); there is no quote {wrong[0] + 1}")
    chosen = [dict(candidates[k]) for k in sorted(set(keep))]
    if chosen == list(item.quotes or []):
        return Edit(row.id, False)
    item.notes = {**(item.notes or {}), "quote_candidates": candidates}
    item.quotes = chosen
    return _done(session, row, True)


def set_intro(session: Session, issue_id: int, intro: str | None) -> Edit:
    row = editable_issue(session, issue_id)
    intro = (intro or "").replace("\r\n", "\n").strip() or None
    if intro and len(intro) > MAX_INTRO:
        raise EditError(f"the intro is {len(intro)} characters long; keep it under {MAX_INTRO}")
    if intro == row.intro:
        return Edit(row.id, False)
    before, row.intro = row.intro, intro
    if not has_content(row):
        row.intro = before
        raise EditError("an issue needs at least one story or an intro note: include a story before removing "
                        "the intro")
    return _done(session, row, True)
