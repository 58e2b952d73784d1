"""Render once per issue: the HTML and text are kept with the issue and redone only when its content changes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from sqlalchemy import Engine

from newsletter.compose.build import load_issue
from newsletter.compose.issue import content_hash, issue_to_json
from newsletter.config import Newsletter
from newsletter.render.engine import Rendered, default_templates_dir, preheader_for, render_issue
from newsletter.render.tokens import defuse
from newsletter.render.tracking import TrackSigner, apply, issue_links
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow

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


def rendered_issue(
    engine: Engine, issue_id: int, nl: Newsletter, *, base_url: str, templates_dir: Path | None = None,
    force: bool = False, comment_counts: dict[int, int] | None = None,
    tracker: TrackSigner | None = None, clicks: bool = False, opens: bool = False,
) -> Rendered:
    """The issue's kept render, or a new one. `comment_counts` (issue_item id -> comments) are what its
    "Discuss" links say (at the time of the render a send makes: a sent issue is never rendered again).
    With a `tracker`, `clicks` and `opens` put tracked links and the open pixel in (newsletter.render.tracking)."""
    clicks, opens = (clicks, opens) if tracker is not None else (False, False)
    mode = ("clicks," if clicks else "") + ("opens" if opens else "")
    with session_scope(engine) as session:
        row = session.get(IssueRow, issue_id)
        issue = load_issue(session, issue_id)
        if row is None or issue is None:
            raise LookupError(f"no issue {issue_id}")
        digest = _fingerprint(content_hash(issue), templates_dir, comment_counts,
                              f"tracking:{mode}:{base_url}" if mode else "")
        if not force and row.html and row.text and row.rendered_hash == digest:
            return Rendered(defuse(issue.subject), preheader_for(issue), row.html, row.text, "cached", 0.0)
        rendered = render_issue(issue, nl, base_url=base_url, templates_dir=templates_dir,
                                comment_counts=comment_counts)
        if tracker is not None and mode:
            html, text = apply(rendered.html, rendered.text, signer=tracker, base_url=base_url, issue_id=issue_id,
                               links=issue_links(issue_to_json(issue)["items"]), clicks=clicks, opens=opens)
            rendered = dataclasses.replace(rendered, html=html, text=text)
        if row.status not in ("sending", "sent"):  # what went out stays as it went out
            row.html, row.text, row.rendered_hash = rendered.html, rendered.text, digest
        return rendered
