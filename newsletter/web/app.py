"""The one ASGI app `newsletter serve` runs: editors' pages, the public archive, the API, and the public routes
of newsletter.web.public (subscribe, confirm, one-click unsubscribe, the SendGrid webhook).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.config import Settings
from newsletter.deliver.mailer import Mailer
from newsletter.store.db import get_engine
from newsletter.web import api, archive, conversation, editor, feedback, readers, reports, signin
from newsletter.web.limits import BodyLimit, PathNumbers
from newsletter.web.pages import page
from newsletter.web.public import public_routes
from newsletter.web.state import STATIC, TEMPLATES, WebState

SESSION_COOKIE = "newsletter_session"
# Pages run only our own script; the email previews and archive issues set their own, stricter policy.
DEFAULT_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self'; "
               "frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app, self.https = app, https
        # Made once: every response carries them (unless it set its own, e.g. the edition's stricter CSP).
        wanted = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                  (b"x-frame-options", b"SAMEORIGIN"), (b"content-security-policy", DEFAULT_CSP.encode())]
        if https:
            wanted.append((b"strict-transport-security", b"max-age=31536000"))
        self.wanted = tuple(wanted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.wanted if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "Something went wrong."
    headers = getattr(exc, "headers", None)  # e.g. a 405's Allow, which HTTP requires
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": detail}, status, headers=headers)
    if "session" not in request.scope:  # an unexpected error, caught outside the session middleware
        return PlainTextResponse("Something went wrong; the server log says what.", status, headers=headers)
    return page(request, "error.html", {"status": status, "detail": detail}, status, headers=headers)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    make_mailer: Callable[[], Mailer] | None = None,
) -> Starlette:
    """The app for these settings. `make_mailer` defaults to the configured mailer (NEWSLETTER_MAILER)."""
    from newsletter.deliver.factory import make_mailer as configured_mailer

    engine = engine or get_engine(settings.database_url)
    state = WebState(
        settings=settings,
        engine=engine,
        templates=Jinja2Templates(directory=str(TEMPLATES)),
        make_mailer=make_mailer or (lambda: configured_mailer(settings)),
    )
    https = settings.base_url.startswith("https://")
    # Starlette tries routes in order and no two groups share a path: the pages readers load most (links in
    # emails, the archive) come first, so their requests skip matching against the editor's and the API's.
    routes: list[BaseRoute] = [
        *archive.edition_routes(),
        *public_routes(settings, engine, subscribe_limiter=state.subscribe_per_client),
        *archive.routes(),
        Route("/", lambda request: RedirectResponse("/archive/", status_code=303), methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        *signin.routes(),
        *readers.routes(),
        *conversation.routes(),  # before the editor's: /editor/comments/ is its own mount
        *feedback.routes(),  # the same for /editor/feedback/
        *reports.routes(),  # /editor/reports/ likewise
        *editor.routes(),
        *api.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders, https=https),
            Middleware(BodyLimit, limit=settings.max_body),
            Middleware(PathNumbers),
            Middleware(SessionMiddleware, secret_key=state.derived_key("session cookie"),
                       session_cookie=SESSION_COOKIE, same_site="lax", https_only=https,
                       max_age=7 * 24 * 3600),
        ],
        exception_handlers={HTTPException: _error, 500: _error},
    )
    app.state.web = state
    return app
