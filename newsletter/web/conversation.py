"""The conversation under each story of a sent issue: comments, their moderation, and a reader's deletion.

Owns what the story page shows under the card (`conversation_block`), the counts the issue page shows
(`comment_counts`), the readers' posting routes, the editors' moderation page and `forget_reader` (the CLI's
`newsletter readers forget` and `POST /api/readers/forget`). Sign-in and the reader cookie are
newsletter.web.readers' business (`current_reader` is re-exported here).

- POST /readers/comments              post (or reply: a reply to a reply joins the top comment's thread)
- POST /readers/comments/{id}/edit    the reader's own, within `[comments] edit_minutes`
- POST /readers/comments/{id}/delete  the same window
- GET  /editor/comments/              recent and pending comments per newsletter; hide, delete, approve, block

Comments are plain text: stored as typed, shown HTML-escaped with http(s) links made clickable
(rel="nofollow ugc noopener"). Hand-written (`render_body`) rather than bleach (deprecated) or a Markdown
library: there is no markup to allow, only URLs to find, and escaping everything first leaves nothing to sanitize.
A comment is visible when its status is "visible" and so is its thread's top comment.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy import Engine, and_, bindparam, func, or_, select
from sqlalchemy import delete as sa_delete
from sqlalchemy.orm import Session, aliased
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from newsletter.config import Newsletter
from newsletter.store.db import session_scope
from newsletter.store.models import Comment, IssueItem, IssueRow, NewsletterRow, ReaderBlock, StoryFeedback, utcnow
from newsletter.store.models import Reader as ReaderRow
from newsletter.web.api_errors import ApiError
from newsletter.web.auth import csrf_token
from newsletter.web.pages import checked_form, flash, page, redirect
from newsletter.web.point_read import point_rows
from newsletter.web.readers import (
    COMMENT_LIMIT,
    Reader,
    blocked_on,
    current_reader,
    limits,
    may_comment,
    reader_address,
    safe_next,
)
from newsletter.web.signin import RequireEditor, form_action
from newsletter.web.state import KeptPages, WebState, web_state

__all__ = ["Reader", "comment_counts", "conversation_block", "current_reader", "forget_reader", "routes"]

log = logging.getLogger(__name__)

MAX_COMMENT = 2000
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


def escape(text: str) -> str:
    # html.escape, not markupsafe's: plain strings are several times cheaper for 200 comments a page.
    return html.escape(text, quote=True)


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def render_body(text: str) -> Markup:
    """Plain text as HTML: everything escaped, paragraphs kept, http(s) URLs as links."""
    parts: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        out, last = [], 0
        for match in _URL.finditer(paragraph):
            url = match.group(0)
            while url and url[-1] in _TRAILING:  # "see https://x.example/a." ends the sentence, not the URL
                url = url[:-1]
            end = match.start() + len(url)
            shown = escape(url)
            out.append(escape(paragraph[last:match.start()]))
            out.append(f'<a href="{shown}" rel="nofollow ugc noopener">{shown}</a>')
            last = end
        out.append(escape(paragraph[last:]))
        parts.append("<p>" + "".join(out) + "</p>")
    return Markup("".join(parts))


def _author(email: str) -> str:
    # Addresses are not shown to other readers: the part before the @, which is what people call themselves.
    return email.split("@", 1)[0]


def _visible(parent: Any) -> Any:
    """SQL: a comment that the public sees (visible, and not in the thread of a comment that is not)."""
    return and_(Comment.status == "visible", or_(Comment.parent_id.is_(None), parent.status == "visible"))


_PARENT = aliased(Comment)
# Built once: the issue page asks for its counts on every view, and making the statement (an alias, a join)
# cost ten times the query.
_COUNTS = (
    select(Comment.issue_item_id, func.count(Comment.id))
    .join(IssueItem, IssueItem.id == Comment.issue_item_id)
    .outerjoin(_PARENT, _PARENT.id == Comment.parent_id)
    .where(IssueItem.issue_id == bindparam("issue_id"), _visible(_PARENT))
    .group_by(Comment.issue_item_id)
)


def comment_counts(engine: Engine, issue_id: int) -> dict[int, int]:
    """issue_item_id -> visible comments, for every story of the issue that has any."""
    return {int(item): int(n) for item, n in point_rows(engine, _COUNTS, {"issue_id": issue_id}, kept=True)}


@dataclass
class Story:
    item_id: int
    issue_id: int
    slug: str


def _story(session: Session, issue_item_id: int) -> Story | None:
    """A story of a sent issue (drafts have no conversation)."""
    row = session.execute(
        select(IssueItem.id, IssueRow.id, NewsletterRow.slug)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(IssueItem.id == issue_item_id, IssueRow.status == "sent")
    ).first()
    return Story(int(row[0]), int(row[1]), str(row[2])) if row else None


def _editable(status: str, created_at: datetime, nl: Newsletter, now: datetime) -> bool:
    return status in ("visible", "pending") and now - created_at <= timedelta(minutes=nl.comments.edit_minutes)


def _kept(request: Request) -> KeptPages:
    """Signed-out readers' conversation blocks, kept per story under the version of its comments."""
    kept = getattr(request.app.state, "conversation_blocks", None)
    if kept is None:
        kept = request.app.state.conversation_blocks = KeptPages(limit=256)
    return kept


def conversation_block(request: Request, issue_item_id: int, story_url: str) -> str:
    """The HTML of the conversation section under a story's card (synchronous: it queries the database).

    What a signed-out reader sees is kept (newsletter.web.state.KeptPages) under the version of the story's
    comments (how many, the newest id, the latest change) and the newsletter's comment settings: one small
    query answers a page that 200 comments would otherwise take milliseconds to render."""
    state = web_state(request)
    reader = current_reader(request)
    # The edition passes the story's canonical address; the forms come back to its path on this site.
    base = state.settings.base_url.rstrip("/")
    if story_url.startswith(base + "/"):
        story_url = story_url[len(base):]
    with session_scope(state.engine) as session:
        story = _story(session, issue_item_id)
        nl = state.newsletter(story.slug) if story else None
        if story is None or nl is None:
            return ""
        key: tuple[int, str] = (issue_item_id, story_url)
        version: tuple[Any, ...] = ()
        if reader is None:
            version = (*session.execute(select(func.count(Comment.id), func.max(Comment.id),
                                               func.max(Comment.updated_at))
                                        .where(Comment.issue_item_id == issue_item_id)).one(),
                       nl.comments, nl.name)
            kept = _kept(request).get(key, version)
            if kept is not None:
                return kept.decode()
        parent = aliased(Comment)
        shown = _visible(parent)
        if reader is not None:  # a reader sees their own comments waiting for approval
            shown = or_(shown, and_(Comment.reader_id == reader.id, Comment.status == "pending"))
        rows = session.execute(
            select(Comment.id, Comment.parent_id, Comment.reader_id, Comment.body, Comment.status,
                   Comment.created_at, Comment.edited_at, ReaderRow.email)
            .join(ReaderRow, ReaderRow.id == Comment.reader_id)
            .outerjoin(parent, parent.id == Comment.parent_id)
            .where(Comment.issue_item_id == issue_item_id, shown).order_by(Comment.id)
        ).all()
        blocked = bool(reader and blocked_on(session, reader.id, nl.slug))
        can_post = bool(reader and not blocked and may_comment(session, nl, reader.email))
    now = utcnow()
    threads: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    by_top: dict[int, list[dict[str, Any]]] = {}
    for comment_id, parent_id, reader_id, body, status, created_at, edited_at, email in rows:
        view = {"id": comment_id, "author": _author(email), "html": render_body(body), "body": body,
                "created": created_at.strftime("%d %b %Y, %H:%M UTC"), "created_iso": created_at.isoformat() + "Z",
                "edited": edited_at is not None, "pending": status == "pending",
                "editable": bool(reader and reader_id == reader.id and _editable(status, created_at, nl, now))}
        if parent_id is None:
            by_top[comment_id] = []
            threads.append((view, by_top[comment_id]))
        elif parent_id in by_top:
            by_top[parent_id].append(view)
        # else: its thread's top comment is not shown, so neither is the reply
    count = sum(1 for top, replies in threads for view in (top, *replies) if not view["pending"])
    template = state.templates.get_template("conversation.html")
    csrf = csrf_token(request.session) if reader else ""
    block = template.render(reader=reader, threads=threads, can_post=can_post, blocked=blocked, slug=nl.slug,
                            name=nl.name,
                            story_url=story_url, item_id=issue_item_id, csrf=csrf, max_len=MAX_COMMENT,
                            off=nl.comments.who == "off", count=count)
    if reader is None:
        _kept(request).put(key, version, block.encode())
    return block


# --- posting ----------------------------------------------------------------------------------------------


def _clean_body(form: FormData) -> str:
    body = str(form.get("body", "")).replace("\r\n", "\n").strip()
    if not body:
        raise Refused(400, "The comment is empty.")
    if len(body) > MAX_COMMENT:
        raise Refused(400, f"The comment is too long: {len(body)} characters, at most {MAX_COMMENT}.")
    return body


def _int(form: FormData, name: str) -> int | None:
    raw = str(form.get(name, "") or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise Refused(400, f"The form's {name} is not a number.")
    return int(raw)


def _refused(request: Request, exc: Refused, next_url: str) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return page(request, "message.html", {"title": "Your comment was not posted", "text": str(exc),
                                          "back": next_url}, exc.status, headers)


def _signed_in(request: Request) -> Reader:
    reader = current_reader(request)
    if reader is None:
        raise Refused(401, "Sign in to comment: your sign-in has ended or you signed out.")
    return reader


def post_comment(state: WebState, reader: Reader, item_id: int, parent_id: int | None, body: str) -> int:
    with session_scope(state.engine) as session:
        story = _story(session, item_id)
        nl = state.newsletter(story.slug) if story else None
        if story is None or nl is None:
            raise Refused(404, "No such story.")
        if nl.comments.who == "off":
            raise Refused(403, f"Comments are off for {nl.name}.")
        if blocked_on(session, reader.id, nl.slug):
            raise Refused(403, "You cannot post here: an editor has blocked this account.")
        if not may_comment(session, nl, reader.email):
            raise Refused(403, f"Only subscribers of {nl.name} can post here.")
        if parent_id is not None:
            parent = session.get(Comment, parent_id)
            if parent is None or parent.issue_item_id != item_id or parent.status not in ("visible", "pending"):
                raise Refused(400, "The comment you reply to is not there any more.")
            parent_id = parent.parent_id or parent.id  # one level deep: replies join the top comment's thread
        comment = Comment(issue_item_id=item_id, reader_id=reader.id, parent_id=parent_id, body=body,
                          status="pending" if nl.comments.premoderate else "visible", created_at=utcnow())
        session.add(comment)
        session.flush()
        return comment.id


async def post(request: Request) -> Response:
    form = await checked_form(request)
    next_url = safe_next(str(form.get("next", "")))
    try:
        reader = await run_in_threadpool(_signed_in, request)
        if str(form.get("website", "")).strip():  # the honeypot: people never see this field
            log.info("comment refused: the honeypot was filled (reader %s)", reader.id)
            raise Refused(400, "The comment was refused: the form had a field filled in that people do not see.")
        item_id, parent_id = _int(form, "item"), _int(form, "parent")
        if item_id is None:
            raise Refused(400, "The form does not say which story the comment is for.")
        body = _clean_body(form)
        per_reader = limits(request).comments
        wait = per_reader.blocked_for(str(reader.id))
        if wait:
            raise Refused(429, f"You are posting too fast: at most {COMMENT_LIMIT[0]} comments every "
                               f"{COMMENT_LIMIT[1] // 60} minutes. Try again in {max(1, wait // 60)} minute(s).",
                          retry_after=wait)
        # Counted before the post, with no await between the check and the count: posts sent all at once
        # cannot all slip under the limit together.
        per_reader.failed(str(reader.id))
        comment_id = await run_in_threadpool(post_comment, web_state(request), reader, item_id, parent_id, body)
    except Refused as exc:
        return _refused(request, exc, next_url)
    return redirect(f"{next_url}#comment-{comment_id}")


def _own(session: Session, state: WebState, reader: Reader, comment_id: int) -> tuple[Comment, Newsletter]:
    comment = session.get(Comment, comment_id)
    if comment is None or comment.reader_id != reader.id:
        raise Refused(404, "No such comment of yours.")
    story = _story(session, comment.issue_item_id)
    nl = state.newsletter(story.slug) if story else None
    if nl is None:
        raise Refused(404, "No such story.")
    if not _editable(comment.status, comment.created_at, nl, utcnow()):
        raise Refused(403, f"Comments can be changed for {nl.comments.edit_minutes} minutes after posting.")
    return comment, nl


async def edit(request: Request) -> Response:
    form = await checked_form(request)
    next_url = safe_next(str(form.get("next", "")))
    comment_id = int(request.path_params["comment_id"])
    state = web_state(request)
    try:
        reader = await run_in_threadpool(_signed_in, request)
        body = _clean_body(form)

        def change() -> None:
            with session_scope(state.engine) as session:
                comment, _ = _own(session, state, reader, comment_id)
                comment.body, comment.edited_at = body, utcnow()

        await run_in_threadpool(change)
    except Refused as exc:
        return _refused(request, exc, next_url)
    return redirect(f"{next_url}#comment-{comment_id}")


async def delete(request: Request) -> Response:
    form = await checked_form(request)
    next_url = safe_next(str(form.get("next", "")))
    comment_id = int(request.path_params["comment_id"])
    state = web_state(request)
    try:
        reader = await run_in_threadpool(_signed_in, request)

        def remove() -> None:
            with session_scope(state.engine) as session:
                comment, _ = _own(session, state, reader, comment_id)
                # The reader wants it gone: the text goes too, not only its visibility.
                comment.status, comment.deleted_at, comment.body = "deleted", utcnow(), ""

        await run_in_threadpool(remove)
    except Refused as exc:
        return _refused(request, exc, next_url)
    return redirect(f"{next_url}#comments")


# --- moderation (editors) ---------------------------------------------------------------------------------


def forget_reader(session: Session, email: str) -> tuple[bool, int]:
    """A reader's deletion request: their comments and their account go. (whether there was a reader,
    comments removed). Replies others made to them stay, as top comments of their own."""
    try:
        address = reader_address(email)
    except ValueError:
        address = email.strip().lower()
    row = session.scalar(select(ReaderRow).where(ReaderRow.email == address))
    if row is None:
        return False, 0
    comments = session.scalars(select(Comment).where(Comment.reader_id == row.id)).all()
    ids = [c.id for c in comments]
    if ids:  # replies to them are other people's words: they stay, as top comments of their own
        for reply in session.scalars(select(Comment).where(Comment.parent_id.in_(ids),
                                                           Comment.reader_id != row.id)):
            reply.parent_id = None
    for comment in comments:
        session.delete(comment)
    # Their feedback on summaries is their words too (newsletter.web.feedback).
    session.execute(sa_delete(StoryFeedback).where(StoryFeedback.reader_id == row.id))
    session.flush()
    session.delete(row)
    session.flush()
    return True, len(ids)


def _moderation_rows(session: Session, slug: str, limit: int = 200) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Comment, ReaderRow, IssueItem.title, IssueRow.number, ReaderBlock.blocked_at)
        .join(ReaderRow, ReaderRow.id == Comment.reader_id)
        .join(IssueItem, IssueItem.id == Comment.issue_item_id)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .outerjoin(ReaderBlock, and_(ReaderBlock.reader_id == ReaderRow.id,
                                     ReaderBlock.newsletter_id == NewsletterRow.id))
        .where(NewsletterRow.slug == slug, Comment.status != "deleted")
        .order_by((Comment.status == "pending").desc(), Comment.id.desc()).limit(limit)
    ).all()
    return [{"id": c.id, "status": c.status, "html": render_body(c.body), "body": c.body, "email": r.email,
             "reader_id": r.id, "story_id": c.issue_item_id, "created_iso": c.created_at.isoformat() + "Z",
             "blocked": blocked_at is not None, "story": title, "number": number,
             "created": c.created_at.strftime("%Y-%m-%d %H:%M"), "reply": c.parent_id is not None}
            for c, r, title, number, blocked_at in rows]


async def moderation_page(request: Request) -> Response:
    state = web_state(request)
    newsletters = await run_in_threadpool(state.newsletters)
    slug = request.query_params.get("newsletter") or (sorted(newsletters)[0] if newsletters else "")

    def load() -> list[dict[str, Any]]:
        with session_scope(state.engine) as session:
            return _moderation_rows(session, slug)

    comments = await run_in_threadpool(load) if slug in newsletters else []
    return page(request, "comments_moderation.html", {
        "newsletters": sorted(newsletters.items()), "slug": slug, "comments": comments,
        "pending": sum(1 for c in comments if c["status"] == "pending"),
        "premoderate": slug in newsletters and newsletters[slug].comments.premoderate})


ACTIONS = {"hide": "hidden", "show": "visible", "approve": "visible", "delete": "deleted"}


def _apply(comment: Comment, action: str) -> None:
    now = utcnow()
    comment.status = ACTIONS[action]
    if action == "hide":
        comment.hidden_at = now
    elif action == "delete":
        comment.deleted_at = now
    else:  # show, approve
        comment.hidden_at = None


async def moderate(request: Request, form: FormData) -> Response:
    action, comment_id = request.path_params["action"], int(request.path_params["comment_id"])
    back = f"/editor/comments/?newsletter={str(form.get('newsletter', ''))}"
    if action not in ACTIONS:
        flash(request, "error", f"Unknown action {action!r}.")
        return redirect(back)
    state = web_state(request)

    def apply() -> bool:
        with session_scope(state.engine) as session:
            comment = session.get(Comment, comment_id)
            if comment is None or comment.status == "deleted":
                return False
            _apply(comment, action)
            return True

    done = await run_in_threadpool(apply)
    flash(request, "ok" if done else "error",
          f"Comment {comment_id}: {ACTIONS[action]}." if done else f"No comment {comment_id} to change.")
    return redirect(back)


async def block(request: Request, form: FormData) -> Response:
    """Block or unblock a reader on one newsletter (the form's): their other newsletters are not this editor's
    to close."""
    reader_id, action = int(request.path_params["reader_id"]), request.path_params["action"]
    slug = str(form.get("newsletter", ""))
    back = f"/editor/comments/?newsletter={slug}"
    if action not in ("block", "unblock"):
        flash(request, "error", f"Unknown action {action!r}.")
        return redirect(back)
    blocked, state = action == "block", web_state(request)
    by = str(request.session.get("editor_email") or "")

    def apply() -> str | None:
        with session_scope(state.engine) as session:
            row = session.get(ReaderRow, reader_id)
            newsletter_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug))
            if row is None or newsletter_id is None:
                return None
            kept = session.get(ReaderBlock, (reader_id, newsletter_id))
            if blocked and kept is None:
                session.add(ReaderBlock(reader_id=reader_id, newsletter_id=newsletter_id, blocked_at=utcnow(),
                                        blocked_by=by or None))
            elif not blocked and kept is not None:
                session.delete(kept)
            return row.email

    email = await run_in_threadpool(apply)
    if email is None:
        flash(request, "error", f"No reader {reader_id} on newsletter {slug!r}.")
    else:
        said = f"is blocked on {slug}: they cannot post there" if blocked else f"may post on {slug} again"
        flash(request, "ok", f"{email} {said}.")
    return redirect(back)


# --- the API's deletion request ---------------------------------------------------------------------------


def api_forget(state: WebState, request: Request, body: Any, editor: str) -> dict[str, Any]:
    if isinstance(body, dict) and set(body) - {"email"}:
        raise ApiError(400, f"unknown fields: {', '.join(sorted(set(body) - {'email'}))} (only \"email\")")
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip():
        raise ApiError(422, "give the reader's address: {\"email\": \"reader@example.com\"}")
    with session_scope(state.engine) as session:
        found, removed = forget_reader(session, email)
    log.info("reader %s forgotten by %s: %d comments removed", email, editor, removed)
    return {"email": email.strip(), "reader": found, "comments_removed": removed}


def api_comments(state: WebState, request: Request, body: Any, editor: str) -> dict[str, Any]:
    """GET /api/newsletters/SLUG/comments?status=pending: the newest 200 (deleted ones left out)."""
    slug, status = request.path_params["slug"], request.query_params.get("status")
    if state.newsletter(slug) is None:
        raise ApiError(404, f"no newsletter {slug!r}")
    # As for issues: a status no comment has lists none.
    with session_scope(state.engine) as session:
        rows = _moderation_rows(session, slug)
    return {"comments": [{"id": c["id"], "status": c["status"], "body": c["body"], "reader": c["email"],
                          "reader_blocked": c["blocked"], "issue_number": c["number"], "story": c["story"],
                          "story_id": c["story_id"], "reply": c["reply"], "created_at": c["created_iso"]}
                         for c in rows if status is None or c["status"] == status]}


def api_moderate(state: WebState, request: Request, body: Any, editor: str) -> dict[str, Any]:
    """POST /api/comments/ID/{approve,hide,show,delete}."""
    action, comment_id = request.path_params["action"], int(request.path_params["comment_id"])
    if action not in ACTIONS:
        raise ApiError(404, f"no action {action!r}: approve, hide, show or delete")
    with session_scope(state.engine) as session:
        comment = session.get(Comment, comment_id)
        if comment is None or comment.status == "deleted":
            raise ApiError(404, f"no comment {comment_id}")
        _apply(comment, action)
        log.info("comment %s: %s by %s", comment_id, ACTIONS[action], editor)
        return {"id": comment_id, "status": comment.status}


def routes() -> list:
    moderation = [
        Route("/", moderation_page, methods=["GET"]),
        Route("/{comment_id:int}/{action}", form_action(moderate), methods=["POST"]),
        Route("/readers/{reader_id:int}/{action:str}", form_action(block), methods=["POST"]),
    ]
    return [
        Route("/readers/comments", post, methods=["POST"]),
        Route("/readers/comments/{comment_id:int}/edit", edit, methods=["POST"]),
        Route("/readers/comments/{comment_id:int}/delete", delete, methods=["POST"]),
        Route("/editor/comments", lambda request: redirect("/editor/comments/"), methods=["GET"]),
        Mount("/editor/comments", routes=moderation, middleware=[Middleware(RequireEditor)]),
    ]
