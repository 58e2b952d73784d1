"""Signing in and out, and the gate in front of the editors' pages.

A session is a signed cookie holding the editor's id and when they signed in; RequireEditor checks both (and
that the editor still exists) on every request under /editor/. Wrong passwords count per account (the lock
in newsletter.web.auth) and per client address (WebState.limiter).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from newsletter.store.db import session_scope
from newsletter.store.models import Editor, utcnow
from newsletter.web.auth import csrf_token, sign_in
from newsletter.web.pages import checked_form, flash, page, redirect
from newsletter.web.state import web_state

log = logging.getLogger(__name__)

SESSION_HOURS = 12


def _safe_next(value: str | None) -> str:
    # Only our own editor pages: anything else would make the sign-in page an open redirect.
    if value and value.startswith("/editor/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/editor/"


async def signin_page(request: Request) -> Response:
    if request.session.get("editor_id"):
        return redirect(_safe_next(request.query_params.get("next")))
    return page(request, "signin.html", {"next": _safe_next(request.query_params.get("next"))})


async def signin(request: Request) -> Response:
    form = await checked_form(request)
    state = web_state(request)
    client = request.client.host if request.client else "unknown"
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    context = {"next": _safe_next(str(form.get("next", ""))), "email": email}
    wait = state.limiter.blocked_for(client)
    if wait:
        context["error"] = f"Too many failed sign-ins from your address. Try again in {_minutes(wait)}."
        return page(request, "signin.html", context, 429, {"Retry-After": str(wait)})

    def check() -> tuple[int | None, int, str | None]:
        with session_scope(state.engine) as session:
            result = sign_in(session, email, password)
            editor = session.get(Editor, result.editor_id) if result.editor_id else None
            return result.editor_id, result.locked_for, editor.email if editor else None

    editor_id, locked_for, address = await run_in_threadpool(check)
    if locked_for:
        state.limiter.failed(client)
        log.warning("sign-in refused: account locked (from %s)", client)
        context["error"] = (f"Too many wrong passwords: sign-in for this account is locked for {_minutes(locked_for)}."
                            " An administrator can reset it with `newsletter editors add`.")
        return page(request, "signin.html", context, 429, {"Retry-After": str(locked_for)})
    if editor_id is None:
        state.limiter.failed(client)
        log.info("sign-in failed (from %s)", client)
        context["error"] = "Wrong email address or password."
        return page(request, "signin.html", context, 401)
    request.session.clear()  # a fresh session (and CSRF token) for the signed-in editor
    request.session.update(editor_id=editor_id, editor_email=address, signed_in_at=utcnow().isoformat())
    csrf_token(request.session)
    return redirect(context["next"])


def _minutes(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


async def signout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    flash(request, "ok", "You are signed out.")
    return redirect("/signin")


class RequireEditor:
    """Every request under /editor/ needs a signed-in editor who still exists; others go to the sign-in page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not await self._signed_in(request):
            request.session.pop("editor_id", None)
            target = request.url.path
            if request.url.query:
                target += "?" + request.url.query
            response = RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _signed_in(request: Request) -> bool:
        session = request.session
        editor_id = session.get("editor_id")
        if not isinstance(editor_id, int):
            return False
        try:
            started = datetime.fromisoformat(session.get("signed_in_at", ""))
        except (TypeError, ValueError):
            return False
        if utcnow() - started > timedelta(hours=SESSION_HOURS):
            return False
        state = web_state(request)

        def exists() -> bool:
            with session_scope(state.engine) as db:
                return db.get(Editor, editor_id) is not None

        return await run_in_threadpool(exists)


FormHandler = Callable[[Request, FormData], Awaitable[Response]]


def form_action(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint whose form has passed the CSRF check."""

    async def endpoint(request: Request) -> Response:
        return await handler(request, await checked_form(request))

    endpoint.__name__ = handler.__name__
    return endpoint


def routes() -> list:
    return [
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
