"""Limits on what a request may carry: bodies bounded before they are read, numbers in paths bounded too.

`BodyLimit` wraps the app: a declared `Content-Length` above the limit is answered 413 before a byte of the
body is read, and a body without one (chunked) is counted as it arrives and cut off at the limit. Routes that
need less (the public forms, the webhook, the API) read with `read_body`, which applies the same two checks
with their own, smaller limit. Nothing ever holds more than the limit in memory, whoever sends the request.

`PathNumbers` answers 404 for a path with a number larger than any id the database can hold in that place
(issue ids and numbers are 32-bit columns), so `/api/issues/99999999999999999999999` is "no such issue" rather
than an overflow inside the database driver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 5 * 1024 * 1024  # the largest body a route takes (a batch of SendGrid events)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than this server accepts ({_size(limit)}).")
        self.limit = limit


def _size(limit: int) -> str:
    return f"{limit // 1024 // 1024} MB" if limit >= 1024 * 1024 else f"{max(1, limit // 1024)} KB"


def declared_length(headers: Mapping[str, str], limit: int) -> int | None:
    """The declared Content-Length, or None when there is none; BodyTooLarge when it exceeds `limit`."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit():
        raise HTTPException(400, "The Content-Length header is not a number.")
    # More digits than any body we take is too large without turning it into a number (int() refuses
    # strings over 4300 digits, which would be a 500).
    if len(raw) > len(str(limit)) or int(raw) > limit:
        raise BodyTooLarge(limit)
    return int(raw)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read in chunks with a running count: BodyTooLarge as soon as it passes `limit`."""
    declared_length(request.headers, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """The app-wide cap (NEWSLETTER_MAX_BODY): no route sees a body larger than `limit`."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only Content-Length is read here: no dict of every header per request. Names are lowercase (ASGI);
        # of a repeated one the last counts, as in the dict this was before.
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
        headers = {"content-length": length.decode("latin-1")} if length is not None else {}
        try:
            declared_length(headers, self.limit)
        except HTTPException as exc:
            # Answered before the body is read; the server closes the connection on the unread rest.
            await self._refuse(scope, exc)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)  # the app's handler turns this into the 413 page
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 413:
                    # The rest of the body is still on its way: closing is the only way not to read it.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised where no handler of the app could answer it
            if started:
                raise
            await self._refuse(scope, exc)(scope, receive, send)

    @staticmethod
    def _refuse(scope: Scope, exc: HTTPException) -> Response:
        headers = {"Connection": "close"}
        if scope.get("path", "").startswith("/api/"):
            return JSONResponse({"error": exc.detail}, exc.status_code, headers=headers)
        return PlainTextResponse(exc.detail, exc.status_code, headers=headers)


MAX_PATH_NUMBER = 2**31 - 1  # the narrowest id column (issue ids and numbers): 32-bit signed
_TEN_DIGITS = re.compile(r"[0-9]{10}")


class PathNumbers:
    """404 for any path segment made of digits that is beyond MAX_PATH_NUMBER: no such row can exist."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only a run of 10 digits or more can be past MAX_PATH_NUMBER: most paths need no splitting.
        if (scope["type"] == "http" and _TEN_DIGITS.search(scope.get("path", ""))
                and any(_too_big(part) for part in scope["path"].split("/"))):
            detail = "Not Found"
            response: Response = (JSONResponse({"error": detail}, 404) if scope["path"].startswith("/api/")
                                  else PlainTextResponse(detail, 404))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _too_big(part: str) -> bool:
    return part.isascii() and part.isdigit() and (len(part) > 10 or int(part) > MAX_PATH_NUMBER)
