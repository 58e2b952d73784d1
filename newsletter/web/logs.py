"""Access logs without secrets: the signed tokens in unsubscribe and confirmation links are cut out.

Anyone holding such a link can act for its subscriber, and access logs are read and kept by more people and
for longer than the database.

`newsletter serve` writes its access log with `AccessLog`, a wrapper around the whole app, rather than with
uvicorn's (turned off there): the same line on standard output, one per response, written and flushed as the
response starts, without a LogRecord, a copy of it and a formatter per request. Under load uvicorn's logging
was over a third of a small page's server CPU (py-spy on the floor app of benchmarks/web.py). The wrapper sits
outside Starlette's error middleware, so the 500 it sends for an unexpected error is logged too.
`NEWSLETTER_ACCESS_LOG=0` (or `newsletter serve --no-access-log`) turns it off.

`RedactTokens` and `uvicorn_log_config` keep the same redaction on anything that still goes through uvicorn's
"uvicorn.access" logger.
"""

from __future__ import annotations

import copy
import logging
import re
import sys
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The token after /u/ or /confirm/. Lookbehinds, so the replacement is a plain string: a template with a group
# (`\1[token]`) is expanded per match, which cost more than the match (every unsubscribe GET is logged).
_TOKEN_PATH = re.compile(r"(?<=/u/)[^/?#\s\"]+|(?<=/confirm/)[^/?#\s\"]+")
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def redact(text: str) -> str:
    # Most lines carry no token link: a substring test is a tenth of the regex (every request is logged).
    if "/u/" not in text and "/confirm/" not in text:
        return text
    return _TOKEN_PATH.sub("[token]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record carries the path in its args (client, method, path, version, status).
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup with the token filter on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config


def access_line(scope: Scope, status: int) -> str:
    """The line uvicorn's access log writes without colours (`INFO:     127.0.0.1:5000 - "GET /a HTTP/1.1"
    200 OK`), its path as uvicorn takes it (the raw path, `"` quoted), tokens redacted."""
    client = scope.get("client")
    who = f"{client[0]}:{int(client[1])}" if client else ""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else quote(scope["path"])
    query = scope.get("query_string")
    if query:
        path = f"{path}?{query.decode('ascii', 'replace')}"
    path = redact(path.replace('"', "%22"))
    return (f'INFO:     {who} - "{scope["method"]} {path} '
            f'HTTP/{scope["http_version"]}" {status} {_PHRASES.get(status, "")}\n')


class AccessLog:
    """One access line per HTTP response, on `stream` (standard output when None, looked up per line)."""

    def __init__(self, app: ASGIApp, stream: IO[str] | None = None) -> None:
        self.app, self.stream = app, stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.write(access_line(scope, message["status"]))
            await send(message)

        await self.app(scope, receive, logged_send)

    def write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        try:
            stream.write(line)
            stream.flush()  # as logging's StreamHandler does: a line is on its way when its response is
        except (OSError, ValueError):  # a closed or broken standard output must not fail the request
            pass
