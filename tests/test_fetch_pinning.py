"""The fetcher's own bounds on libcurl: no socket to an address the guard did not hand out, and a run over many
hosts does not keep every host's connections open.

The guard's behaviour seen from outside (refused addresses, redirects, rebinding) is tests/test_security_fetch.py;
these cover what stands behind it should libcurl change how it connects.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsletter.collect import fetch as fetcher
from newsletter.collect.fetch import FetchLimits, FetchResult, fetch_all


class Server(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True

    def __init__(self, host: str) -> None:
        self.open = 0
        self.hits = 0
        self.lock = threading.Lock()
        super().__init__((host, 0), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:  # once per TCP connection
        super().setup()
        with self.server.lock:
            self.server.open += 1

    def finish(self) -> None:
        super().finish()
        with self.server.lock:
            self.server.open -= 1

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.hits += 1
        body = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start(host: str) -> Server:
    server = Server(host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started = [start(f"127.0.0.{10 + n}") for n in range(40)]
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_socket_to_an_unchecked_address_is_refused_even_without_the_literal_check(
    monkeypatch: pytest.MonkeyPatch, servers: list[Server]
) -> None:
    """libcurl connects to a literal address without a lookup; were the fetcher's own check of a hop's host
    ever skipped, the socket callback still refuses: only addresses the guard returned are connected."""
    monkeypatch.delenv("NEWSLETTER_FETCH_ALLOW", raising=False)

    async def unchecked(self: object, host: str, port: int, deadline: float) -> None:
        return None

    monkeypatch.setattr(fetcher._Client, "check", unchecked)
    server = servers[0]
    url = f"http://127.0.0.10:{server.server_address[1]}/feed"
    [result] = asyncio.run(fetch_all([(url, None, None)], FetchLimits(timeout=5)))
    assert not result.ok and (result.error or "").startswith("refused: 127.0.0.10 was not checked"), result.error
    assert server.hits == 0 and server.open == 0


def test_a_run_over_many_hosts_keeps_a_bounded_number_of_idle_connections(
    monkeypatch: pytest.MonkeyPatch, servers: list[Server]
) -> None:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.0/8")
    urls = [f"http://127.0.0.{10 + n}:{s.server_address[1]}/feed" for n, s in enumerate(servers)]
    seen: list[int] = []

    async def on_done(result: FetchResult) -> None:
        if len(seen) < len(urls) - 1:
            seen.append(0)
            return
        # The last host answered: every host's connection is idle now. Wait (generously: a loaded machine)
        # for the closed ones to be noticed by their servers, then count what is still open.
        deadline = time.monotonic() + 10
        while sum(s.open for s in servers) > fetcher.IDLE_HOSTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        seen.append(sum(s.open for s in servers))

    results = asyncio.run(fetch_all([(u, None, None) for u in urls], FetchLimits(timeout=10, concurrency=1,
                                                                                  per_host=1), on_done=on_done))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(s.hits == 1 for s in servers)
    assert seen[-1] <= fetcher.IDLE_HOSTS, seen[-1]


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch, servers: list[Server]) -> None:
    """Through a proxy the guard would only see the proxy's address: requests go straight to the checked one."""
    site, proxy = servers[0], servers[1]
    proxy_url = f"http://127.0.0.11:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.10")
    [result] = asyncio.run(fetch_all([(f"http://127.0.0.10:{site.server_address[1]}/feed", None, None)],
                                     FetchLimits(timeout=5)))
    assert result.ok and site.hits == 1 and proxy.hits == 0, result.error
