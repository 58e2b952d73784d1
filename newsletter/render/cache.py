"""Render once per issue and variant: the HTML and text are kept with the issue (the default variant) or in
`issue_render` (readers who turned sections off, text-only readers) and redone only when its content changes.
Once its send has started, a variant's kept render is what every batch of it gets, in any process."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import Engine

from newsletter.compose.build import load_issue
from newsletter.compose.issue import content_hash
from newsletter.config import Newsletter
from newsletter.render.engine import Rendered, default_templates_dir, preheader_for, render_issue
from newsletter.render.tokens import defuse
from newsletter.render.variant import DEFAULT, Variant
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRender, IssueRow

# Bumped when a render made by older code must not be reused: "tokens-2" renders defuse content's placeholders.
RENDER_FORMAT = "tokens-2"


def _fingerprint(issue_hash: str, templates_dir: Path | None, comment_counts: dict[int, int] | None = None) -> str:
    """The issue's content plus the templates it is rendered with (and the stories' comment counts, when there
    are any, for the "Discuss" links): changing any of them means rendering again."""
    h = hashlib.sha256(issue_hash.encode())
    h.update(RENDER_FORMAT.encode())
    if comment_counts:  # none: the fingerprint renders made before comments existed had
        h.update(repr(sorted(comment_counts.items())).encode())
    for folder in (templates_dir, default_templates_dir()):
        if folder and folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    h.update(str(path.relative_to(folder)).encode())
                    h.update(path.read_bytes())
    return h.hexdigest()


def rendered_issue(
    engine: Engine, issue_id: int, nl: Newsletter, *, base_url: str, templates_dir: Path | None = None,
    force: bool = False, comment_counts: dict[int, int] | None = None, variant: Variant = DEFAULT,
) -> Rendered:
    """The issue's kept render, or a new one. `comment_counts` (issue_item id -> comments) are what its
    "Discuss" links say (at the time of the render a send makes: a sent issue is never rendered again)."""
    if not variant.default:
        return _variant_render(engine, issue_id, nl, base_url=base_url, templates_dir=templates_dir, force=force,
                               comment_counts=comment_counts, variant=variant)
    with session_scope(engine) as session:
        row = session.get(IssueRow, issue_id)
        issue = load_issue(session, issue_id)
        if row is None or issue is None:
            raise LookupError(f"no issue {issue_id}")
        digest = _fingerprint(content_hash(issue), templates_dir, comment_counts)
        if not force and row.html and row.text and row.rendered_hash == digest:
            return Rendered(defuse(issue.subject), preheader_for(issue), row.html, row.text, "cached", 0.0)
        rendered = render_issue(issue, nl, base_url=base_url, templates_dir=templates_dir,
                                comment_counts=comment_counts)
        if row.status not in ("sending", "sent"):  # what went out stays as it went out
            row.html, row.text, row.rendered_hash = rendered.html, rendered.text, digest
        return rendered


def _variant_render(
    engine: Engine, issue_id: int, nl: Newsletter, *, base_url: str, templates_dir: Path | None, force: bool,
    comment_counts: dict[int, int] | None, variant: Variant,
) -> Rendered:
    with session_scope(engine) as session:
        row = session.get(IssueRow, issue_id)
        issue = load_issue(session, issue_id)
        if row is None or issue is None:
            raise LookupError(f"no issue {issue_id}")
        digest = hashlib.sha256((_fingerprint(content_hash(issue), templates_dir, comment_counts) + "\x00"
                                 + variant.key).encode()).hexdigest()
        kept = session.get(IssueRender, (issue_id, variant.key))
        sending = row.status in ("sending", "sent")
        if kept is not None and not force and (kept.rendered_hash == digest or sending):
            # Once the issue is going out, the copy its first batch got is the copy (what went out stays).
            return Rendered(defuse(issue.subject), preheader_for(issue), kept.html, kept.text, "cached", 0.0)
        rendered = render_issue(issue, nl, base_url=base_url, templates_dir=templates_dir,
                                comment_counts=comment_counts, variant=variant)
        if kept is None:
            session.add(IssueRender(issue_id=issue_id, variant=variant.key, html=rendered.html, text=rendered.text,
                                    rendered_hash=digest))
        elif not sending:
            kept.html, kept.text, kept.rendered_hash = rendered.html, rendered.text, digest
        return rendered
