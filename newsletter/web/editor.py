"""The editors' pages: the newsletters and their issues, and the issue page (preview, edits, test send,
approve, hold).

Everything under /editor/ sits behind RequireEditor, so a route added later is protected without thinking
about it; every POST goes through `form_action`, which checks the CSRF token before the handler runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from newsletter.compose import edit
from newsletter.compose.build import load_issue
from newsletter.compose.issue import Issue
from newsletter.config import Newsletter
from newsletter.deliver.preflight import preflight_issue
from newsletter.render import tokens
from newsletter.render.cache import rendered_issue
from newsletter.render.engine import Rendered, TemplateError
from newsletter.render.preview import force_dark
from newsletter.report.guard import active_hold
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow
from newsletter.web import approvals, feedback
from newsletter.web.edits import EDITS, BadValue, NoSuchIssue, change_of, edit_issue
from newsletter.web.pages import flash, page, redirect
from newsletter.web.signin import RequireEditor, form_action
from newsletter.web.state import WebState, web_state

log = logging.getLogger(__name__)

SAMPLE = {"email": "reader@example.org", "name": "Reader", "unsubscribe_url": "#unsubscribe-link",
          "manage_url": "#manage-link"}
# The email preview runs none of its own scripts and cannot reach this origin's cookies or pages.
PREVIEW_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
               "img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:")


# --- the newsletters and their issues -----------------------------------------------------------------------


@dataclass
class IssueLine:
    id: int
    number: int
    subject: str
    status: str
    stories: int
    created_at: Any
    sent_at: Any


@dataclass
class NewsletterBlock:
    slug: str
    name: str
    configured: bool
    issues: list[IssueLine] = field(default_factory=list)
    hold: str | None = None  # why the guard holds its scheduled sends (newsletter.report.guard)


def _home(state: WebState) -> list[NewsletterBlock]:
    newsletters = state.newsletters()
    blocks = {slug: NewsletterBlock(slug, nl.name, True) for slug, nl in sorted(newsletters.items())}
    with session_scope(state.engine) as session:
        stories = (select(func.count(IssueItem.id)).where(IssueItem.issue_id == IssueRow.id, IssueItem.included)
                   .correlate(IssueRow).scalar_subquery())
        rows = session.execute(
            select(IssueRow, NewsletterRow.slug, NewsletterRow.name, stories)
            .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
            .order_by(NewsletterRow.slug, IssueRow.number.desc())
        ).all()
        for row, slug, name, count in rows:
            block = blocks.setdefault(slug, NewsletterBlock(slug, name, False))
            block.issues.append(IssueLine(row.id, row.number, row.subject, row.status, count or 0,
                                          row.created_at, row.sent_at))
        for block in blocks.values():
            held = active_hold(session, block.slug)
            block.hold = held.reason if held is not None else None
    return list(blocks.values())


async def home(request: Request) -> Response:
    blocks = await run_in_threadpool(_home, web_state(request))
    return page(request, "home.html", {"newsletters": blocks})


@dataclass
class StoryView:
    story: Any
    candidates: list[dict]
    kept: list[int]


def _newsletter_for(state: WebState, slug: str) -> Newsletter:
    nl = state.newsletter(slug)
    if nl is None:
        raise TemplateError(f"{state.settings.schedules_dir}/{slug}.toml is missing or broken: "
                            "the issue cannot be rendered without it")
    return nl


def _render(state: WebState, issue: Issue) -> Rendered:
    return rendered_issue(state.engine, issue.id, _newsletter_for(state, issue.newsletter),
                          base_url=state.settings.base_url, templates_dir=state.templates_dir)


def _issue_view(state: WebState, issue_id: int) -> dict[str, Any]:
    with session_scope(state.engine) as session:
        issue = load_issue(session, issue_id)
        if issue is None:
            raise HTTPException(404, f"There is no issue {issue_id}.")
        rows = {i.id: i for i in session.get_one(IssueRow, issue_id).items}
        stories = []
        for story in issue.items:
            candidates = edit.quote_candidates(rows[story.id])
            kept_quotes = [dict(q) for q in rows[story.id].quotes or []]
            stories.append(StoryView(story, candidates, [i for i, c in enumerate(candidates) if c in kept_quotes]))
        approved_as_is = approvals.is_approved_as_is(session, issue_id)
        approved_by = session.get_one(IssueRow, issue_id).approved_by
        # Readers' reports that a sent story's summary is wrong, and where to correct it (web/feedback.py).
        feedback_open = feedback.open_counts(session, issue_id) if issue.status == "sent" else 0
    context: dict[str, Any] = {"issue": issue, "stories": stories, "approved_as_is": approved_as_is,
                               "feedback_open": feedback_open,
                               "approved_by": approved_by, "editable": issue.status not in edit.FROZEN,
                               "render_error": None, "report": None, "version": ""}
    try:
        # The same check a send runs (with the headers a real copy carries), so what passes here passes there.
        rendered, context["report"] = preflight_issue(state.engine, _newsletter_for(state, issue.newsletter),
                                                      issue.id, issue.number, state.settings)
    except TemplateError as exc:
        context["render_error"] = str(exc)
        return context
    order = {"fail": 0, "warn": 1, "ok": 2}
    context["findings"] = sorted(context["report"].findings, key=lambda f: order.get(f.level, 3))
    context["version"] = hashlib.sha256((rendered.html + rendered.text).encode()).hexdigest()[:16]
    context["preheader"] = rendered.preheader
    return context


async def issue_page(request: Request) -> Response:
    issue_id = request.path_params["issue_id"]
    context = await run_in_threadpool(_issue_view, web_state(request), issue_id)
    return page(request, "issue.html", context)


async def preview(request: Request) -> Response:
    """The email as rendered, with sample values in the per-recipient places: html, dark or text."""
    state = web_state(request)
    issue_id, view = request.path_params["issue_id"], request.path_params["view"]
    if view not in ("email.html", "dark.html", "text.txt"):
        raise HTTPException(404, "No such preview.")

    def build() -> Rendered:
        with session_scope(state.engine) as session:
            issue = load_issue(session, issue_id)
        if issue is None:
            raise HTTPException(404, f"There is no issue {issue_id}.")
        return _render(state, issue)

    try:
        rendered = await run_in_threadpool(build)
    except TemplateError as exc:
        return PlainTextResponse(f"The issue does not render: {exc}", 500)
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": PREVIEW_CSP}
    if view == "text.txt":
        return PlainTextResponse(tokens.fill(rendered.text, SAMPLE), headers=headers)
    html = tokens.fill(rendered.html, {k: _html_escape(v) for k, v in SAMPLE.items()})
    if view == "dark.html":
        html = force_dark(html)
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


def _html_escape(value: str) -> str:
    import html

    return html.escape(value, quote=True)


# --- changing the issue -------------------------------------------------------------------------------------


def _issue_url(issue_id: int, anchor: str = "") -> str:
    return f"/editor/issues/{issue_id}" + (f"#{anchor}" if anchor else "")


async def _edit(request: Request, change: Callable[[Any], edit.Edit], anchor: str = "") -> Response:
    """Apply one change, render the issue again and go back to its page (where the preview shows it)."""
    state = web_state(request)
    issue_id = request.path_params["issue_id"]

    def run() -> edit.Edit:
        try:
            return edit_issue(state, issue_id, change)
        except NoSuchIssue:
            raise HTTPException(404, f"There is no issue {issue_id}.") from None

    try:
        result = await run_in_threadpool(run)
    except edit.EditError as exc:
        flash(request, "error", str(exc))
    except TemplateError as exc:
        flash(request, "error", f"Saved, but the issue does not render: {exc}")
    else:
        if result.reopened:
            flash(request, "warn", "Saved. The issue was approved; it needs approving again.")
        elif result.changed:
            flash(request, "ok", "Saved.")
    return redirect(_issue_url(issue_id, anchor))


def _form_edit(name: str) -> Callable[[Request], Awaitable[Response]]:
    """The form endpoint of one edit of the table (web/edits.py): read the form, make the change, go back."""
    kind = EDITS[name]
    assert kind.from_form is not None, f"the edit {name} has no form"
    from_form = kind.from_form

    async def handler(request: Request, form: FormData) -> Response:
        try:
            value = from_form(form)
        except BadValue as exc:
            raise HTTPException(400, str(exc)) from None
        item_id = request.path_params.get("item_id")
        anchor = f"story-{item_id}" if kind.on == "story" else name
        return await _edit(request, change_of(name, request.path_params["issue_id"], item_id, value), anchor)

    handler.__name__ = f"edit_{name}"
    return form_action(handler)


@form_action
async def send_test(request: Request, form: FormData) -> Response:
    from newsletter.deliver.send import send_test as deliver_test

    state = web_state(request)
    issue_id = request.path_params["issue_id"]
    address = request.session.get("editor_email")
    if not address:  # signing in sets it: the test goes to the editor's own address
        raise HTTPException(403, "Sign in again: this session does not say who you are.")

    def run() -> None:
        with session_scope(state.engine) as session:
            row = session.get(IssueRow, issue_id)
            if row is None:
                raise HTTPException(404, f"There is no issue {issue_id}.")
            slug = row.newsletter.slug
        nl = state.newsletter(slug)
        if nl is None:
            raise TemplateError(f"{state.settings.schedules_dir}/{slug}.toml is missing or broken")
        mailer = state.make_mailer()
        try:
            deliver_test(nl, issue_id, state.engine, mailer, state.settings, address)
        finally:
            mailer.close()

    try:
        await run_in_threadpool(run)
    except HTTPException:
        raise
    except Exception as exc:  # the mailer's or the template's error, shown to the editor who asked
        log.warning("test send of issue %s failed: %s", issue_id, type(exc).__name__)
        flash(request, "error", f"The test was not sent: {exc}")
    else:
        flash(request, "ok", f"Test sent to {address} through the {state.settings.mailer} mailer.")
    return redirect(_issue_url(issue_id, "actions"))


async def _status_change(request: Request, change: Callable[[Any, int], object], done: str) -> Response:
    state = web_state(request)
    issue_id = request.path_params["issue_id"]

    def run() -> None:
        with session_scope(state.engine) as session:
            if session.get(IssueRow, issue_id) is None:
                raise HTTPException(404, f"There is no issue {issue_id}.")
            change(session, issue_id)

    try:
        await run_in_threadpool(run)
    except approvals.ApprovalError as exc:
        flash(request, "error", str(exc))
    else:
        flash(request, "ok", done)
    return redirect(_issue_url(issue_id, "actions"))


@form_action
async def approve(request: Request, form: FormData) -> Response:
    editor = request.session.get("editor_email", "")
    response = await _status_change(request, lambda s, i: approvals.approve(s, i, editor),
                                    "Approved: this version will go out. Any change needs approving again.")
    if request.session.get("flash", [[None]])[-1][0] == "ok":
        state, issue_id = web_state(request), request.path_params["issue_id"]

        def check() -> bool:
            with session_scope(state.engine) as session:
                issue = load_issue(session, issue_id)
            if issue is None:
                raise HTTPException(404, f"There is no issue {issue_id}.")
            try:
                _, report = preflight_issue(state.engine, _newsletter_for(state, issue.newsletter), issue_id,
                                            issue.number, state.settings)
            except TemplateError:
                return True
            return report.failed

        if await run_in_threadpool(check):
            flash(request, "warn", "The preflight check fails: a send holds this issue until it passes "
                                   "(see Preflight below).")
    return response


@form_action
async def hold(request: Request, form: FormData) -> Response:
    return await _status_change(request, approvals.hold, "Held: it will not be sent until approved.")


@form_action
async def reopen(request: Request, form: FormData) -> Response:
    return await _status_change(request, approvals.reopen, "Back to draft.")


EDITOR_ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/issues/{issue_id:int}", issue_page, methods=["GET"]),
    Route("/issues/{issue_id:int}/preview/{view}", preview, methods=["GET"]),
    Route("/issues/{issue_id:int}/items/{item_id:int}/include", _form_edit("included"), methods=["POST"]),
    Route("/issues/{issue_id:int}/items/{item_id:int}/move", _form_edit("move"), methods=["POST"]),
    Route("/issues/{issue_id:int}/items/{item_id:int}/summary", _form_edit("summary"), methods=["POST"]),
    Route("/issues/{issue_id:int}/items/{item_id:int}/quotes", _form_edit("quotes"), methods=["POST"]),
    Route("/issues/{issue_id:int}/items/{item_id:int}/story", _form_edit("story"), methods=["POST"]),
    Route("/issues/{issue_id:int}/intro", _form_edit("intro"), methods=["POST"]),
    Route("/issues/{issue_id:int}/test", send_test, methods=["POST"]),
    Route("/issues/{issue_id:int}/approve", approve, methods=["POST"]),
    Route("/issues/{issue_id:int}/hold", hold, methods=["POST"]),
    Route("/issues/{issue_id:int}/reopen", reopen, methods=["POST"]),
]


def routes() -> list:
    return [
        Route("/editor", lambda request: redirect("/editor/"), methods=["GET"]),
        Mount("/editor", routes=EDITOR_ROUTES, middleware=[Middleware(RequireEditor)]),
    ]
