"""`newsletter editors ...` and `newsletter serve`, as an operator runs them."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time

import httpx
from sqlalchemy import select

from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Editor

pytest_plugins = ["tests.web_fixtures"]


def _editor(url: str, email: str) -> Editor | None:
    with session_scope(get_engine(url)) as session:
        return session.scalar(select(Editor).where(Editor.email == email))


def test_editors_add_token_and_list(workdir, cli, db_url) -> None:
    from typer.testing import CliRunner

    from newsletter.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["editors", "add", "Ed@Example.com", "--password-stdin"],
                           input="a long enough secret\n")
    assert result.exit_code == 0, result.output
    assert "Editor ed@example.com can sign in at https://news.example.com/signin" in result.output
    assert "a long enough secret" not in result.output
    editor = _editor(db_url, "ed@example.com")
    assert editor.password_hash.startswith("$argon2id$")

    short = runner.invoke(app, ["editors", "add", "ed2@example.com", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    prompted = runner.invoke(app, ["editors", "add", "ed3@example.com"],
                             input="another long secret\nanother long secret\n")
    assert prompted.exit_code == 0 and _editor(db_url, "ed3@example.com") is not None

    result = runner.invoke(app, ["editors", "token", "ed@example.com"])
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("nlt_") and len(token) > 40
    assert _editor(db_url, "ed@example.com").api_token_hash == hashlib.sha256(token.encode()).hexdigest()
    missing = cli("editors", "token", "nobody@example.com", ok=False)
    assert missing.exit_code == 1 and "newsletter editors add nobody@example.com" in missing.output

    listing = cli("editors", "list").output
    assert "ed@example.com  (has an API token)" in listing and "2 editor(s)" in listing
    assert "Example" in cli("serve", "--help").output and "Example" in cli("editors", "add", "--help").output


def test_serve_answers_on_the_configured_port(workdir, db_url) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NEWSLETTER_PORT": str(port), "NEWSLETTER_HOST": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "serve"], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a loaded CI machine starts Python slowly
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/signin", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    # Reading the output of a server still running would wait forever: stop it first.
                    process.kill()
                    raise AssertionError(process.communicate(timeout=10)[0].decode()) from None
                time.sleep(0.05)
        assert response.status_code == 200 and "Editors: sign in" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/editor/", timeout=2).status_code == 303
        assert httpx.get(f"http://127.0.0.1:{port}/confirm/SECRETTOKEN.abc", timeout=2).status_code == 400
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert f"Serving on http://127.0.0.1:{port}" in output and "test-secret-key" not in output
    assert '"GET /confirm/[token] HTTP/1.1" 400' in output and "SECRETTOKEN" not in output  # access log
