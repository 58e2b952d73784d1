"""The web edition of a sent issue: its page of story cards (/archive/{slug}/{number}), a page per story
(/archive/{slug}/{number}/{position}-{title-slug}) with the story's conversation under it, and the archive's
JSON Feed.

The pages are our own HTML (templates/edition_*.html), not the email's tables; they carry what the email card
carries. Only sent issues are public: drafts, held and approved issues answer 404. Addresses come from
newsletter.urls, the same function the email's "Discuss" links use.

Speed: a finished page is kept in memory under the issue's version (one indexed query per view decides), and
only what changes per request is put in on the way out: the comment counts on the issue page and the
conversation section on a story page (newsletter.web.conversation).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, aliased
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter.compose.build import load_issue
from newsletter.compose.issue import Issue, issue_to_json
from newsletter.render.engine import relative_time
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow
from newsletter.urls import issue_path, story_key, story_path
from newsletter.web import conversation, feedback
from newsletter.web.point_read import point_read, point_rows
from newsletter.web.readers import READER_COOKIE
from newsletter.web.state import WebState, web_state

# No scripts at all; pictures from the stories' own sites.
EDITION_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")
HTML = "text/html; charset=utf-8"
_CONVERSATION = b"<!--conversation-->"
_COUNT = re.compile(rb"<!--count:(\d+)-->")
_FEEDBACK = re.compile(rb"<!--feedback-->.*?<!--/feedback-->", re.DOTALL)
_STORY_KEY = re.compile(r"(\d+)(?:-(.*))?")
_md = MarkdownIt("commonmark", {"html": False, "linkify": False})  # the editor's note, as in the email


@dataclass
class Edition:
    """A sent issue as its pages show it."""

    slug: str
    name: str
    issue: Issue
    data: dict[str, Any]  # issue_to_json, each item with position, key, path, url (absolute) and archive links
    base_url: str
    lang: str = "en"
    dir: str = "ltr"  # the newsletter's reading direction

    def story(self, position: int) -> dict[str, Any]:
        if not 1 <= position <= len(self.data["items"]):
            raise HTTPException(404, "There is no such story.")
        return self.data["items"][position - 1]


def _sent_id(session: Session, slug: str, number: int) -> int:
    issue_id = session.scalar(
        select(IssueRow.id).join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(NewsletterRow.slug == slug, IssueRow.number == number, IssueRow.status == "sent"))
    if issue_id is None:  # drafts, held and approved issues are not public, and say nothing about existing
        raise HTTPException(404, "There is no such issue.")
    return issue_id


def _archive_paths(session: Session, slug: str, urls: set[str]) -> dict[str, str]:
    """Related links that are stories of this newsletter's sent issues -> their story pages."""
    if not urls:
        return {}
    rows = session.execute(
        select(IssueItem.url, IssueItem.title, IssueItem.issue_id, IssueItem.position, IssueRow.number)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(NewsletterRow.slug == slug, IssueRow.status == "sent", IssueItem.included, IssueItem.url.in_(urls))
        .order_by(IssueRow.number)
    ).all()
    out: dict[str, str] = {}
    for url, title, issue_id, position, number in rows:
        if url in out:  # the first issue that carried it
            continue
        # The story's place as the email numbered it: among the issue's stories that went out.
        place = session.scalar(select(func.count(IssueItem.id)).where(
            IssueItem.issue_id == issue_id, IssueItem.included, IssueItem.position <= position))
        out[url] = story_path(slug, number, int(place or 1), title)
    return out


def load_edition(state: WebState, slug: str, number: int) -> Edition:
    nl = state.newsletter(slug)
    base = state.settings.base_url
    with session_scope(state.engine) as session:
        issue = load_issue(session, _sent_id(session, slug, number))
        if issue is None:  # deleted since
            raise HTTPException(404, "There is no such issue.")
        name = nl.name if nl else session.scalar(select(NewsletterRow.name).where(NewsletterRow.slug == slug)) or slug
        data = issue_to_json(issue)
        related = {r["url"] for item in data["items"] for r in item["related"]}
        here = _archive_paths(session, slug, related)
        # Summaries an editor corrected after the send (newsletter.web.feedback): the page says so, with when.
        corrected = dict(session.execute(select(IssueItem.id, IssueItem.corrected_at).where(
            IssueItem.issue_id == issue.id, IssueItem.corrected_at.is_not(None))).all())
    for position, item in enumerate(data["items"], start=1):
        item["position_in_issue"] = position
        item["key"] = story_key(position, item["title"])
        item["path"] = story_path(slug, number, position, item["title"])
        item["canonical"] = base + item["path"]
        item["age"] = relative_time(item["published"], issue.sent_at) if item["published"] else ""
        when = corrected.get(item["id"])
        item["corrected_iso"] = when.isoformat(timespec="seconds") + "Z" if when else None
        item["corrected"] = f"{when.day} {when:%B %Y, %H:%M} UTC" if when else None
        for r in item["related"]:
            r["href"] = here.get(r["url"], r["url"])
            r["in_archive"] = r["url"] in here
    return Edition(slug, name, issue, data, base, nl.language if nl else "en", nl.direction if nl else "ltr")


def _common(edition: Edition) -> dict[str, Any]:
    sent = edition.issue.sent_at or edition.issue.created_at
    return {
        "slug": edition.slug, "name": edition.name, "lang": edition.lang, "dir": edition.dir, "issue": edition.data,
        "base_url": edition.base_url,
        "issue_path": issue_path(edition.slug, edition.issue.number),
        "sent_date": f"{sent.day} {sent:%B %Y}", "sent_iso": sent.isoformat(timespec="seconds") + "Z",
    }


def render_issue_page(state: WebState, edition: Edition) -> bytes:
    intro = Markup(_md.render(edition.issue.intro)) if edition.issue.intro else None
    context = {**_common(edition), "intro": intro,
               "canonical": edition.base_url + issue_path(edition.slug, edition.issue.number),
               "description": edition.issue.preheader or " · ".join(i["title"] for i in edition.data["items"][:3])}
    return state.templates.get_template("edition_issue.html").render(context).encode()


def render_story_page(state: WebState, edition: Edition, position: int) -> bytes:
    item = edition.story(position)
    items = edition.data["items"]
    nl = state.newsletter(edition.slug)
    sign_in = nl is not None and nl.comments.who != "off"
    context = {**_common(edition), "item": item, "canonical": item["canonical"],
               "feedback_signed_out": Markup(feedback.signed_out_block(edition.slug, item["path"], sign_in)),
               "previous": items[position - 2] if position > 1 else None,
               "next": items[position] if position < len(items) else None}
    return state.templates.get_template("edition_story.html").render(context).encode()


# What the pages are made from, without the pages: the kept page is served when this matches. Any change to
# the row through SQLAlchemy bumps updated_at (a send, a re-render, a corrected summary). Related links to
# other issues' stories are looked up when the page is made, so the newsletter's latest send is part of the
# version too: an earlier issue's related story sent later is linked to its page from the next view on.
_LATER = aliased(IssueRow)
_LATEST_SEND = (
    select(func.max(_LATER.sent_at))
    .where(_LATER.newsletter_id == IssueRow.newsletter_id, _LATER.status == "sent")
    .correlate(IssueRow).scalar_subquery()
)
_SENT_VERSION = (
    select(IssueRow.id, IssueRow.updated_at, IssueRow.rendered_hash, _LATEST_SEND)
    .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
    .where(NewsletterRow.slug == bindparam("slug"), IssueRow.number == bindparam("number"),
           IssueRow.status == "sent")
)


def _version(state: WebState, slug: str, number: int) -> tuple[Any, ...]:
    rows = point_rows(state.engine, _SENT_VERSION, {"slug": slug, "number": number}, kept=True)
    if not rows:  # drafts, held and approved issues are not public, and say nothing about existing
        raise HTTPException(404, "There is no such issue.")
    return tuple(rows[0])


def _counts_filled(body: bytes, counts: dict[int, int]) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        n = counts.get(int(match.group(1)), 0)
        return (f"{n} comment{'s' if n != 1 else ''}" if n else "Be the first").encode()

    return _COUNT.sub(one, body)


async def issue_page(request: Request) -> Response:
    state = web_state(request)
    slug, number = request.path_params["slug"], request.path_params["number"]

    def kept() -> tuple[tuple[Any, ...], bytes | None]:
        version = _version(state, slug, number)
        return version, state.archive_pages.get((slug, number), version)

    def load(version: tuple[Any, ...]) -> bytes:
        body = render_issue_page(state, load_edition(state, slug, number))
        # Kept under the version read before the page: a change in between only costs a later miss.
        state.archive_pages.put((slug, number), version, body)
        return body

    version, body = await point_read(state.engine, kept)
    if body is None:
        body = await run_in_threadpool(load, version)
    counts = await point_read(state.engine, conversation.comment_counts, state.engine, int(version[0]))
    return Response(_counts_filled(body, counts), media_type=HTML, headers={"Content-Security-Policy": EDITION_CSP})


async def story_page(request: Request) -> Response:
    state = web_state(request)
    slug, number, asked = request.path_params["slug"], request.path_params["number"], request.path_params["story"]
    match = _STORY_KEY.fullmatch(asked)
    if match is None:
        raise HTTPException(404, "There is no such story.")
    position = int(match.group(1))

    def kept() -> tuple[tuple[Any, ...], tuple[int, str, bytes] | None]:
        version = _version(state, slug, number)
        return version, state.story_pages.get((slug, number, position), version)

    def load(version: tuple[Any, ...]) -> tuple[int, str, bytes]:
        edition = load_edition(state, slug, number)
        item = edition.story(position)
        page = (item["id"], item["key"], render_story_page(state, edition, position))
        state.story_pages.put((slug, number, position), version, page)
        return page

    version, page = await point_read(state.engine, kept)
    if page is None:
        page = await run_in_threadpool(load, version)
    item_id, key, body = page
    if asked != key:  # the title's part changed or was cut: one address per story, for links and search engines
        return RedirectResponse(issue_path(slug, number) + "/" + key, status_code=301)
    canonical = state.settings.base_url + issue_path(slug, number) + "/" + key
    headers = {"Content-Security-Policy": EDITION_CSP}
    if READER_COOKIE in request.cookies:
        # A signed-in reader's section is made for them (their form, its CSRF token): in the pool, since it is
        # built fresh, and never kept by a cache on the way.
        block = await run_in_threadpool(conversation.conversation_block, request, item_id, canonical)
        mine = await run_in_threadpool(feedback.feedback_block, request, item_id, slug,
                                       issue_path(slug, number) + "/" + key)
        body = _FEEDBACK.sub(lambda _: b"<!--feedback-->" + mine.encode() + b"<!--/feedback-->", body, count=1)
        headers["Cache-Control"] = "private, no-store"
    else:  # the signed-out section is kept per story: inline on SQLite, in the pool on PostgreSQL (point_read)
        block = await point_read(state.engine, conversation.conversation_block, request, item_id, canonical)
    return Response(body.replace(_CONVERSATION, block.encode(), 1), media_type=HTML, headers=headers)


# --- JSON Feed 1.1 ------------------------------------------------------------------------------------------


def _json_time(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


def story_links_html(base: str, issue: Issue) -> str:
    """An issue's stories as an HTML list linking their story pages (feeds' content)."""
    from html import escape

    rows = []
    for position, s in enumerate(issue.stories, start=1):
        page = base + story_path(issue.newsletter, issue.number, position, s.title)
        rows.append(f'<li><a href="{escape(page, quote=True)}">{escape(s.title)}</a><br>{escape(s.summary)}'
                    f' <a href="{escape(s.url, quote=True)}">(the original)</a></li>')
    return f"<ul>{''.join(rows)}</ul>"


def json_feed(state: WebState, slug: str) -> bytes:
    """https://www.jsonfeed.org/version/1.1/ : one item per sent issue, its content the stories' pages."""
    nl = state.newsletter(slug)
    base = state.settings.base_url
    with session_scope(state.engine) as session:
        row = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == slug))
        if row is None and nl is None:
            raise HTTPException(404, f"There is no newsletter '{slug}'.")
        name = nl.name if nl else row.name if row else slug
        ids = session.scalars(
            select(IssueRow.id).where(IssueRow.newsletter_id == (row.id if row else -1), IssueRow.status == "sent")
            .order_by(IssueRow.number.desc()).limit(50)).all()
        items = []
        for issue_id in ids:
            issue = load_issue(session, issue_id)
            if issue is None:
                continue
            url = base + issue_path(slug, issue.number)
            entry = {
                "id": url, "url": url, "title": issue.subject,
                "summary": " · ".join(s.title for s in issue.stories),
                "content_html": story_links_html(base, issue),
                "date_published": _json_time(issue.sent_at or issue.created_at),
            }
            corrected = session.scalar(select(func.max(IssueItem.corrected_at)).where(IssueItem.issue_id == issue_id))
            if corrected is not None:  # a summary corrected since the send (newsletter.web.feedback)
                entry["date_modified"] = _json_time(corrected)
            items.append(entry)
    feed: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1", "title": name,
        "home_page_url": f"{base}/archive/{slug}", "feed_url": f"{base}/archive/{slug}/feed.json",
        "language": nl.language if nl else "en", "authors": [{"name": name}], "items": items,
    }
    if nl and nl.description:
        feed["description"] = nl.description
    return json.dumps(feed, ensure_ascii=False, indent=1).encode()


async def json_feed_route(request: Request) -> Response:
    body = await run_in_threadpool(json_feed, web_state(request), request.path_params["slug"])
    return Response(body, media_type="application/feed+json; charset=utf-8")
