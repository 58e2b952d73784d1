"""Signing in and out, and the gate in front of the editors' pages.

A session is a signed cookie holding the editor's id, their session generation and when they signed in;
RequireEditor checks all three (and that the editor still exists) on every request under /editor/, so signing
out or a new password (which bump the generation) ends the cookie everywhere. Wrong passwords slow down the next
try per address typed and client (WebState.throttle) and per client (WebState.limiter); every refusal, whatever
its reason, gets the same message and takes as long as a checked password.
"""

from __future__ import annotations

import asyncio
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
from newsletter.web.auth import csrf_token, end_sessions, sign_in, verify_seconds
from newsletter.web.pages import checked_form, flash, page, redirect
from newsletter.web.state import web_state

log = logging.getLogger(__name__)

SESSION_HOURS = 12
# The one answer to every refused sign-in: it must not tell an unknown address from a wrong password or a
# throttled try, so it names all three.
REFUSED = "Wrong email address or password, or too many tries: wait a moment and try again."


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
    key = state.throttle.key(email, client)
    wait = max(state.limiter.blocked_for(client), state.throttle.wait(key))
    if wait:
        # Not checked, but answered after as long as a check takes: the same answer as a wrong password.
        await asyncio.sleep(await run_in_threadpool(verify_seconds))
        log.warning("sign-in refused: too many tries (from %s)", client)
        context["error"] = REFUSED
        return page(request, "signin.html", context, 429, {"Retry-After": str(wait)})

    def check() -> tuple[int | None, int, str | None]:
        with session_scope(state.engine) as session:
            result = sign_in(session, email, password)
            editor = session.get(Editor, result.editor_id) if result.editor_id else None
            return result.editor_id, result.generation, editor.email if editor else None

    editor_id, generation, address = await run_in_threadpool(check)
    if editor_id is None:
        state.limiter.failed(client)
        state.throttle.failed(key)
        log.info("sign-in failed (from %s)", client)
        context["error"] = REFUSED
        return page(request, "signin.html", context, 401)
    state.throttle.succeeded(key)
    request.session.clear()  # a fresh session (and CSRF token) for the signed-in editor
    request.session.update(editor_id=editor_id, editor_email=address, generation=generation,
                           signed_in_at=utcnow().isoformat())
    csrf_token(request.session)
    return redirect(context["next"])


async def signout(request: Request) -> Response:
    await checked_form(request)
    editor_id, generation = request.session.get("editor_id"), request.session.get("generation")
    if isinstance(editor_id, int):
        state = web_state(request)

        def end() -> None:
            # The cookie is only signed, not stored: a copy of it would live on unless its generation dies.
            with session_scope(state.engine) as db:
                editor = db.get(Editor, editor_id)
                if editor is not None and (editor.session_generation or 0) == generation:
                    end_sessions(editor)

        await run_in_threadpool(end)
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
        editor_id, generation = session.get("editor_id"), session.get("generation")
        if not isinstance(editor_id, int) or not isinstance(generation, int):
            return False
        try:
            started = datetime.fromisoformat(session.get("signed_in_at", ""))
        except (TypeError, ValueError):
            return False
        if utcnow() - started > timedelta(hours=SESSION_HOURS):
            return False
        state = web_state(request)

        def current() -> bool:
            with session_scope(state.engine) as db:
                editor = db.get(Editor, editor_id)
                return editor is not None and (editor.session_generation or 0) == generation

        return await run_in_threadpool(current)


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
