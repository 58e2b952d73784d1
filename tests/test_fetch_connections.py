"""The fetcher keeps its connections: a run of 304s, redirects and error pages does not reconnect per request.

A site polled for 30 feeds should see at most `per_host` connections, as a polite client would open, not one a
request (which on https is also a TLS handshake each time).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsletter.collect.fetch import FetchLimits, fetch, fetch_all, make_client

LIMITS = FetchLimits(timeout=10, per_host=3)


class CountingServer(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True
    connections = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingServer

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:  # once per TCP connection
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/moved/"):
            self._answer(301, b"<p>moved</p>", ("Location", self.path.replace("/moved/", "/feed/")))
        elif self.path.startswith("/gone/"):
            self._answer(404, b"<html>" + b"not here " * 100 + b"</html>")
        elif self.headers.get("If-None-Match") == '"v1"':
            self._answer(304, b"")
            if self.path.startswith("/dropped/"):
                # Closed without saying so (no "Connection: close"), as a server's idle timeout would: the client
                # finds the pooled connection dead and connects again.
                self.close_connection = True
        else:
            self._answer(200, b"<rss version='2.0'><channel><title>t</title></channel></rss>")

    def _answer(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingServer]:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.1")
    httpd = CountingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_304s_redirects_and_error_pages_reuse_the_hosts_connections(server: CountingServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    requests: list[tuple[str, str | None, str | None]] = [(f"{base}/feed/{n}.xml", '"v1"', None) for n in range(30)]
    requests += [(f"{base}/moved/{n}.xml", None, None) for n in range(10)]
    requests += [(f"{base}/gone/{n}.xml", None, None) for n in range(10)]

    results = asyncio.run(fetch_all(requests, LIMITS))

    assert all(r.ok and r.not_modified for r in results[:30])
    assert all(r.ok and r.status == 200 and r.redirects == [(301, r.url.replace("/moved/", "/feed/"))]
               for r in results[30:40])
    assert all(r.error == "HTTP 404" for r in results[40:])
    assert server.connections <= LIMITS.per_host, server.connections


def test_connections_the_server_closed_while_idle_are_replaced(server: CountingServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    requests: list[tuple[str, str | None, str | None]] = [(f"{base}/dropped/{n}.xml", '"v1"', None) for n in range(20)]
    requests += [(f"{base}/feed/{n}.xml", '"v1"', None) for n in range(20)]

    started = time.monotonic()
    results = asyncio.run(fetch_all(requests, LIMITS))

    assert all(r.ok and r.not_modified for r in results), [r.error for r in results if not r.ok]
    assert time.monotonic() - started < LIMITS.timeout / 2  # no request waited for its timeout
    assert server.connections > LIMITS.per_host  # each dropped connection was replaced by a new one


def test_a_pooled_connection_closed_while_the_client_waits_is_let_go(server: CountingServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def run() -> list[bool]:
        async with make_client(LIMITS) as client:
            first = await fetch(client, f"{base}/dropped/1.xml", LIMITS, etag='"v1"')
            # Idle meanwhile: the server's close reaches the socket while no request wants it (it is let go then,
            # and the loop does not keep waking for it), and the next request connects again.
            started = time.process_time()
            await asyncio.sleep(0.3)
            idle_cpu = time.process_time() - started
            second = await fetch(client, f"{base}/feed/2.xml", LIMITS, etag='"v1"')
            return [first.not_modified, second.not_modified, idle_cpu < 0.1]

    assert asyncio.run(run()) == [True, True, True]
    assert server.connections == 2
