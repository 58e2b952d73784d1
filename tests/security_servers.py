"""Real loopback servers for the security tests: a DNS server of the test's own (dnslib), and HTTP servers on
any loopback address (127.0.0.1, 127.0.0.2, ::1) that serve pages or redirect, counting every request.

127.0.0.2 plays "the public internet": a test allows it with NEWSLETTER_FETCH_ALLOW=127.0.0.2/32, and names
under `.public.example` resolve to it through the DNS server; 127.0.0.1 and ::1 play "inside".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


@dataclass
class Page:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None  # a redirect's target


@dataclass
class PageServer:
    host: str = "127.0.0.1"
    port: int = 0
    pages: dict[str, Page] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)  # every path requested, in order

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def start(self) -> PageServer:
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server_self.hits.append(self.path)
                page = server_self.pages.get(self.path, Page(b"not found", 404, "text/plain"))
                self.send_response(page.status)
                self.send_header("Content-Type", page.content_type)
                self.send_header("Content-Length", str(len(page.body)))
                if page.location:
                    self.send_header("Location", page.location)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(page.body)

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Zone(BaseResolver):
    """Answers A queries from `answers`: a name maps to a list of addresses, one per query in turn (the last
    repeats), so a name can answer a public address first and 127.0.0.1 next (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]], queries: list[str]) -> None:
        self.answers, self.queries = answers, queries

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(name)
        turns = self.answers.get(name)
        if turns and request.q.qtype == QTYPE.A:
            asked = self.queries.count(name)
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(turns[min(asked, len(turns)) - 1]), ttl=0))
        elif not turns:
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@dataclass
class LoopbackDNS:
    """A real DNS server (UDP, dnslib) on 127.0.0.1, and a resolver for the fetcher's guard that asks it."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    port: int = 0

    def start(self) -> LoopbackDNS:
        self._server = DNSServer(_Zone(self.answers, self.queries), port=0, address="127.0.0.1",
                                 logger=DNSLogger(logf=lambda _line: None))
        self.port = self._server.server.server_address[1]
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()

    def resolver(self, fallback: Callable[[str, int], object]) -> Callable[[str, int], object]:
        """Names under `.example` are asked of this server (over UDP, as a stub resolver would); any other
        name (localhost, 2130706433, 0x7f.0.0.1, literal addresses) goes to `fallback`, the system's."""

        async def resolve(host: str, port: int) -> list[str]:
            if not host.endswith(".example"):
                return await fallback(host, port)  # type: ignore[misc]

            def ask() -> list[str]:
                answer = DNSRecord.parse(DNSRecord.question(host, "A").send("127.0.0.1", self.port, timeout=2))
                return [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]

            found = await asyncio.to_thread(ask)
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return found

        return resolve
