"""A real loopback HTTP server for the editorial tests: article pages, and an OpenAI-style chat endpoint.

Pages can stall (answer after `delay` seconds, or never until the server stops); the chat endpoint can answer,
fail, stall or return garbage, and records what it was asked.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    delay: float = 0.0  # seconds; float("inf") stalls until the server stops
    hits: int = 0


@dataclass
class ChatModel:
    mode: str = "ok"  # ok, slow, error, garbage
    reply: str = "A short model summary of the story. It has two sentences."
    delay: float = 0.0
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@dataclass
class EditorialServer:
    pages: dict[str, Page] = field(default_factory=dict)
    chat: ChatModel = field(default_factory=ChatModel)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> EditorialServer:
        server_self = self
        self._stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _wait(self, seconds: float) -> bool:
                """Sleep, but wake when the server stops; False if it stopped."""
                timeout = None if seconds == float("inf") else seconds
                return not server_self._stopping.wait(timeout)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                page = server_self.pages.get(self.path)
                if page is None:
                    self._send(404, b"not found", "text/plain")
                    return
                page.hits += 1
                if page.delay and not self._wait(page.delay):
                    return
                self._send(page.status, page.body, page.content_type)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                chat = server_self.chat
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b"{}", "application/json")
                    return
                chat.requests.append(json.loads(raw or b"{}"))
                chat.headers.append(dict(self.headers))
                if chat.mode == "slow" and not self._wait(chat.delay or float("inf")):
                    return
                if chat.mode == "error":
                    self._send(500, b'{"error": {"message": "model crashed"}}', "application/json")
                    return
                if chat.mode == "garbage":
                    self._send(200, b'{"hello": "world"}', "application/json")
                    return
                body = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": chat.requests[-1].get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": chat.reply},
                        }
                    ],
                }
                self._send(200, json.dumps(body).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
