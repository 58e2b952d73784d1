"""Choose the stories for an issue: the window, the ranking, the caps, one story once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.editorial.cluster import canonical_url, group_same_story, opening_key
from newsletter.store.models import IssueItem, IssueRow, Item, NewsletterRow, Source
from newsletter.text import split_sentences


def feed_summary(text: str, max_words: int, max_sentences: int = 3, language: str | None = "en") -> str:
    """The feed's own text cut at a sentence boundary: whole sentences within the word budget."""
    chosen: list[str] = []
    words = 0
    for sentence in (s for paragraph in text.split("\n") for s in split_sentences(paragraph, language)):
        n = len(sentence.split())
        if chosen and (words + n > max_words or len(chosen) >= max_sentences):
            break
        if not chosen and n > max_words:
            # A single very long first sentence: cut at a word boundary rather than show nothing.
            return " ".join(sentence.split()[:max_words]).rstrip(",;:") + "…"
        chosen.append(sentence)
        words += n
    return " ".join(chosen)


RECENT_ISSUES = 4  # a story sent in one of the newsletter's last issues is not sent again unless it changed
NEW_MATERIAL = 0.2  # share of an item's distinct words the sent copy did not have: a real update, not a re-post
MIN_NEW_WORDS = 15


@dataclass
class Candidate:
    item: Item
    score: float


def window_for(session: Session, newsletter_id: int, nl: Newsletter, now: datetime) -> tuple[datetime, datetime]:
    """From the end of the last sent issue, but never older than the configured number of days."""
    floor = now - timedelta(days=nl.digest.window_days)
    last_end = session.scalar(
        select(func.max(IssueRow.window_end)).where(
            IssueRow.newsletter_id == newsletter_id, IssueRow.status == "sent"
        )
    )
    return (max(floor, last_end) if last_end else floor), now


def rank(items: list[Item], start: datetime, end: datetime) -> list[Candidate]:
    """Recent first, with a nudge for stories that carry real text (a bare link tells the reader little)."""
    span = max((end - start).total_seconds(), 3600.0)
    out = []
    for item in items:
        when = item.published_at or item.collected_at
        age = max((end - when).total_seconds(), 0.0)
        recency = math.exp(-age / (span / 2))
        substance = min(len(item.content_text.split()) / 300, 1.0) * 0.3
        out.append(Candidate(item, recency + substance))
    out.sort(key=lambda c: (-c.score, c.item.id))
    return out


def select_items(session: Session, newsletter_id: int, nl: Newsletter, start: datetime, end: datetime
                 ) -> list[list[Item]]:
    """Groups of items (first = the story shown, the rest = also covered by), capped as configured."""
    urls = [s.url for s in nl.sources]
    already = select(IssueItem.item_id).join(IssueRow).where(
        IssueRow.newsletter_id == newsletter_id, IssueRow.status.in_(("sent", "sending"))
    )
    when = func.coalesce(Item.published_at, Item.collected_at)
    items = list(
        session.scalars(
            select(Item)
            .join(Source)
            .where(Source.url.in_(urls), when > start, when <= end, Item.id.not_in(already))
        )
    )
    repeated = sent_before(session, newsletter_id, items)
    items = [it for it in items if repeated.get(it.id, (0, True))[1]]  # re-sent only with something new
    ranked = rank(items, start, end)
    per_source_cap = {s.url: s.max_items or nl.digest.max_per_source for s in nl.sources}
    groups = group_same_story([c.item for c in ranked])
    chosen: list[list[Item]] = []
    taken: dict[int, int] = {}
    for group in groups:
        lead = group[0]
        cap = per_source_cap.get(lead.source.url, nl.digest.max_per_source)
        if taken.get(lead.source_id, 0) >= cap:
            continue
        taken[lead.source_id] = taken.get(lead.source_id, 0) + 1
        chosen.append(group)
        if len(chosen) >= nl.digest.max_items:
            break
    return chosen


def sent_before(session: Session, newsletter_id: int, items: list[Item]) -> dict[int, tuple[int, bool]]:
    """For each of `items` that is a story of one of the last sent issues (the same page, or a copy opening
    with the same words): item id -> (that issue's number, whether it changed materially since)."""
    recent = select(IssueRow.id).where(
        IssueRow.newsletter_id == newsletter_id, IssueRow.status.in_(("sent", "sending"))
    ).order_by(IssueRow.number.desc()).limit(RECENT_ISSUES)
    sent = session.execute(
        select(IssueRow.number, IssueItem.url, Item.content_text)
        .join(IssueItem, IssueItem.issue_id == IssueRow.id)
        .join(Item, Item.id == IssueItem.item_id)
        .where(IssueRow.id.in_(recent.scalar_subquery()), IssueItem.included.is_(True))
    ).all()
    if not sent:
        return {}
    by_key: dict[str, tuple[int, str]] = {}
    for number, url, text in sent:
        for key in (canonical_url(url), opening_key(text)):
            if key and (key not in by_key or by_key[key][0] < number):
                by_key[key] = (number, text or "")
    out: dict[int, tuple[int, bool]] = {}
    for item in items:
        hit = by_key.get(canonical_url(item.link)) or by_key.get(opening_key(item.content_text))
        if hit is not None:
            out[item.id] = (hit[0], _changed(hit[1], item.content_text))
    return out


def followed_up(session: Session, newsletter_id: int, items: list[Item],
                skip: set[int] | None = None) -> dict[int, dict[str, object]]:
    """For each of `items` (but those in `skip`: updates of a sent story) that continues a story of one of the
    last sent issues, related by topic but not the same story: item id -> {"number", "title", "url"} of the
    closest such sent story. Judged as related reading is (BM25 candidates, the TF-IDF floor, copies left out),
    over the sent stories and these items together so that words common to both weigh little."""
    from newsletter.editorial.related import MIN_COSINE, Doc, RelatedIndex

    recent = select(IssueRow.id).where(
        IssueRow.newsletter_id == newsletter_id, IssueRow.status.in_(("sent", "sending"))
    ).order_by(IssueRow.number.desc()).limit(RECENT_ISSUES)
    sent = session.execute(
        select(IssueRow.number, IssueItem.item_id, IssueItem.title, IssueItem.url, Item.content_text,
               Item.content_hash)
        .join(IssueItem, IssueItem.issue_id == IssueRow.id)
        .join(Item, Item.id == IssueItem.item_id)
        .where(IssueRow.id.in_(recent.scalar_subquery()), IssueItem.included.is_(True))
    ).all()
    skip = skip or set()
    asked = [it for it in items if it.id not in skip]
    if not sent or not asked:
        return {}
    number_of: dict[int, int] = {}
    docs: list[Doc] = []
    for number, item_id, title, url, text, digest in sorted(sent, key=lambda row: -row[0]):  # the latest issue's
        if item_id not in number_of:
            number_of[item_id] = number
            docs.append(Doc(item_id, title or "", url or "", "", text or "", digest or ""))
    new_ids = {it.id for it in items}
    index = RelatedIndex(docs + [Doc(it.id, it.title or "", it.link or "", "", it.content_text or "",
                                     it.content_hash or "") for it in items if it.id not in number_of])
    out: dict[int, dict[str, object]] = {}
    for it in asked:
        query = Doc(it.id, it.title or "", it.link or "", "", it.content_text or "", it.content_hash or "")
        picked, same = index.related_scored(query, 1, exclude_ids=new_ids, min_cosine=MIN_COSINE)
        if picked and not same:  # a copy of a sent story is a repeat or an update, never a follow-up
            doc = picked[0][0]
            out[it.id] = {"number": number_of[doc.id], "title": doc.title, "url": doc.url}
    return out


def _changed(before: str, now: str) -> bool:
    old = set((before or "").lower().split())
    new = set((now or "").lower().split())
    added = new - old
    return len(added) >= MIN_NEW_WORDS and len(added) >= NEW_MATERIAL * max(len(new), 1)


def newsletter_row(session: Session, slug: str) -> NewsletterRow | None:
    return session.scalar(select(NewsletterRow).where(NewsletterRow.slug == slug))
