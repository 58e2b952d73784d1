"""Server-rendered pages: the template response with the CSRF token and flash messages, and checked forms."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter.web.auth import csrf_ok, csrf_token
from newsletter.web.state import web_state

NO_STORE = {"Cache-Control": "no-store"}


def flash(request: Request, kind: str, message: str) -> None:
    """A message for the next page shown (after the redirect that follows every form)."""
    request.session.setdefault("flash", []).append([kind, message])
    request.session["flash"] = request.session["flash"][-5:]


class _LazyToken:
    """The session's CSRF token, made only when a page shows a form: pages without one set no cookie."""

    def __init__(self, session: dict) -> None:
        self.session = session

    def __str__(self) -> str:
        return csrf_token(self.session)

    __html__ = __str__  # URL-safe characters only: nothing to escape


def page(request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200,
         headers: dict[str, str] | None = None) -> Response:
    ctx = {
        "csrf": _LazyToken(request.session),
        "flashes": request.session.pop("flash", []),
        "editor_email": request.session.get("editor_email"),
        **(context or {}),
    }
    return web_state(request).templates.TemplateResponse(request, name, ctx, status_code=status,
                                                         headers={**NO_STORE, **(headers or {})})


async def checked_form(request: Request) -> FormData:
    """The posted form, or 403 when its CSRF token does not match the session's."""
    form = await request.form()
    token = form.get("csrf")
    if not csrf_ok(request.session, token if isinstance(token, str) else None):
        raise HTTPException(403, "The form has expired or did not come from this site. Reload the page and try again.")
    return form


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
