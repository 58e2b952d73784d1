"""`newsletter check SLUG --unsubscribe` against a real `newsletter serve`: the RFC 8058 one-click request goes
over HTTP and the test address is suppressed at once; a site that does not unsubscribe, or is not there, fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber, Suppression
from tests.conftest import schedule_toml
from tests.smtp_server import free_port


def newsletter_here(workdir: Path) -> None:
    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", [("A", "https://example.com/feed")]))


@pytest.fixture
def served(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    newsletter_here(workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("NEWSLETTER_BASE_URL", base)
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)], cwd=workdir,
                            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/signin", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((workdir / "serve.log").read_text()) from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def people(workdir: Path) -> tuple[int, int]:
    engine = get_engine(os.environ["NEWSLETTER_DATABASE_URL"])
    with session_scope(engine) as s:
        return (s.scalar(select(func.count()).select_from(Subscriber)) or 0,
                s.scalar(select(func.count()).select_from(Suppression)) or 0)


def test_one_click_unsubscribe_works_against_the_real_site(workdir: Path, served: str, cli) -> None:  # noqa: ANN001
    cli("subscribers", "add", "ann@example.org", "-n", "city")
    result = cli("check", "city", "--unsubscribe")
    assert "the test address was unsubscribed and suppressed at once" in result.output
    assert f"POST {served}/u/… (List-Unsubscribe=One-Click) answered 200" in result.output
    assert "needs an https link" in result.output  # http://127.0.0.1 here: said, as a warning
    assert people(workdir) == (1, 0)  # the test subscriber is gone; Ann is untouched
    assert "ann@example.org" in cli("subscribers", "list", "-n", "city").output


class _Ignores(BaseHTTPRequestHandler):
    """A site that answers the POST but unsubscribes nobody (another app, another database)."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200 if self.path.startswith("/u/") else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_a_site_that_answers_but_does_not_unsubscribe_fails(workdir: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    newsletter_here(workdir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ignores)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        result = cli("check", "city", "--unsubscribe", ok=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "answered 200 but the test address is still active (suppressed: no)" in result.output
    assert people(workdir) == (0, 0)


def test_no_site_at_the_base_url_fails_clearly(workdir: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    newsletter_here(workdir)
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{free_port()}")
    result = cli("check", "city", "--unsubscribe", ok=False)
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:" in result.output
    assert "is `newsletter serve` running there" in result.output
    assert people(workdir) == (0, 0)
