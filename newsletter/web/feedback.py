"""Readers' feedback on a story's summary ("this summary is wrong / misleading") and the editors' corrections.

Owns filing (from a signed-in reader on the story page, or from the signed link each recipient's email carries
under every story), the editors' queue, and correcting a sent story's summary in the archive.

- POST     /readers/feedback                 a signed-in reader, from the story page's form
- GET      /f/{token}/{number}/{position}    the email's link: a page with the story's summary and one button
                                             (mail scanners follow GET links: GET files nothing)
- POST     /f/{token}/{number}/{position}    files it
- GET      /editor/feedback/                 the queue per newsletter (?issue=N: every story of that issue)
- POST     /editor/feedback/stories/{id}/correct   a new summary for a sent story; its open feedback is resolved
- POST     /editor/feedback/{id}/{dismiss,reopen}
- GET      /api/newsletters/{slug}/feedback  (api.OPERATIONS)

The email's token (newsletter.subscribers.tokens, purpose "f") names the subscriber by id, never the address,
and the newsletter; it is signed, expires after 90 days and is read only when shorter than MAX_TOKEN. Forms are
CSRF-checked, carry the comments' honeypot, and filing is limited per person and per client. One feedback per
person per story: filing again replaces the kind and the reason. A correction keeps what was sent
(`original_summary`), stamps `corrected_at`, and moves the issue's `updated_at` on, which is the version the
kept issue and story pages are served under (newsletter.web.edition), so both show it on the next view; the
feeds read the stories as they are.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from newsletter.compose.edit import MAX_SUMMARY
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow, StoryFeedback, Subscriber, utcnow
from newsletter.store.models import Reader as ReaderRow
from newsletter.subscribers.tokens import FEEDBACK, InvalidToken, Signer
from newsletter.urls import story_path
from newsletter.web.api_errors import ApiError
from newsletter.web.auth import AttemptLimiter, csrf_token
from newsletter.web.pages import checked_form, flash, page, redirect
from newsletter.web.readers import Reader, blocked_on, current_reader, may_comment, safe_next
from newsletter.web.signin import RequireEditor, form_action
from newsletter.web.state import WebState, web_state

log = logging.getLogger(__name__)

KINDS = {"wrong": "wrong", "misleading": "misleading"}
MAX_REASON = 500
MAX_TOKEN = 200  # a real token is about 60 characters: anything much longer is not one, and is not read
PER_PERSON = (5, 600)  # feedback filed per reader or subscriber per 10 minutes
PER_CLIENT = (30, 3600)  # per client address per hour


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass
class FeedbackLimits:
    per_person: AttemptLimiter
    per_client: AttemptLimiter


def _limits(request: Request) -> FeedbackLimits:
    kept = getattr(request.app.state, "feedback_limits", None)
    if kept is None:
        kept = request.app.state.feedback_limits = FeedbackLimits(AttemptLimiter(*PER_PERSON),
                                                                  AttemptLimiter(*PER_CLIENT))
    return kept


@dataclass(frozen=True)
class SentStory:
    item_id: int
    slug: str
    number: int
    position: int  # among the issue's stories that went out, as the email and the story pages number them
    title: str
    summary: str


def sent_story(session: Session, slug: str, number: int, position: int) -> SentStory | None:
    """The `position`th story that went out in sent issue `number` of `slug`."""
    if position < 1:
        return None
    rows = session.execute(
        select(IssueItem.id, IssueItem.title, IssueItem.summary)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(NewsletterRow.slug == slug, IssueRow.number == number, IssueRow.status == "sent", IssueItem.included)
        .order_by(IssueItem.position).offset(position - 1).limit(1)
    ).first()
    return SentStory(int(rows[0]), slug, number, position, rows[1], rows[2]) if rows else None


def _story_of_item(session: Session, item_id: int) -> SentStory | None:
    row = session.execute(
        select(IssueItem.id, IssueItem.title, IssueItem.summary, IssueItem.position, IssueRow.id, IssueRow.number,
               NewsletterRow.slug)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(IssueItem.id == item_id, IssueRow.status == "sent", IssueItem.included)
    ).first()
    if row is None:
        return None
    place = session.scalar(select(func.count(IssueItem.id)).where(
        IssueItem.issue_id == row[4], IssueItem.included, IssueItem.position <= row[3]))
    return SentStory(int(row[0]), str(row[6]), int(row[5]), int(place or 1), row[1], row[2])


def _clean(form: FormData) -> tuple[str, str]:
    kind = str(form.get("kind", "") or "wrong")
    if kind not in KINDS:
        raise Refused(400, "Say whether the summary is wrong or misleading.")
    reason = " ".join(str(form.get("reason", "") or "").replace("\x00", "").split())
    if len(reason) > MAX_REASON:
        raise Refused(400, f"The reason is too long: {len(reason)} characters, at most {MAX_REASON}.")
    if str(form.get("website", "")).strip():  # the honeypot: people never see this field
        raise Refused(400, "The feedback was refused: the form had a field filled in that people do not see.")
    return kind, reason


def _throttle(request: Request, person: str) -> None:
    kept = _limits(request)
    client = request.client.host if request.client else "unknown"
    wait = max(kept.per_person.blocked_for(person), kept.per_client.blocked_for(client))
    if wait:
        raise Refused(429, f"Too much feedback sent: at most {PER_PERSON[0]} every {PER_PERSON[1] // 60} minutes. "
                           f"Try again in {max(1, wait // 60)} minute(s).", retry_after=wait)
    # Counted before filing, with no await in between: requests sent all at once cannot slip under together.
    kept.per_person.failed(person)
    kept.per_client.failed(client)


def file_feedback(session: Session, item_id: int, kind: str, reason: str, *, reader_id: int | None = None,
                  subscriber_id: int | None = None) -> tuple[int, bool]:
    """(the feedback's id, whether it is new). One per person per story: a second one replaces the first."""
    who = (StoryFeedback.reader_id == reader_id if reader_id is not None
           else StoryFeedback.subscriber_id == subscriber_id)
    row = session.scalar(select(StoryFeedback).where(StoryFeedback.issue_item_id == item_id, who)
                         .order_by(StoryFeedback.id.desc()).limit(1))
    if row is not None and row.status == "open":
        row.kind, row.reason, row.created_at = kind, reason, utcnow()
        return row.id, False
    row = StoryFeedback(issue_item_id=item_id, reader_id=reader_id, subscriber_id=subscriber_id, kind=kind,
                        reason=reason, status="open", created_at=utcnow())
    session.add(row)
    session.flush()
    return row.id, True


def _refused(request: Request, exc: Refused, back: str | None) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return page(request, "message.html", {"title": "Your feedback was not sent", "text": str(exc), "back": back},
                exc.status, headers)


def _thanks(request: Request, story: SentStory) -> Response:
    return page(request, "message.html", {
        "title": "Thank you", "back": story_path(story.slug, story.number, story.position, story.title),
        "text": f"The editors will look at the summary of “{story.title}” and correct it if it needs it."})


# --- the story page (a signed-in reader) ------------------------------------------------------------------


def signed_out_block(slug: str, story_url: str, sign_in: bool = True) -> str:
    """What everyone who is not signed in sees under the summary (kept in the page). Without sign-in (comments
    off), only the email's link can file feedback."""
    from urllib.parse import quote

    if not sign_in:
        return ('<p class="feedback-ask muted" id="feedback">This summary is wrong or misleading? Tell the editors '
                "with the link under the story in your email.</p>")
    target = f"/readers/signin?newsletter={quote(slug)}&amp;next={quote(story_url + '#feedback', safe='/')}"
    return (f'<p class="feedback-ask" id="feedback"><a href="{target}">This summary is wrong or misleading?</a> '
            '<span class="muted">Sign in to tell the editors (or use the link under the story in your email).</span>'
            "</p>")


def feedback_block(request: Request, item_id: int, slug: str, story_url: str) -> str:
    """A signed-in reader's part under the summary: the form, or what they told the editors already
    (synchronous: it queries the database)."""
    state = web_state(request)
    reader = current_reader(request)
    nl = state.newsletter(slug)
    if reader is None or nl is None:
        return signed_out_block(slug, story_url, nl is not None and nl.comments.who != "off")
    with session_scope(state.engine) as session:
        if blocked_on(session, reader.id, slug) or not may_comment(session, nl, reader.email):
            return ""
        mine = session.scalar(select(StoryFeedback).where(StoryFeedback.issue_item_id == item_id,
                                                          StoryFeedback.reader_id == reader.id,
                                                          StoryFeedback.status == "open"))
        sent = (mine.kind, mine.created_at) if mine else None
    if sent:
        return (f'<p class="feedback-sent" id="feedback" role="status">You told the editors this summary is '
                f'{html.escape(sent[0])} ({sent[1]:%d %b %Y, %H:%M} UTC). Thank you: they will look at it.</p>')
    return state.templates.get_template("feedback_form.html").render(
        action="/readers/feedback", csrf=csrf_token(request.session), item_id=item_id, next=story_url,
        max_len=MAX_REASON, details=True)


async def reader_files(request: Request) -> Response:
    form = await checked_form(request)
    back = safe_next(str(form.get("next", "")))
    state = web_state(request)
    try:
        reader: Reader | None = await run_in_threadpool(current_reader, request)
        if reader is None:
            raise Refused(401, "Sign in to send feedback: your sign-in has ended or you signed out.")
        raw = str(form.get("item", "") or "")
        if not raw.isdigit() or len(raw) > 18:
            raise Refused(400, "The form does not say which story the feedback is for.")
        kind, reason = _clean(form)
        _throttle(request, f"reader:{reader.id}")

        def file() -> SentStory:
            with session_scope(state.engine) as session:
                story = _story_of_item(session, int(raw))
                nl = state.newsletter(story.slug) if story else None
                if story is None or nl is None:
                    raise Refused(404, "No such story.")
                if blocked_on(session, reader.id, story.slug):
                    raise Refused(403, "You cannot send feedback here: an editor has blocked this account.")
                if not may_comment(session, nl, reader.email):
                    raise Refused(403, f"Only subscribers of {nl.name} can send feedback here.")
                feedback_id, new = file_feedback(session, story.item_id, kind, reason, reader_id=reader.id)
                log.info("feedback %s on story %s (%s) from reader %s%s", feedback_id, story.item_id, kind,
                         reader.id, "" if new else ", replacing their earlier one")
                return story

        story = await run_in_threadpool(file)
    except Refused as exc:
        return _refused(request, exc, back)
    return redirect(story_path(story.slug, story.number, story.position, story.title) + "#feedback")


# --- the email's link -------------------------------------------------------------------------------------


def _from_link(state: WebState, request: Request) -> tuple[int, SentStory]:
    """(subscriber id, the story) the link names, or Refused."""
    token = request.path_params["token"]
    if len(token) > MAX_TOKEN:
        raise Refused(400, "This feedback link is not valid.")
    try:
        data = Signer(state.secret).read(token, FEEDBACK)
    except InvalidToken as exc:
        log.info("feedback link refused: %s", exc)
        expired = "expired" in str(exc)
        raise Refused(410 if expired else 400, "This feedback link has expired: it works for 90 days after the "
                      "issue was sent." if expired else "This feedback link is not valid.") from None
    with session_scope(state.engine) as session:
        story = sent_story(session, data.newsletter_slug, request.path_params["number"],
                           request.path_params["position"])
        if story is None:
            raise Refused(404, "There is no such story.")
        if session.get(Subscriber, data.subscriber_id) is None:  # the subscriber asked to be forgotten since
            raise Refused(410, "This feedback link is no longer valid.")
    return data.subscriber_id, story


async def link_page(request: Request) -> Response:
    state = web_state(request)
    try:
        _, story = await run_in_threadpool(_from_link, state, request)
    except Refused as exc:
        return _refused(request, exc, None)
    nl = await run_in_threadpool(state.newsletter, story.slug)
    return page(request, "feedback_confirm.html", {
        "story": story, "name": nl.name if nl else story.slug, "max_len": MAX_REASON,
        "story_path": story_path(story.slug, story.number, story.position, story.title),
        "action": request.url.path})


async def link_files(request: Request) -> Response:
    form = await checked_form(request)
    state = web_state(request)
    try:
        subscriber_id, story = await run_in_threadpool(_from_link, state, request)
        kind, reason = _clean(form)
        _throttle(request, f"subscriber:{subscriber_id}")

        def file() -> None:
            with session_scope(state.engine) as session:
                feedback_id, new = file_feedback(session, story.item_id, kind, reason, subscriber_id=subscriber_id)
                log.info("feedback %s on story %s (%s) from subscriber %s by email link%s", feedback_id,
                         story.item_id, kind, subscriber_id, "" if new else ", replacing their earlier one")

        await run_in_threadpool(file)
    except Refused as exc:
        return _refused(request, exc, None)
    return _thanks(request, story)


# --- the editors' queue -----------------------------------------------------------------------------------


def _who(reader_email: str | None, subscriber_email: str | None) -> str:
    if reader_email:
        return f"{reader_email} (signed in)"
    if subscriber_email:
        return f"{subscriber_email} (from the email)"
    return "a reader since forgotten"


def queue(session: Session, slug: str, number: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Stories with their feedback, newest issue first: those with feedback (`number` None), or every story
    of issue `number`. Each: the story (id, issue number, position, title, summary, path, corrected) and its
    feedback (newest first)."""
    issue_filter = [NewsletterRow.slug == slug, IssueRow.status == "sent", IssueItem.included]
    if number is not None:
        issue_filter.append(IssueRow.number == number)
    feedback_q = (
        select(StoryFeedback, ReaderRow.email, Subscriber.email)
        .join(IssueItem, IssueItem.id == StoryFeedback.issue_item_id)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .outerjoin(ReaderRow, ReaderRow.id == StoryFeedback.reader_id)
        .outerjoin(Subscriber, Subscriber.id == StoryFeedback.subscriber_id)
        .where(*issue_filter).order_by(StoryFeedback.id.desc()).limit(500)
    )
    if status is not None:
        feedback_q = feedback_q.where(StoryFeedback.status == status)
    by_item: dict[int, list[dict[str, Any]]] = {}
    for fb, reader_email, subscriber_email in session.execute(feedback_q).all():
        by_item.setdefault(fb.issue_item_id, []).append({
            "id": fb.id, "kind": fb.kind, "reason": fb.reason, "status": fb.status,
            "from": "reader" if fb.reader_id is not None else "email" if fb.subscriber_id is not None else "unknown",
            "who": _who(reader_email, subscriber_email), "created": f"{fb.created_at:%Y-%m-%d %H:%M} UTC",
            "created_iso": fb.created_at.isoformat(timespec="seconds") + "Z"})
    items_q = (
        select(IssueItem.id, IssueItem.issue_id, IssueItem.position, IssueItem.title, IssueItem.summary,
               IssueItem.corrected_at, IssueItem.corrected_by, IssueItem.original_summary, IssueRow.number)
        .join(IssueRow, IssueRow.id == IssueItem.issue_id)
        .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
        .where(*issue_filter)
        .order_by(IssueRow.number.desc(), IssueItem.position)
    )
    if number is None:
        items_q = items_q.where(IssueItem.id.in_(list(by_item) or [-1]))
    rows = session.execute(items_q).all()
    # Positions as the pages number them: among each issue's stories that went out.
    issues = {row[1] for row in rows}
    places = {item_id: n for issue_id in issues for n, item_id in enumerate(session.scalars(
        select(IssueItem.id).where(IssueItem.issue_id == issue_id, IssueItem.included)
        .order_by(IssueItem.position)), start=1)}
    out: list[dict[str, Any]] = []
    for item_id, issue_id, _, title, summary, corrected_at, corrected_by, original, issue_number in rows:
        feedback = by_item.get(item_id, [])
        out.append({
            "id": item_id, "issue_id": issue_id, "number": issue_number, "position": places[item_id],
            "title": title, "summary": summary, "original_summary": original, "feedback": feedback,
            "open": sum(1 for f in feedback if f["status"] == "open"),
            "path": story_path(slug, issue_number, places[item_id], title),
            "corrected": f"{corrected_at:%Y-%m-%d %H:%M} UTC" if corrected_at else None,
            "corrected_iso": corrected_at.isoformat(timespec="seconds") + "Z" if corrected_at else None,
            "corrected_by": corrected_by})
    if number is None:  # the stories with feedback, those with open reports first
        out.sort(key=lambda s: (-s["open"], -s["number"], s["position"]))
    return out


def open_counts(session: Session, issue_id: int) -> int:
    """Open feedback on the stories of one issue (the editor's issue page shows it)."""
    return int(session.scalar(
        select(func.count(StoryFeedback.id)).join(IssueItem, IssueItem.id == StoryFeedback.issue_item_id)
        .where(IssueItem.issue_id == issue_id, StoryFeedback.status == "open")) or 0)


async def queue_page(request: Request) -> Response:
    state = web_state(request)
    newsletters = await run_in_threadpool(state.newsletters)
    slug = request.query_params.get("newsletter") or (sorted(newsletters)[0] if newsletters else "")
    raw = request.query_params.get("issue", "")
    number = int(raw) if raw.isdigit() and len(raw) < 10 else None

    def load() -> list[dict[str, Any]]:
        with session_scope(state.engine) as session:
            return queue(session, slug, number)

    stories = await run_in_threadpool(load) if slug in newsletters else []
    return page(request, "feedback_queue.html", {
        "newsletters": sorted(newsletters.items()), "slug": slug, "number": number, "stories": stories,
        "open": sum(s["open"] for s in stories), "max_summary": MAX_SUMMARY})


def _back(form: FormData) -> str:
    slug = "".join(c for c in str(form.get("newsletter", "")) if c.isalnum() or c == "-")[:64]
    issue = str(form.get("issue", ""))
    return f"/editor/feedback/?newsletter={slug}" + (f"&issue={issue}" if issue.isdigit() else "")


def correct_summary(session: Session, item_id: int, summary: str, editor: str) -> SentStory:
    """A sent story's summary corrected in the archive; raises Refused when it cannot be."""
    summary = " ".join(summary.replace("\x00", "").split())
    if not summary:
        raise Refused(400, "The corrected summary is empty.")
    if len(summary) > MAX_SUMMARY:
        raise Refused(400, f"The summary is {len(summary)} characters long; keep it under {MAX_SUMMARY}.")
    item = session.get(IssueItem, item_id)
    story = _story_of_item(session, item_id)
    if item is None or story is None:
        raise Refused(404, f"No sent story {item_id}.")
    if summary == item.summary:
        raise Refused(409, "The summary is unchanged.")
    now = utcnow()
    if item.original_summary is None:
        item.original_summary = item.summary  # what went out in the email
    item.summary, item.corrected_at, item.corrected_by = summary, now, editor or None
    # The version the kept issue and story pages are served under: they are made again on the next view.
    issue = session.get(IssueRow, item.issue_id)
    if issue is not None:
        issue.updated_at = now
    for fb in session.scalars(select(StoryFeedback).where(StoryFeedback.issue_item_id == item_id,
                                                          StoryFeedback.status == "open")):
        fb.status, fb.resolved_at = "resolved", now
    log.info("summary of story %s (issue #%s of %s) corrected by %s", item_id, story.number, story.slug, editor)
    return story


async def correct(request: Request, form: FormData) -> Response:
    item_id = int(request.path_params["item_id"])
    state = web_state(request)
    editor = str(request.session.get("editor_email") or "")

    def apply() -> SentStory:
        with session_scope(state.engine) as session:
            return correct_summary(session, item_id, str(form.get("summary", "")), editor)

    try:
        story = await run_in_threadpool(apply)
    except Refused as exc:
        flash(request, "error", str(exc))
    else:
        flash(request, "ok", f"The summary of “{story.title}” is corrected; its page says so.")
    return redirect(f"{_back(form)}#story-{item_id}")


async def set_status(request: Request, form: FormData) -> Response:
    feedback_id, action = int(request.path_params["feedback_id"]), request.path_params["action"]
    statuses = {"dismiss": "dismissed", "reopen": "open"}
    if action not in statuses:
        flash(request, "error", f"Unknown action {action!r}.")
        return redirect(_back(form))
    state = web_state(request)

    def apply() -> bool:
        with session_scope(state.engine) as session:
            fb = session.get(StoryFeedback, feedback_id)
            if fb is None:
                return False
            fb.status = statuses[action]
            fb.resolved_at = utcnow() if action == "dismiss" else None
            return True

    done = await run_in_threadpool(apply)
    flash(request, "ok" if done else "error",
          f"Feedback {feedback_id}: {statuses[action]}." if done else f"No feedback {feedback_id}.")
    return redirect(_back(form))


# --- the API ----------------------------------------------------------------------------------------------


def api_feedback(state: WebState, request: Request, body: Any, editor: str) -> dict[str, Any]:
    """GET /api/newsletters/SLUG/feedback?status=open: feedback on the newsletter's stories, newest first."""
    slug, status = request.path_params["slug"], request.query_params.get("status")
    if state.newsletter(slug) is None:
        raise ApiError(404, f"no newsletter {slug!r}")
    base = state.settings.base_url
    with session_scope(state.engine) as session:
        stories = queue(session, slug, status=status) if status is None or status else []
    rows = [{"id": f["id"], "status": f["status"], "kind": f["kind"], "reason": f["reason"], "from": f["from"],
             "story_id": s["id"], "story": s["title"], "issue_number": s["number"], "story_url": base + s["path"],
             "summary": s["summary"], "corrected_at": s["corrected_iso"], "created_at": f["created_iso"]}
            for s in stories for f in s["feedback"]]
    rows.sort(key=lambda r: -int(r["id"]))
    return {"feedback": rows}


def routes() -> list:
    editor = [
        Route("/", queue_page, methods=["GET"]),
        Route("/stories/{item_id:int}/correct", form_action(correct), methods=["POST"]),
        Route("/{feedback_id:int}/{action}", form_action(set_status), methods=["POST"]),
    ]
    return [
        Route("/readers/feedback", reader_files, methods=["POST"]),
        Route("/f/{token}/{number:int}/{position:int}", link_page, methods=["GET"]),
        Route("/f/{token}/{number:int}/{position:int}", link_files, methods=["POST"]),
        Route("/editor/feedback", lambda request: redirect("/editor/feedback/"), methods=["GET"]),
        Mount("/editor/feedback", routes=editor, middleware=[Middleware(RequireEditor)]),
    ]


__all__ = ["feedback_block", "file_feedback", "open_counts", "queue", "routes", "signed_out_block"]
