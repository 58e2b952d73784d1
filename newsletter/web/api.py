"""The JSON API under /api/: issues, their stories, approval, subscribers. Documented at GET /api/, and as an
OpenAPI 3.1 document at GET /api/openapi.json built from OPERATIONS, the one list routes() serves (web/openapi.py).

Every call but the documentation needs `Authorization: Bearer TOKEN` (`newsletter editors token EMAIL`).
Cookies are never accepted here, so a page on another site cannot make an editor's browser call the API.
Errors are `{"error": "..."}` with 400 (a body not of the documented shape), 401 (no or wrong token), 404, 409
(the issue is sending or sent, or cannot be approved) or 422 (a value of the right type that cannot be taken: a
change that cannot be made, an address that cannot get mail).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import metadata
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.compose import edit
from newsletter.compose.build import load_issue
from newsletter.compose.issue import issue_to_json
from newsletter.deliver.optin import OptInResult, request_opt_in
from newsletter.render.engine import TemplateError
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow, Subscription
from newsletter.subscribers import preferences
from newsletter.subscribers.manage import (
    AddResult,
    InvalidAddress,
    add_subscriber,
    list_subscriptions,
    normalize_email,
)
from newsletter.web import approvals, conversation, feedback
from newsletter.web import openapi as spec
from newsletter.web.api_errors import ApiError
from newsletter.web.auth import editor_for_token
from newsletter.web.edits import (
    EDITS,
    BadValue,
    NoNewsletter,
    NoSuchIssue,
    change_of,
    edit_issue,
    json_fields,
    json_of,
)
from newsletter.web.limits import BodyTooLarge, read_body
from newsletter.web.openapi import Operation, Query
from newsletter.web.pages import page
from newsletter.web.state import WebState, web_state

MAX_BODY = 256 * 1024


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


Handler = Callable[[WebState, Request, Any, str], Any]


def _unstorable(value: Any) -> str | None:
    """What text of a body or query no database column could keep: a NUL (PostgreSQL refuses it in text, and no
    editor means one) or a lone surrogate (JSON's \\ud800 escapes decode to one; UTF-8 cannot encode it).
    Left to the database, both were a 500 (found with schemathesis and by hand)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # a loop, not recursion: json.loads already let this depth through
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                stack += [(f"{where}.{key}" if where else str(key), child), (where or "the body", key)]
        elif isinstance(item, list):
            stack += [(f"{where}[{n}]", child) for n, child in enumerate(item)]
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{where}: contains a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where}: contains a lone surrogate (half of a UTF-16 pair), not a character"
    return None


def endpoint(handler: Handler, status: int = 200, *, body_required: bool = False) -> Callable[[Request], Any]:
    """Authenticate, read the JSON body, run the handler off the event loop, answer in JSON."""

    async def run(request: Request) -> Response:
        state = web_state(request)
        token = _bearer(request)

        def who() -> str | None:
            with session_scope(state.engine) as session:
                editor = editor_for_token(session, token) if token else None
                return editor.email if editor else None

        editor = await run_in_threadpool(who)
        if editor is None:
            return JSONResponse({"error": "a valid API token is required (Authorization: Bearer TOKEN)"}, 401,
                                headers={"WWW-Authenticate": 'Bearer realm="newsletter"'})
        body: Any = None
        if request.method in ("POST", "PUT", "PATCH"):
            try:
                raw = await read_body(request, MAX_BODY)
            except BodyTooLarge:
                return JSONResponse({"error": "the body is too large"}, 413)
            if body_required and not raw.strip():
                # Said, not taken as {}: a PATCH sent without its body is a mistake, not a change of nothing.
                return JSONResponse({"error": "the body is missing: send a JSON object"}, 400)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                return JSONResponse({"error": f"the body is not JSON: {exc}"}, 400)
            except RecursionError:
                return JSONResponse({"error": "the body is not JSON we read: it is nested too deep"}, 400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, 400)
            if problem := _unstorable(body):
                return JSONResponse({"error": problem}, 400)
        if problem := _unstorable(dict(request.query_params)):
            return JSONResponse({"error": problem}, 400)
        try:
            result = await run_in_threadpool(handler, state, request, body, editor)
        except ApiError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        except edit.NotFound as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except edit.Frozen as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except edit.EditError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        except approvals.ApprovalError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except TemplateError as exc:
            return JSONResponse({"error": f"saved, but the issue does not render: {exc}"}, 500)
        return JSONResponse(result, status)

    run.__name__ = handler.__name__
    return run


def _issue_json(state: WebState, issue_id: int) -> dict[str, Any]:
    with session_scope(state.engine) as session:
        issue = load_issue(session, issue_id)
        if issue is None:
            raise ApiError(404, f"no issue {issue_id}")
        data = issue_to_json(issue, include_dropped=True)
        data["approved_as_is"] = approvals.is_approved_as_is(session, issue_id)
        return data


def list_issues(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    query = (select(IssueRow, NewsletterRow.slug).join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)
             .options(selectinload(IssueRow.items)).order_by(IssueRow.id.desc()))
    if slug := request.query_params.get("newsletter"):
        query = query.where(NewsletterRow.slug == slug)
    if status := request.query_params.get("status"):
        query = query.where(IssueRow.status == status)
    with session_scope(state.engine) as session:
        return {"issues": [
            {"id": row.id, "newsletter": slug, "number": row.number, "subject": row.subject, "status": row.status,
             "stories": sum(1 for i in row.items if i.included),
             "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
             "sent_at": row.sent_at.isoformat(timespec="seconds") + "Z" if row.sent_at else None,
             "url": f"{state.settings.base_url}/api/issues/{row.id}"}
            for row, slug in session.execute(query).all()
        ]}


def get_issue(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    return _issue_json(state, request.path_params["issue_id"])


def get_item(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    issue_id, item_id = request.path_params["issue_id"], request.path_params["item_id"]
    data = _issue_json(state, issue_id)
    story = next((s for s in data["items"] if s["id"] == item_id), None)
    if story is None:
        raise ApiError(404, f"issue {issue_id} has no story {item_id}")
    with session_scope(state.engine) as session:
        story["quote_candidates"] = edit.quote_candidates(session.get_one(IssueItem, item_id))
    return story


def _apply(state: WebState, issue_id: int, changes: list[Callable[[Any], edit.Edit]]) -> dict[str, Any]:
    def all_of(session: Any) -> None:
        for change in changes:  # one transaction: a request is applied whole or not at all
            change(session)

    try:
        edit_issue(state, issue_id, all_of)
    except NoSuchIssue as exc:
        raise ApiError(404, str(exc)) from None
    except NoNewsletter as exc:
        raise ApiError(409, str(exc)) from None
    return _issue_json(state, issue_id)


def _field(body: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    try:
        return json_of(kind)(body[name])
    except BadValue as exc:
        raise ApiError(400, f"{name}: {exc}") from None


def _patch(on: Literal["issue", "story"]) -> Handler:
    """PATCH of an issue or a story: each field of the body is one edit of the table (web/edits.py)."""
    fields = json_fields(on)
    hint = f"(only '{fields[0]}' can be set here)" if len(fields) == 1 else f"(use {', '.join(fields)})"

    def handler(state: WebState, request: Request, body: dict, _editor: str) -> dict[str, Any]:
        issue_id, item_id = request.path_params["issue_id"], request.path_params.get("item_id")
        unknown = set(body) - set(fields)
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} {hint}")
        changes = []
        for name in fields:
            if name in body:
                from_json = EDITS[name].from_json
                assert from_json is not None  # json_fields lists only edits the API can make
                try:
                    value = from_json(body[name])
                except BadValue as exc:
                    raise ApiError(400, f"{name}: {exc}") from None
                changes.append(change_of(name, issue_id, item_id, value))
        return _apply(state, issue_id, changes)

    handler.__name__ = f"patch_{on}"
    return handler


patch_issue = _patch("issue")
patch_item = _patch("story")


def put_order(state: WebState, request: Request, body: dict, _editor: str) -> dict[str, Any]:
    issue_id = request.path_params["issue_id"]
    items = body.get("items")
    if not isinstance(items, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ApiError(400, "items: expected the list of story ids in their new order")
    return _apply(state, issue_id, [lambda s: edit.reorder(s, issue_id, items)])


def _status(change: Callable[[Any, int, str], object]) -> Handler:
    def handler(state: WebState, request: Request, _body: Any, editor: str) -> dict[str, Any]:
        issue_id = request.path_params["issue_id"]
        with session_scope(state.engine) as session:
            if session.get(IssueRow, issue_id) is None:
                raise ApiError(404, f"no issue {issue_id}")
            change(session, issue_id, editor)
        return _issue_json(state, issue_id)

    return handler


approve = _status(lambda s, i, editor: approvals.approve(s, i, editor))
approve.__name__ = "approve"
hold = _status(lambda s, i, _editor: approvals.hold(s, i))
hold.__name__ = "hold"
reopen = _status(lambda s, i, _editor: approvals.reopen(s, i))
reopen.__name__ = "reopen"


def list_newsletters(state: WebState, _request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    return {"newsletters": [{"slug": slug, "name": nl.name, "description": nl.description}
                            for slug, nl in sorted(state.newsletters().items())]}


def _newsletter(state: WebState, session: Any, slug: str) -> NewsletterRow:
    nl = state.newsletter(slug)
    if nl is None:
        raise ApiError(404, f"no newsletter '{slug}' in {state.settings.schedules_dir}/")
    return ensure_newsletter(session, nl.slug, nl.name)


def list_subscribers(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    with session_scope(state.engine) as session:
        row = _newsletter(state, session, request.path_params["slug"])
        rows = list_subscriptions(session, row, request.query_params.get("status") or None)
    return {"subscribers": [{"email": email, "name": name, "status": status,
                             "since": created.isoformat(timespec="seconds") + "Z"}
                            for email, name, status, created in rows]}


def add_subscribers(state: WebState, request: Request, body: dict, _editor: str) -> dict[str, Any]:
    slug = request.path_params["slug"]
    unknown = set(body) - {"email", "name", "double_opt_in"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} (use email, name, double_opt_in)")
    if "email" not in body:
        raise ApiError(400, "email: required")
    email = _field(body, "email", str)
    name = _field(body, "name", (str, type(None))) if "name" in body else None
    opt_in = _field(body, "double_opt_in", bool) if "double_opt_in" in body else False
    nl = state.newsletter(slug)
    mailer = state.make_mailer() if opt_in else None
    result: OptInResult | AddResult
    try:
        with session_scope(state.engine) as session:
            row = _newsletter(state, session, slug)
            try:
                if mailer is not None and nl is not None:  # double opt-in (_newsletter found nl)
                    result = request_opt_in(session, row, nl, email, mailer, base_url=state.settings.base_url,
                                            secret=state.secret, name=name, origin="api")
                else:
                    result = add_subscriber(session, row, email, name=name, origin="api")
            except InvalidAddress as exc:
                # 422, not 400: a string in the right place, but not an address mail can reach (x@y.test).
                raise ApiError(422, f"email: {exc}") from None
            status = session.scalar(select(Subscription.status).where(
                Subscription.newsletter_id == row.id, Subscription.subscriber_id == result.subscriber_id))
    finally:
        if mailer is not None:
            mailer.close()
    return {"email": result.email, "result": result.status, "status": status}


def _subscription(state: WebState, session: Any, request: Request) -> tuple[Subscription, Any]:
    row = _newsletter(state, session, request.path_params["slug"])
    try:
        address = normalize_email(request.path_params["email"])
    except InvalidAddress:
        address = ""
    sub = preferences.subscription_of(session, row.id, address) if address else None
    if sub is None:
        raise ApiError(404, f"{request.path_params['email']} has no subscription to {row.slug}")
    return sub, state.newsletter(row.slug)


def _preferences_json(sub: Subscription, email: str) -> dict[str, Any]:
    return {"email": email, "status": sub.status, **preferences.of(sub).as_dict()}


def get_preferences(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    with session_scope(state.engine) as session:
        sub, _nl = _subscription(state, session, request)
        return _preferences_json(sub, sub.subscriber.email)


def patch_preferences(state: WebState, request: Request, body: dict, _editor: str) -> dict[str, Any]:
    unknown = set(body) - set(preferences.FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} (use {', '.join(preferences.FIELDS)})")
    kinds: dict[str, type | tuple[type, ...]] = {"sections_off": list, "frequency": (str, type(None)),
                                                 "timezone": (str, type(None)), "format": str,
                                                 "pause_weeks": (int, float)}
    values = {name: _field(body, name, kinds[name]) for name in body}
    if isinstance(values.get("pause_weeks"), float):  # JSON Schema's integer: 38.0 is one, 38.5 is not
        if not values["pause_weeks"].is_integer():
            raise ApiError(400, "pause_weeks: a whole number of weeks")
        values["pause_weeks"] = int(values["pause_weeks"])
    if "sections_off" in values and not all(isinstance(s, str) for s in values["sections_off"]):
        raise ApiError(400, "sections_off: a list of section names")
    if "pause_weeks" in values and isinstance(values["pause_weeks"], bool):
        raise ApiError(400, "pause_weeks: a number of weeks")
    with session_scope(state.engine) as session:
        sub, nl = _subscription(state, session, request)
        try:
            preferences.apply(session, sub, nl, values, origin="api")
        except preferences.PreferenceError as exc:
            raise ApiError(422, str(exc)) from None
        return _preferences_json(sub, sub.subscriber.email)


def get_trend(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    from newsletter.report import guard
    from newsletter.report.figures import trend

    slug = request.path_params["slug"]
    with session_scope(state.engine) as session:
        _newsletter(state, session, slug)
        nl = state.newsletter(slug)
        if nl is not None:
            guard.check(session, nl)
        return trend(session, slug).to_json()


def get_issue_report(state: WebState, request: Request, _body: Any, _editor: str) -> dict[str, Any]:
    from newsletter.report.figures import issue_report

    issue_id = request.path_params["issue_id"]
    with session_scope(state.engine) as session:
        if session.get(IssueRow, issue_id) is None:
            raise ApiError(404, f"no issue {issue_id}")
        return issue_report(session, issue_id).to_json()


async def docs(request: Request) -> Response:
    return page(request, "api_docs.html", {"base_url": web_state(request).settings.base_url})


async def openapi_json(request: Request) -> Response:
    return JSONResponse(spec_document(web_state(request).settings.base_url))


_ISSUE_ID = "/api/issues/{issue_id:int}"
_ITEM = _ISSUE_ID + "/items/{item_id:int}"
_SUBSCRIBERS = "/api/newsletters/{slug}/subscribers"
_PREFERENCES = _SUBSCRIBERS + "/{email}/preferences"

# The one list of the API's operations: routes() serves them and /api/openapi.json describes them.
OPERATIONS: list[Operation] = [
    Operation("GET", "/api/", docs, "This page of documentation, in HTML", None, auth=False),
    Operation("GET", "/api/openapi.json", openapi_json, "This API as an OpenAPI 3.1 document", spec.Document,
              auth=False),
    Operation("GET", "/api/newsletters", list_newsletters, "The newsletters", spec.NewsletterList),
    Operation("GET", "/api/issues", list_issues, "Issues, newest first", spec.IssueList,
              query=(Query("newsletter", "Only this newsletter's (its slug)"),
                     Query("status", "Only issues with this status (draft, approved, held, sending, sent)"))),
    Operation("GET", _ISSUE_ID, get_issue, "One issue in the JSON issue format", spec.Issue),
    Operation("PATCH", _ISSUE_ID, patch_issue, "Change the issue (its intro); returns the issue", spec.Issue,
              body=spec.IssuePatch, errors=(409, 422, 500)),
    Operation("GET", _ITEM, get_item, "One story, with its quote candidates", spec.StoryDetail),
    Operation("PATCH", _ITEM, patch_item, "Change a story; returns the issue", spec.Issue,
              body=spec.StoryPatch, errors=(409, 422, 500)),
    Operation("PUT", _ISSUE_ID + "/order", put_order, "Reorder the stories (every story once); returns the issue",
              spec.Issue, body=spec.Order, errors=(409, 422, 500)),
    Operation("POST", _ISSUE_ID + "/approve", approve, "Approve this version (a later change needs approving again)",
              spec.Issue, errors=(409,)),
    Operation("POST", _ISSUE_ID + "/hold", hold, "Hold: not sent until approved", spec.Issue, errors=(409,)),
    Operation("POST", _ISSUE_ID + "/reopen", reopen, "Back to draft", spec.Issue, errors=(409,)),
    Operation("GET", _SUBSCRIBERS, list_subscribers, "The newsletter's subscribers", spec.SubscriberList,
              query=(Query("status", "Only subscriptions with this status (active, pending, ...)"),)),
    Operation("POST", _SUBSCRIBERS, add_subscribers, "Add a subscriber (active at once, or pending with "
              "double_opt_in: a confirmation email goes out)", spec.Added, status=201, body=spec.NewSubscriber,
              errors=(422,)),
    # Comments (web/conversation.py holds the handlers, beside the pages they moderate).
    Operation("GET", _PREFERENCES, get_preferences, "A subscriber's choices: sections off, cadence, time zone, "
              "format, pause", spec.Preferences, errors=(404,)),
    Operation("PATCH", _PREFERENCES, patch_preferences, "Change a subscriber's choices (from their next issue); "
              "returns them", spec.Preferences, body=spec.PreferencesPatch, errors=(404, 422)),
    Operation("POST", "/api/readers/forget", conversation.api_forget, "A reader's deletion request: removes the "
              "reader and every comment they wrote", spec.Forgotten, body=spec.ForgetReader, errors=(422,)),
    Operation("GET", "/api/newsletters/{slug}/comments", conversation.api_comments, "The newest 200 comments of "
              "the newsletter (deleted ones left out)", spec.CommentList,
              query=(Query("status", "Only comments with this status (visible, pending, hidden)"),)),
    Operation("POST", "/api/comments/{comment_id:int}/{action}", conversation.api_moderate,
              "Moderate a comment: action is approve, hide, show or delete", spec.Moderated),
    # Readers' "this summary is wrong / misleading" (web/feedback.py).
    Operation("GET", "/api/newsletters/{slug}/feedback", feedback.api_feedback, "Readers' feedback on the "
              "summaries of the newsletter's sent stories, newest first", spec.FeedbackList,
              query=(Query("status", "Only feedback with this status (open, resolved, dismissed)"),)),
    # What happened after the sends (newsletter.report.figures: the same figures as the report page and CLI).
    Operation("GET", "/api/newsletters/{slug}/report", get_trend, "Every sent issue's audience, deliveries, "
              "unique clickers, click rate and unsubscribes, and the guard's hold if any", spec.Trend),
    Operation("GET", _ISSUE_ID + "/report", get_issue_report,
              "One sent issue's report: deliveries, bounces, complaints, unsubscribes, clicks per story, the "
              "first 7 days", spec.IssueReport),
]


def spec_document(base_url: str) -> dict[str, Any]:
    return spec.document(OPERATIONS, base_url=base_url, version=_version())


def _version() -> str:
    try:
        return metadata.version("newsletter")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0"


def _serve(op: Operation) -> Callable[[Request], Any]:
    return endpoint(op.handler, op.status, body_required=op.body is not None) if op.auth else op.handler


def routes() -> list:
    """One route per path, whatever its methods: a wrong method then answers 405 with an Allow header naming all
    of the path's methods (with a route per method, Starlette names only the first route's)."""
    by_path: dict[str, dict[str, Callable[[Request], Any]]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = _serve(op)
    return [Route(path, _dispatch(methods), methods=list(methods)) for path, methods in by_path.items()]


def _dispatch(methods: dict[str, Callable[[Request], Any]]) -> Callable[[Request], Any]:
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def run(request: Request) -> Response:
        # HEAD is answered by GET's handler (Starlette adds HEAD wherever GET is allowed).
        return await methods["GET" if request.method == "HEAD" else request.method](request)

    return run
