"""The access log `newsletter serve` writes (newsletter.web.logs.AccessLog): uvicorn's line, tokens cut out,
every response logged (an unexpected error's 500 too), and the operator's switch to turn it off."""

from __future__ import annotations

import io

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from newsletter.cli.web import access_log_wanted, served, uvicorn_options
from newsletter.web.logs import AccessLog, access_line


def _app() -> Starlette:
    async def ok(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def boom(_request: object) -> PlainTextResponse:
        raise RuntimeError("a bug")

    return Starlette(routes=[Route("/u/{token}", ok), Route("/confirm/{token}", ok),
                             Route("/boom", boom)])


def test_one_line_per_response_as_uvicorn_writes_it_with_tokens_cut_out() -> None:
    out = io.StringIO()
    with TestClient(AccessLog(_app(), stream=out), raise_server_exceptions=False) as client:
        assert client.get("/u/SECRET.token").status_code == 200
        assert client.get("/confirm/SECRET2?next=/x").status_code == 200
        assert client.get("/missing").status_code == 404
        assert client.get("/boom").status_code == 500  # sent by Starlette's error middleware, inside ours
    lines = out.getvalue().splitlines()
    assert lines == [
        'INFO:     testclient:50000 - "GET /u/[token] HTTP/1.1" 200 OK',
        'INFO:     testclient:50000 - "GET /confirm/[token]?next=/x HTTP/1.1" 200 OK',
        'INFO:     testclient:50000 - "GET /missing HTTP/1.1" 404 Not Found',
        'INFO:     testclient:50000 - "GET /boom HTTP/1.1" 500 Internal Server Error',
    ]
    assert "SECRET" not in out.getvalue()


def test_a_line_cannot_be_split_or_quoted_by_the_path() -> None:
    scope = {"type": "http", "method": "GET", "path": '/a"b\nc', "raw_path": None, "query_string": b"",
             "http_version": "1.1", "client": ("127.0.0.1", 5000)}
    line = access_line(scope, 200)
    assert line == 'INFO:     127.0.0.1:5000 - "GET /a%22b%0Ac HTTP/1.1" 200 OK\n'
    raw = {**scope, "raw_path": b'/a"b', "client": None}
    assert access_line(raw, 418) == """INFO:      - "GET /a%22b HTTP/1.1" 418 I'm a Teapot\n"""


def test_a_broken_standard_output_does_not_fail_the_request() -> None:
    out = io.StringIO()
    out.close()
    with TestClient(AccessLog(_app(), stream=out)) as client:
        assert client.get("/u/x").status_code == 200


def test_serve_logs_by_default_and_the_operator_can_turn_it_off(monkeypatch) -> None:
    app = _app()
    assert uvicorn_options("127.0.0.1", 8000, [])["access_log"] is False  # uvicorn's own: ours replaces it
    monkeypatch.delenv("NEWSLETTER_ACCESS_LOG", raising=False)
    assert access_log_wanted(None) is True
    assert isinstance(served(app, True), AccessLog) and served(app, False) is app
    for off in ("0", "off", "false", "no"):
        monkeypatch.setenv("NEWSLETTER_ACCESS_LOG", off)
        assert access_log_wanted(None) is False
    assert access_log_wanted(True) is True  # the command-line flag wins over the environment
    monkeypatch.setenv("NEWSLETTER_ACCESS_LOG", "1")
    assert access_log_wanted(None) is True and access_log_wanted(False) is False
    monkeypatch.setenv("NEWSLETTER_ACCESS_LOG", "maybe")
    import typer

    with pytest.raises(typer.Exit):
        access_log_wanted(None)
