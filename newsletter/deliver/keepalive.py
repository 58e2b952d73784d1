"""HTTP/1.1 connections to one API host, kept alive per thread, that say whether a failed request went out.

Owns the difference the send engine's exactly-once rests on (newsletter.deliver.engine): a request that could
not be written whole was certainly not taken (`NotSent`: the batch is retried), while one written whole whose
answer never came may have been (http.client's HTTPException, ConnectionError or TimeoutError: the caller
says the outcome is unknown). A kept-alive connection the server has closed while idle shows as readable
before the request is written, and is replaced then; one closed in the instant between that check and the
request can only be told apart as an unknown outcome, which the engine settles.

http.client rather than a pooling library: the standard library's client is what the official SendGrid client
already runs on (through urllib); all this adds is one connection per thread and the check above.
"""

from __future__ import annotations

import http.client
import select
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any


class NotSent(ConnectionError):
    """The request was not written whole: the server cannot have acted on it."""


class NoAnswer(ConnectionError):
    """The request was written whole and no whole answer came back: the server may have acted on it."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Message
    body: bytes


def proxied(url: str) -> bool:
    """Whether the environment sends requests to `url` through a proxy (HTTPS_PROXY, NO_PROXY...)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname or "")


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection is readable only when the server closed it (or wrote out of turn)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Connections:
    """One kept-alive connection per thread to the host of `url` (http or https, TLS verified as urllib does)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and not _dropped(connection):  # (so it has a socket)
            connection.timeout = timeout
            connection.sock.settimeout(timeout)
            return connection
        if connection is not None:
            self._discard(connection)
        connection = (http.client.HTTPSConnection(self._host, self._port, timeout=timeout) if self._https
                      else http.client.HTTPConnection(self._host, self._port, timeout=timeout))
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
        return connection

    def _discard(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        with self._lock:
            self._open.discard(connection)
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def post(self, path: str, body: bytes, headers: dict[str, Any], timeout: float) -> Answer:
        """POST `body`; the answer whatever its status. Raises NotSent when the request was not written whole,
        http.client.HTTPException, ConnectionError (NoAnswer included) or TimeoutError when it was and no
        whole answer came."""
        connection = self._connection(timeout)
        try:
            connection.request("POST", path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._discard(connection)
            raise NotSent(f"{exc!r}") from None
        try:
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._discard(connection)
            if isinstance(exc, http.client.HTTPException | ConnectionError | TimeoutError):
                raise
            raise NoAnswer(f"{exc!r}") from None  # e.g. a TLS error while reading the answer
        if response.will_close:
            self._discard(connection)
        return Answer(response.status, response.reason, response.headers, data)

    def close(self) -> None:
        with self._lock:
            open_now, self._open = self._open, set()
        for connection in open_now:
            connection.close()
