"""A real HTTP server on loopback for feed tests: status, delay, ETag/Last-Modified, redirects, big bodies."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml"
    delay: float = 0.0  # seconds before answering
    etag: str | None = None
    last_modified: str | None = None
    location: str | None = None  # sent as Location (with a 3xx status: a redirect)
    hits: int = 0
    conditional_hits: int = 0  # requests that carried If-None-Match / If-Modified-Since


@dataclass
class FeedServer:
    host: str = "127.0.0.1"
    routes: dict[str, Route] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> FeedServer:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                route = routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route.hits += 1
                inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
                if inm or ims:
                    route.conditional_hits += 1
                if route.delay:
                    time.sleep(route.delay)
                if route.status == 200 and ((route.etag and inm == route.etag) or
                                            (route.last_modified and ims == route.last_modified)):
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)
                if route.location:
                    self.send_header("Location", route.location)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(route.body)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
