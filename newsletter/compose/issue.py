"""The issue as a plain data object: what templates render, editors edit, and `issue show --format json` prints.

The JSON form is a public interface (documented in the README): add fields, never rename or remove them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from newsletter.store.models import IssueItem, IssueRow
from newsletter.urls import web_url

# 2: each quote has `kind` ("speech" or "passage") and `start`/`end` offsets in the article text (null for a
# quote stored before version 2, whose kind is then inferred: "speech" when it names a speaker).
JSON_VERSION = 2


def has_content(row: IssueRow) -> bool:
    """Stories, or at least an editor's note (a "nothing new this week" issue sent on purpose)."""
    return any(i.included for i in row.items) or bool((row.intro or "").strip())


QUOTE_KINDS = ("speech", "passage")


@dataclass
class Quote:
    """A key quote. `speech`: words someone said, shown in quotation marks with the speaker. `passage`: a key
    statement of the article itself, shown without quotation marks and credited to the publication."""

    text: str
    speaker: str | None = None
    kind: str = "speech"
    start: int | None = None  # character offsets in the article text the quote was taken from
    end: int | None = None


def quote_from_dict(data: dict[str, Any]) -> Quote:
    """A stored quote; one from before quote kinds existed is speech only if it names a speaker, so narration
    is never shown as someone's words."""
    kind = data.get("kind")
    if kind not in QUOTE_KINDS:
        kind = "speech" if data.get("speaker") else "passage"
    return Quote(
        text=data["text"],
        speaker=data.get("speaker") if kind == "speech" else None,
        kind=kind,
        start=data.get("start"),
        end=data.get("end"),
    )


@dataclass
class Link:
    """A related story or another outlet's copy of the same story."""

    title: str
    url: str
    source: str | None = None
    blurb: str | None = None


@dataclass
class Story:
    id: int  # issue_item id: stable handle for editors and the API
    item_id: int
    position: int
    included: bool
    title: str
    url: str
    source: str
    author: str | None
    published: datetime | None
    summary: str
    summary_method: str = "feed"
    image_url: str | None = None
    quotes: list[Quote] = field(default_factory=list)
    related: list[Link] = field(default_factory=list)
    also_covered_by: list[Link] = field(default_factory=list)
    update_of: int | None = None  # the number of an earlier issue that sent this story before it changed
    via: str | None = None  # the aggregator (Hacker News, a link blog) the link came through, if it did
    # The sent story this one continues (related by topic, not the same story): {"number", "title", "url"}.
    follow_up: dict[str, Any] | None = None
    section: str | None = None  # the schedule file's section of its source, when the newsletter has sections


@dataclass
class Issue:
    id: int
    newsletter: str  # slug
    number: int
    subject: str
    status: str
    created_at: datetime
    preheader: str = ""
    intro: str | None = None
    period: str | None = None
    approved_at: datetime | None = None
    sent_at: datetime | None = None
    items: list[Story] = field(default_factory=list)

    @property
    def stories(self) -> list[Story]:
        """The stories that go out (editors may drop some)."""
        return [s for s in self.items if s.included]


def link_domain(url: str | None) -> str:
    """The host a link points at, as a reader would name it: "techstrong.ai", not "www.techstrong.ai:443"."""
    host = (urlsplit(url or "").hostname or "").lower()
    return host.removeprefix("www.")


def _site(url: str | None) -> str:
    # The last two labels: a feed on feeds.example.com and its links on example.com are one site. Rough for
    # names like bbc.co.uk, where it can only err towards showing the chain.
    return ".".join(link_domain(url).split(".")[-2:])


def aggregated(feed_url: str | None, link: str | None) -> bool:
    """Whether an item's link leaves the site of the feed it came from (an aggregator or a link blog)."""
    feed, page = _site(feed_url), _site(link)
    return bool(feed and page and feed != page)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def story_from_row(row: IssueItem) -> Story:
    return Story(
        id=row.id,
        item_id=row.item_id,
        position=row.position,
        included=row.included,
        title=row.title,
        url=row.url,
        source=row.source_name,
        author=row.author,
        published=row.published_at,
        summary=row.summary,
        summary_method=row.summary_method,
        image_url=row.image_url,
        quotes=[quote_from_dict(q) for q in row.quotes or []],
        related=[Link(**_link_fields(r)) for r in row.related or []],
        also_covered_by=[Link(**_link_fields(r)) for r in row.also_covered_by or []],
        update_of=(row.notes or {}).get("update_of"),
        via=(row.notes or {}).get("via"),
        follow_up=_follow_up((row.notes or {}).get("follow_up")),
        section=_section((row.notes or {}).get("section")),
    )


def _section(value: Any) -> str | None:
    return " ".join(value.split())[:60] or None if isinstance(value, str) else None



def _follow_up(data: Any) -> dict[str, Any] | None:
    # Notes are JSON an older version or a hand edit may have shaped otherwise: a number and a title, or nothing.
    if not isinstance(data, dict) or not isinstance(data.get("number"), int) or not data.get("title"):
        return None
    return {"number": data["number"], "title": str(data["title"]), "url": web_url(data.get("url"))}


def _link_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in ("title", "url", "source", "blurb")}


def issue_from_row(row: IssueRow) -> Issue:
    return Issue(
        id=row.id,
        newsletter=row.newsletter.slug,
        number=row.number,
        subject=row.subject,
        status=row.status,
        created_at=row.created_at,
        preheader=row.preheader or "",
        intro=row.intro,
        period=row.period,
        approved_at=row.approved_at,
        sent_at=row.sent_at,
        items=[story_from_row(i) for i in sorted(row.items, key=lambda i: i.position)],
    )


def issue_to_json(issue: Issue, *, include_dropped: bool = False) -> dict[str, Any]:
    """The stable JSON form. Dropped stories are left out unless asked for (editors' API)."""
    items = issue.items if include_dropped else issue.stories
    return {
        "version": JSON_VERSION,
        "id": issue.id,
        "newsletter": issue.newsletter,
        "number": issue.number,
        "subject": issue.subject,
        "preheader": issue.preheader,
        "status": issue.status,
        "period": issue.period,
        "created_at": _iso(issue.created_at),
        "approved_at": _iso(issue.approved_at),
        "sent_at": _iso(issue.sent_at),
        "intro": issue.intro,
        "items": [
            {
                "id": s.id,
                "position": s.position,
                "included": s.included,
                "title": s.title,
                "url": s.url,
                "source": s.source,
                "author": s.author,
                "published": _iso(s.published),
                # Checked again here, where every render and the API read it: an address stored by an older
                # version or set by hand is shown only if it is http(s), never javascript: or data:.
                "image_url": web_url(s.image_url),
                "summary": s.summary,
                "summary_method": s.summary_method,
                "quotes": [asdict(q) for q in s.quotes],
                "related": [asdict(r) for r in s.related],
                "also_covered_by": [asdict(r) for r in s.also_covered_by],
                "update_of": s.update_of,
                "via": s.via,
                "follow_up": s.follow_up,
                "section": s.section,
                "domain": link_domain(s.url),
            }
            for s in items
        ],
    }


def content_hash(issue: Issue) -> str:
    """A hash of everything a subscriber would see; approval records it, a send checks it."""
    data = issue_to_json(issue)
    for key in ("status", "approved_at", "sent_at", "created_at", "version"):
        data.pop(key, None)
    for item in data["items"]:
        # Added after issues were approved with this hash: at their defaults they leave it as it was.
        for key in ("follow_up", "section"):
            if item.get(key) is None:
                item.pop(key, None)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
