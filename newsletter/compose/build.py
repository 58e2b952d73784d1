"""Build the next issue of a newsletter as a draft, and load issues back as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lxml_html
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, selectinload

from newsletter.compose.issue import Issue, aggregated, issue_from_row
from newsletter.compose.select import feed_summary, followed_up, select_items, sent_before, window_for
from newsletter.config import Newsletter
from newsletter.editorial.headline import fit_subject, headline
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueItem, IssueRow, Item, NewsletterRow, utcnow
from newsletter.text import single_line
from newsletter.urls import web_url

EDITABLE = ("draft", "held")


class BuildError(Exception):
    pass


@dataclass
class BuildResult:
    issue_id: int | None  # None when there was nothing new to build from
    number: int | None
    items: int
    rebuilt: bool
    problems: list[str] = field(default_factory=list)
    enrichment: str | None = None  # what the editorial core did, in one line
    # With no issue built: why not, when it is not the ordinary "nothing new since the last issue" (nothing
    # collected yet, or everything collected is older than the window), with what to run instead.
    stale: str | None = None


def _subject(nl: Newsletter, number: int, top_title: str) -> str:
    try:
        # The top title is a feed's: one line, or the Subject header could not be built at all.
        top_title = single_line(top_title)
        filled = single_line(nl.digest.subject.format(name=nl.name, number=number, top_title=top_title, slug=nl.slug))
        return fit_subject(filled, top_title)  # whole in an inbox list: the title cut at a word
    except (KeyError, IndexError, ValueError) as exc:
        raise BuildError(f"{nl.path}: digest.subject: cannot fill {nl.digest.subject!r}: {exc}") from None


MIN_PICTURE_PX = 100  # a picture declared smaller than this is a tracking pixel, an icon or an emoji, not the story's


# Pictures a feed's body carries that are not the story's: FeedBurner's ads and share buttons, WordPress's
# counters. A hand-kept list (no maintained library names feed ad hosts); `ismap` images are ad units too.
AD_HOSTS = ("doubleclick.net", "feeds.feedburner.com", "feedproxy.google.com", "pixel.wp.com",
            "stats.wordpress.com", "feeds.wordpress.com")


def _advert(img: lxml_html.HtmlElement, src: str) -> bool:
    host = (urlsplit(src).hostname or "").lower()
    return img.get("ismap") is not None or any(host == h or host.endswith("." + h) for h in AD_HOSTS)


def _tiny(img: lxml_html.HtmlElement) -> bool:
    sizes = [img.get("width", ""), img.get("height", "")]
    return any(size.strip().isdigit() and int(size) < MIN_PICTURE_PX for size in sizes)


def first_picture(content_html: str, title: str) -> tuple[str | None, str]:
    """The first picture in an item's body, http(s) only, and its caption: its alt text, else its title, unless
    that only repeats the headline. A picture post (an item that is only an <img>, like Tumblr's "Photo"
    posts) has nothing else: this is its picture and its text. (None, "") when there is no picture."""
    if "<img" not in content_html:
        return None, ""
    try:
        root = lxml_html.fragment_fromstring(content_html, create_parent="div")
    except (etree.ParserError, ValueError):  # markup lxml cannot read: no picture rather than no issue
        return None, ""
    for img in root.iter("img"):
        src = web_url(img.get("src"))
        if src is None or _tiny(img) or _advert(img, src):  # data:, javascript:, relative; a tracking pixel,
            continue  # an icon, an emoji; an advert
        for attr in ("alt", "title"):
            caption = single_line(img.get(attr) or "")
            if caption and caption.casefold() != single_line(title).casefold():
                return src, caption
        return src, ""
    return None, ""


def _empty(item: Item) -> bool:
    """Nothing to show a reader: no words and no usable picture (a picture post whose <img> is data: or an icon)."""
    return not item.content_text.split() and not item.image_url and first_picture(item.content_html,
                                                                                   item.title)[0] is None


def _story_row(group: list[Item], position: int, nl: Newsletter) -> IssueItem:
    lead = group[0]
    picture, caption = first_picture(lead.content_html, lead.title)
    others = [
        {"title": other.title, "url": other.link or "", "source": other.source.name or other.source.url}
        for other in group[1:]
        if other.link
    ]
    return IssueItem(
        item_id=lead.id,
        position=position,
        included=True,
        title=headline(lead.title, lead.content_text),
        url=lead.link or "",
        source_name=lead.source.name or lead.source.title or lead.source.url,
        author=lead.author,
        published_at=lead.published_at,
        image_url=lead.image_url or picture,  # the feed's own choice first (media:thumbnail, an enclosure)
        summary=feed_summary(lead.content_text, nl.digest.summary_words, nl.digest.summary_sentences,
                             lead.language or nl.language) or caption,
        summary_method="feed",
        quotes=[],
        related=[],
        also_covered_by=others,
        notes=_notes(lead, nl),
    )


def by_section(groups: list[list[Item]], nl: Newsletter) -> list[list[Item]]:
    """The stories grouped by section, in the order the schedule file names its sections (sources without one
    last), each section keeping the ranking's order: the issue shows each section as one headed group."""
    if not nl.sections:
        return groups
    order = {name: i for i, name in enumerate(nl.sections)}
    return sorted(groups, key=lambda g: order.get(nl.section_of(g[0].source.url) or "", len(order)))


def _notes(lead: Item, nl: Newsletter) -> dict[str, Any]:
    """The story's notes: the aggregator it came through, and its section (that of its first source)."""
    notes: dict[str, Any] = {}
    if aggregated(lead.source.url, lead.link):
        notes["via"] = lead.source.name or lead.source.title or ""
    section = nl.section_of(lead.source.url)
    if section:
        notes["section"] = section
    return notes


def build_issue(
    engine: Engine,
    nl: Newsletter,
    *,
    now: datetime | None = None,
    period: str | None = None,
    enrich: bool = True,
    allow_empty: bool = False,
    since: datetime | None = None,
) -> BuildResult:
    """Create the next draft, or rebuild the current unapproved draft in place (keeping its intro).

    `since` starts the window there instead of `window_days` back (a first issue from old feeds).
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        nrow = ensure_newsletter(session, nl.slug, nl.name)
        _refuse_if_pending(session, nrow.id, period)
        draft = session.scalar(
            select(IssueRow)
            .where(IssueRow.newsletter_id == nrow.id, IssueRow.status.in_(EDITABLE))
            .where(IssueRow.period == period if period else IssueRow.id.is_not(None))
            .order_by(IssueRow.number.desc())
        )
        start, end = window_for(session, nrow.id, nl, now)
        if since is not None:
            start = since
        groups = select_items(session, nrow.id, nl, start, end)
        dropped = [g[0] for g in groups if all(_empty(it) for it in g)]
        groups = [g for g in groups if not all(_empty(it) for it in g)]
        groups = by_section(groups, nl)
        if not groups and not allow_empty:
            stale = _why_nothing(session, nl, start)
            return BuildResult(None, None, 0, False,
                               [stale or f"nothing new since {start:%Y-%m-%d %H:%M} UTC: no issue built"],
                               stale=stale)
        rebuilt = draft is not None
        if draft is None:
            number = (session.scalar(select(func.max(IssueRow.number)).where(IssueRow.newsletter_id == nrow.id))
                      or 0) + 1
            draft = IssueRow(newsletter_id=nrow.id, number=number, period=period, status="draft",
                             intro=nl.digest.intro, subject="")
            session.add(draft)
        else:
            draft.items.clear()
            session.flush()
        draft.window_start, draft.window_end = start, end
        draft.items.extend(_story_row(group, i, nl) for i, group in enumerate(groups))
        leads = [g[0] for g in groups]
        updates = sent_before(session, nrow.id, leads)  # those left changed materially
        follow_ups = followed_up(session, nrow.id, leads, skip=set(updates))
        for row in draft.items:
            if row.item_id in updates:
                row.notes = {**(row.notes or {}), "update_of": updates[row.item_id][0]}
            elif row.item_id in follow_ups:
                row.notes = {**(row.notes or {}), "follow_up": follow_ups[row.item_id]}
        top = headline(groups[0][0].title, groups[0][0].content_text) if groups else "nothing new"
        draft.subject = _subject(nl, draft.number, top)
        draft.html = draft.text = draft.rendered_hash = None
        draft.approved_at = draft.approved_by = draft.approved_hash = None
        session.flush()
        result = BuildResult(draft.id, draft.number, len(groups), rebuilt, [
            f"left out “{single_line(it.title) or it.link}” from {it.source.name or it.source.url}: no text and no "
            "usable picture (a picture post whose picture is not an http(s) address, or an icon)" for it in dropped])
    if enrich and result.items and result.issue_id is not None:
        result.enrichment, problems = enrich_stories(engine, result.issue_id, nl)
        result.problems.extend(problems)
    return result


def _why_nothing(session: Session, nl: Newsletter, start: datetime) -> str | None:
    """Why a build found nothing, when it is not simply "nothing new since the last issue", and the way out."""
    from newsletter.store.models import Source

    when = func.coalesce(Item.published_at, Item.collected_at)
    count, newest = session.execute(
        select(func.count(Item.id), func.max(when)).join(Source)
        .where(Source.url.in_([s.url for s in nl.sources]))).one()
    if not count:
        return (f"no items collected yet from its {len(nl.sources)} source(s): run `newsletter collect {nl.slug}` "
                "(its table shows what each source gave)")
    last_sent_end = session.scalar(select(func.max(IssueRow.window_end)).join(NewsletterRow)
                                   .where(NewsletterRow.slug == nl.slug, IssueRow.status == "sent"))
    if last_sent_end is not None and newest is not None and newest <= last_sent_end:
        return None  # the ordinary case: everything collected was in an issue already
    if newest is not None and newest <= start:
        suggest = newest - timedelta(days=nl.digest.window_days)
        return (f"{count} item(s) collected, all older than the {nl.digest.window_days}-day window "
                f"(since {start:%Y-%m-%d %H:%M} UTC); the newest is from {newest:%Y-%m-%d}. For a first issue "
                f"from these: `newsletter build {nl.slug} "
                f"--since {suggest:%Y-%m-%d}` or `--window-days N`")
    return None


def _refuse_if_pending(session: Session, newsletter_id: int, period: str | None) -> None:
    """An approved issue not yet sent, or this period's issue already out, means there is nothing to build."""
    query = select(IssueRow).where(IssueRow.newsletter_id == newsletter_id)
    if period:
        query = query.where(IssueRow.period == period, IssueRow.status.not_in(EDITABLE))
    else:
        query = query.where(IssueRow.status.in_(("approved", "sending")))
    row = session.scalar(query.order_by(IssueRow.number.desc()))
    if row is not None:
        what = f"the issue for {period}" if period else "an issue"
        raise BuildError(f"{what} is already {row.status} (issue #{row.number}, id {row.id}); "
                         "send it or reopen it before building another")


def enrich_stories(engine: Engine, issue_id: int, nl: Newsletter) -> tuple[str, list[str]]:
    """Summaries, key quotes, related reading (the editorial core): a one-line account and the problems met.

    Problems are reported, never fatal: a story keeps its feed summary when its article cannot be used.
    """
    from newsletter.editorial.enrich import enrich_issue

    with session_scope(engine) as session:
        issue = session.get(IssueRow, issue_id)
        if issue is None:
            raise BuildError(f"no issue {issue_id}")
        report = enrich_issue(session, issue, nl)
    return report.summary_line(), list(report.problems)


def load_issue(session: Session, issue_id: int) -> Issue | None:
    row = session.scalar(
        select(IssueRow)
        .options(selectinload(IssueRow.items), selectinload(IssueRow.newsletter))
        .where(IssueRow.id == issue_id)
    )
    return issue_from_row(row) if row else None


def latest_issue_id(session: Session, slug: str) -> int | None:
    return session.scalar(
        select(IssueRow.id).join(NewsletterRow).where(NewsletterRow.slug == slug).order_by(IssueRow.number.desc())
    )


def resolve_issue(session: Session, slug: str, issue_id: int | None) -> Issue:
    """The issue an operator means: the given id (which must belong to the newsletter) or the latest one."""
    if issue_id is None:
        issue_id = latest_issue_id(session, slug)
        if issue_id is None:
            raise BuildError(f"'{slug}' has no issue yet: run `newsletter build {slug}` first")
    issue = load_issue(session, issue_id)
    if issue is None or issue.newsletter != slug:
        raise BuildError(f"no issue {issue_id} in newsletter '{slug}'")
    return issue
