"""The web app's public edges hold against a stranger (issue 12, items 5, 6, 12): request bodies are bounded
before they are read (measured as the server's peak memory under a 400 MB post), the public subscribe form is
limited per client, X-Forwarded-For counts only from the proxies the operator lists, and numbers too large
for any id, JSON nested 100,000 deep and a signed event from the year 10^12 are answered 400/404, never 500.

The memory and proxy tests run a real `newsletter serve` (uvicorn) in a subprocess; the rest use the app
in-process (Starlette's TestClient raises any server error, so a 500 cannot pass unnoticed).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from newsletter.store.db import session_scope
from newsletter.store.models import Event
from tests.smtp_server import free_port
from tests.web_support import EDITOR, Site, csrf_of

pytest_plugins = ["tests.web_fixtures"]

MB = 1024 * 1024
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


# --- a real server -------------------------------------------------------------------------------------------


@contextmanager
def newsletter_serve(site: Site, **env: str) -> Iterator[tuple[int, int]]:
    """`newsletter serve` on a free loopback port for this site: (port, pid)."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_", "FORWARDED_"))}
    environment.update(
        NEWSLETTER_DATABASE_URL=site.settings.database_url, NEWSLETTER_SCHEDULES_DIR=str(site.settings.schedules_dir),
        NEWSLETTER_OUTBOX_DIR=str(site.settings.outbox_dir), NEWSLETTER_SECRET_KEY="web-test-secret",
        NEWSLETTER_BASE_URL="https://news.example.com", NEWSLETTER_HOST="127.0.0.1", NEWSLETTER_PORT=str(port),
        SENDGRID_WEBHOOK_PUBLIC_KEY=PUBLIC_KEY, **env,
    )
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "serve"], cwd=site.root, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/signin", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError(process.communicate()[0].decode()) from None
                time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in kB, as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def stream_post(port: int, path: str, total: int, *, chunked: bool, headers: dict[str, str] | None = None,
                prefix: bytes = b"") -> int:
    """POST `total` bytes to the server a megabyte at a time (never holding more than that here), stopping when
    the server hangs up; returns the status the server answered with."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/x-www-form-urlencoded",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    answer = bytearray()

    def read() -> None:  # the answer may come (and the connection close) long before the body is sent
        try:
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    reader.start()
    block = b"a" * MB
    try:
        sent = 0
        first = prefix + block[len(prefix):]
        while sent < total:
            data = first if sent == 0 else block
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server refused the rest: what it should do
        pass
    reader.join(30)
    sock.close()
    status_line = bytes(answer).split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1.1 "), f"no answer from the server: {bytes(answer[:200])!r}"
    return int(status_line.split()[1])


def test_a_400_mb_post_never_reaches_memory(site: Site) -> None:
    timestamp = {"X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time())),
                 "X-Twilio-Email-Event-Webhook-Signature": "c2lnbmF0dXJl"}
    with newsletter_serve(site) as (port, pid):
        httpx.post(f"http://127.0.0.1:{port}/subscribe/city", data={"email": "warm@example.com"})  # warm up
        before = memory_kb(pid, "VmRSS")
        # Declared up front: refused before a byte of the body is read.
        assert stream_post(port, "/webhooks/sendgrid", 400 * MB, chunked=False, headers=timestamp) == 413
        assert stream_post(port, "/subscribe/city", 400 * MB, chunked=False, prefix=b"email=") == 413
        # Chunked, no length given: cut off at the limit as it arrives.
        assert stream_post(port, "/webhooks/sendgrid", 400 * MB, chunked=True, headers=timestamp) == 413
        assert stream_post(port, "/subscribe/city", 400 * MB, chunked=True, prefix=b"email=") == 413
        # Three at once, as the attack did.
        statuses: list[int] = []
        posts = [threading.Thread(target=lambda: statuses.append(
            stream_post(port, "/subscribe/city", 200 * MB, chunked=True, prefix=b"email="))) for _ in range(3)]
        for post in posts:
            post.start()
        for post in posts:
            post.join(60)
        assert statuses == [413] * 3
        peak = memory_kb(pid, "VmHWM")
        # The server still serves, and nothing got subscribed.
        assert httpx.get(f"http://127.0.0.1:{port}/subscribe/city").status_code == 200
    extra_mb = (peak - before) / 1024
    assert extra_mb < 50, f"the server's peak memory grew by {extra_mb:.0f} MB"


def test_forwarded_for_counts_only_from_listed_proxies(site: Site) -> None:
    def thirty_one_posts(port: int) -> list[int]:
        # Thirty-one sign-ups, each claiming to come from another address.
        return [httpx.post(f"http://127.0.0.1:{port}/subscribe/city", data={"email": "not an address"},
                           headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(31)]

    with newsletter_serve(site) as (port, _pid):  # no proxy listed: the header is only a header
        statuses = thirty_one_posts(port)
    assert statuses == [400] * 30 + [429]
    with newsletter_serve(site, NEWSLETTER_TRUSTED_PROXIES="127.0.0.1/32, ::1") as (port, _pid):
        statuses = thirty_one_posts(port)  # loopback is the proxy now: each forwarded address counts alone
    assert statuses == [400] * 31


def test_a_proxy_listed_by_name_is_refused_at_start(site: Site) -> None:
    with pytest.raises(AssertionError) as failed, newsletter_serve(site, NEWSLETTER_TRUSTED_PROXIES="proxy.example"):
        pass
    assert "NEWSLETTER_TRUSTED_PROXIES: 'proxy.example' is not an IP address or network" in str(failed.value)


# --- in-process ----------------------------------------------------------------------------------------------


def _subscribe(client, email: str):  # noqa: ANN001, ANN202
    return client.post("/subscribe/city", data={"email": email})


def _confirmations(site: Site) -> int:
    return len(list((site.root / "outbox" / "city" / "messages").glob("reader*.eml")))


def test_one_client_gets_thirty_confirmation_emails_an_hour(site: Site, client) -> None:  # noqa: ANN001
    from starlette.testclient import TestClient

    statuses = [_subscribe(client, f"reader{n}@example.org").status_code for n in range(40)]
    assert statuses == [200] * 30 + [429] * 10
    assert _confirmations(site) == 30
    # The archive's form draws on the same allowance ...
    page = client.get("/archive/city")
    assert client.post("/archive/city/subscribe", data={"csrf": csrf_of(page.text),
                                                        "email": "more@example.org"}).status_code == 429
    # ... and another client is not held back by this one.
    with TestClient(client.app, base_url="https://testserver", client=("198.51.100.7", 4000)) as other:
        assert _subscribe(other, "reader-other@example.org").status_code == 200
    assert _confirmations(site) == 31


def _api_token(site: Site) -> dict[str, str]:
    from newsletter.web.auth import issue_api_token

    with session_scope(site.engine) as session:
        return {"Authorization": f"Bearer {issue_api_token(session, EDITOR)}"}


@pytest.mark.parametrize("number", ["99999999999999999999999", "2147483648"])
def test_numbers_no_id_can_have_are_not_found(site: Site, editor_client, number: str) -> None:  # noqa: ANN001
    # 2147483648 is one past a 32-bit id: PostgreSQL refuses it in an integer column.
    token = _api_token(site)
    for method, path in [("GET", f"/api/issues/{number}"), ("GET", f"/api/issues/{site.draft_issue_id}/items/{number}"),
                         ("PATCH", f"/api/issues/{number}"), ("GET", f"/editor/issues/{number}"),
                         ("GET", f"/archive/city/{number}")]:
        response = editor_client.request(method, path, headers=token, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.status_code)
    assert editor_client.get(f"/api/issues/{site.draft_issue_id}", headers=token).status_code == 200


@pytest.mark.postgres
def test_impossible_numbers_are_refused_on_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # PostgreSQL refuses 2147483648 for an integer column outright (SQLite just finds no row), and infinity
    # in a JSON column: neither may get that far.
    from starlette.testclient import TestClient

    from newsletter.web.app import create_app
    from tests.conftest import postgres_schema
    from tests.web_support import add_editor, make_site

    with postgres_schema() as url:
        pg_site = make_site(tmp_path, database_url=url)
        add_editor(pg_site.engine)
        monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
        with TestClient(create_app(pg_site.settings, engine=pg_site.engine), base_url="https://testserver") as client:
            token = _api_token(pg_site)
            for number in ("2147483648", "99999999999999999999999"):
                assert client.get(f"/api/issues/{number}", headers=token).status_code == 404
                assert client.get(f"/archive/city/{number}").status_code == 404
            assert client.get(f"/api/issues/{pg_site.draft_issue_id}", headers=token).status_code == 200
            assert_huge_numbers_are_harmless(pg_site, client)


def test_the_body_limit_is_the_operators(site: Site) -> None:
    from dataclasses import replace

    from starlette.testclient import TestClient

    from newsletter.web.app import create_app

    app = create_app(replace(site.settings, max_body=4096), engine=site.engine)
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/archive/city")
        form = {"csrf": csrf_of(page.text), "email": "someone@example.org"}
        assert client.post("/archive/city/subscribe", data={**form, "website": ""}).status_code == 200
        refused = client.post("/archive/city/subscribe", data={**form, "padding": "x" * 5000})
        assert refused.status_code == 413 and refused.headers["connection"] == "close"
        api = client.post("/api/issues/1/approve", content=b"{}" + b" " * 5000,
                          headers={"Content-Type": "application/json"})
        assert api.status_code == 413 and "larger than this server accepts" in api.json()["error"]


def _signed(body: bytes, timestamp: str | None = None) -> dict:
    ts = timestamp or str(int(time.time()))
    signature = KEY.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"content": body, "headers": {"Content-Type": "application/json",
                                         "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                                         "X-Twilio-Email-Event-Webhook-Timestamp": ts}}


@pytest.fixture
def webhook_client(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from starlette.testclient import TestClient

    from newsletter.web.app import create_app

    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    with TestClient(create_app(site.settings, engine=site.engine), base_url="https://testserver") as test_client:
        yield test_client


def test_json_nested_100k_deep_is_a_bad_request(site: Site, editor_client, webhook_client) -> None:  # noqa: ANN001
    deep = b"[" * 100_000 + b"]" * 100_000
    response = editor_client.patch(f"/api/issues/{site.draft_issue_id}", content=deep,
                                   headers={**_api_token(site), "Content-Type": "application/json"})
    assert response.status_code == 400 and "nested too deep" in response.json()["error"]
    assert webhook_client.post("/webhooks/sendgrid", **_signed(deep)).status_code == 400


def test_signed_events_with_huge_numbers_are_kept_without_a_time(site: Site, webhook_client) -> None:  # noqa: ANN001
    assert_huge_numbers_are_harmless(site, webhook_client)


def assert_huge_numbers_are_harmless(site: Site, client) -> None:  # noqa: ANN001
    huge = [{"email": "ann@example.com", "event": "delivered", "sg_event_id": "huge", "timestamp": 10**20,
             "send": "9" * 23}]
    response = client.post("/webhooks/sendgrid", **_signed(json.dumps(huge).encode()))
    assert response.status_code == 200 and response.json() == {"stored": 1, "duplicates": 0}
    with session_scope(site.engine) as session:
        rows = session.execute(select(Event.provider_event_id, Event.occurred_at, Event.send_id)).all()
    assert rows == [("huge", None, None)]  # kept, without a time or a send it cannot have
    # 1e400 is valid JSON that Python would read as infinity, which no JSON column stores.
    body = b'[{"email":"ann@example.com","event":"open","sg_event_id":"inf","timestamp":1e400}]'
    assert client.post("/webhooks/sendgrid", **_signed(body)).status_code == 400
    # A huge timestamp on the request itself is simply stale.
    stale = _signed(b"[]", timestamp="9" * 30)
    assert client.post("/webhooks/sendgrid", **stale).status_code == 403
    with session_scope(site.engine) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1
