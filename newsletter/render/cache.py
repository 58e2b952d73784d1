"""Render once per issue and variant: the HTML and text are kept with the issue (the default variant) or in
`issue_render` (readers who turned sections off, text-only readers) and redone only when its content changes.
Once its send has started, a variant's kept render is what every batch of it gets, in any process."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from newsletter.compose.build import load_issue
from newsletter.compose.issue import content_hash, issue_to_json
from newsletter.config import Newsletter
from newsletter.render.engine import Rendered, default_templates_dir, preheader_for, render_issue
from newsletter.render.tokens import defuse
from newsletter.render.tracking import TrackSigner, apply, issue_links
from newsletter.render.variant import DEFAULT, Variant
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRender, IssueRow

# Bumped when a render made by older code must not be reused: "tokens-2" renders defuse content's placeholders.
RENDER_FORMAT = "tokens-2"


def _fingerprint(issue_hash: str, templates_dir: Path | None, comment_counts: dict[int, int] | None = None,
                 tracking: str = "") -> str:
    """The issue's content plus the templates it is rendered with (and the stories' comment counts, when there
    are any, for the "Discuss" links): changing any of them means rendering again."""
    h = hashlib.sha256(issue_hash.encode())
    h.update(RENDER_FORMAT.encode())
    if comment_counts:  # none: the fingerprint renders made before comments existed had
        h.update(repr(sorted(comment_counts.items())).encode())
    if tracking:  # none: as before tracking existed
        h.update(tracking.encode())
    for folder in (templates_dir, default_templates_dir()):
        if folder and folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    h.update(str(path.relative_to(folder)).encode())
                    h.update(path.read_bytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class _Tracking:
    """What the schedule file's [tracking] puts into a render (nothing without a tracker)."""

    tracker: TrackSigner | None
    clicks: bool
    opens: bool
    base_url: str

    @property
    def key(self) -> str:
        if self.tracker is None or not (self.clicks or self.opens):
            return ""
        return f"tracking:{'clicks,' if self.clicks else ''}{'opens' if self.opens else ''}:{self.base_url}"

    def apply(self, rendered: Rendered, issue_id: int, issue: Any) -> Rendered:
        if not self.key or self.tracker is None:
            return rendered
        html, text = apply(rendered.html, rendered.text, signer=self.tracker, base_url=self.base_url,
                           issue_id=issue_id, links=issue_links(issue_to_json(issue)["items"]), clicks=self.clicks,
                           opens=self.opens)
        return dataclasses.replace(rendered, html=html, text=text)


def rendered_issue(
    engine: Engine, issue_id: int, nl: Newsletter, *, base_url: str, templates_dir: Path | None = None,
    force: bool = False, comment_counts: dict[int, int] | None = None, variant: Variant = DEFAULT,
    tracker: TrackSigner | None = None, clicks: bool = False, opens: bool = False,
) -> Rendered:
    """The issue's kept render, or a new one. `comment_counts` (issue_item id -> comments) are what its
    "Discuss" links say (at the time of the render a send makes: a sent issue is never rendered again).
    With a `tracker`, `clicks` and `opens` put tracked links and the open pixel in (newsletter.render.tracking)."""
    tracking = _Tracking(tracker, clicks, opens, base_url)
    if not variant.default:
        return _variant_render(engine, issue_id, nl, base_url=base_url, templates_dir=templates_dir, force=force,
                               comment_counts=comment_counts, variant=variant, tracking=tracking)
    with session_scope(engine) as session:
        row = session.get(IssueRow, issue_id)
        issue = load_issue(session, issue_id)
        if row is None or issue is None:
            raise LookupError(f"no issue {issue_id}")
        digest = _fingerprint(content_hash(issue), templates_dir, comment_counts, tracking.key)
        if not force and row.html and row.text and row.rendered_hash == digest:
            return Rendered(defuse(issue.subject), preheader_for(issue), row.html, row.text, "cached", 0.0)
        rendered = tracking.apply(render_issue(issue, nl, base_url=base_url, templates_dir=templates_dir,
                                               comment_counts=comment_counts), issue_id, issue)
        if row.status not in ("sending", "sent"):  # what went out stays as it went out
            row.html, row.text, row.rendered_hash = rendered.html, rendered.text, digest
        return rendered


def _variant_render(
    engine: Engine, issue_id: int, nl: Newsletter, *, base_url: str, templates_dir: Path | None, force: bool,
    comment_counts: dict[int, int] | None, variant: Variant, tracking: _Tracking,
) -> Rendered:
    with session_scope(engine) as session:
        row = session.get(IssueRow, issue_id)
        issue = load_issue(session, issue_id)
        if row is None or issue is None:
            raise LookupError(f"no issue {issue_id}")
        digest = hashlib.sha256((_fingerprint(content_hash(issue), templates_dir, comment_counts, tracking.key) + "\x00"
                                 + variant.key).encode()).hexdigest()
        kept = session.get(IssueRender, (issue_id, variant.key))
        sending = row.status in ("sending", "sent")
        if kept is not None and not force and (kept.rendered_hash == digest or sending):
            # Once the issue is going out, the copy its first batch got is the copy (what went out stays).
            return Rendered(defuse(issue.subject), preheader_for(issue), kept.html, kept.text, "cached", 0.0)
        rendered = tracking.apply(render_issue(issue, nl, base_url=base_url, templates_dir=templates_dir,
                                               comment_counts=comment_counts, variant=variant), issue_id, issue)
        if kept is None:
            session.add(IssueRender(issue_id=issue_id, variant=variant.key, html=rendered.html, text=rendered.text,
                                    rendered_hash=digest))
        elif not sending:
            kept.html, kept.text, kept.rendered_hash = rendered.html, rendered.text, digest
        return rendered
