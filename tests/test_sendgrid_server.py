"""The local SendGrid server must be strict, or tests passing against it prove nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.sendgrid_server import SendGridServer

AUTH = {"Authorization": f"Bearer {SENDGRID_TEST_KEY}"}


def body(*addresses: str, **extra: object) -> dict:
    data = {
        "personalizations": [{"to": [{"email": a}]} for a in addresses],
        "from": {"email": "news@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "hi"}, {"type": "text/html", "value": "<p>hi</p>"}],
        "custom_args": {"send_id": "1"},
    }
    data.update(extra)
    return data


def post(server: SendGridServer, payload: object, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v3/mail/send", json=payload, headers=AUTH if headers is None else headers
    )


def test_valid_request_is_accepted_and_recorded(sendgrid_server: SendGridServer) -> None:
    r = post(sendgrid_server, body("a@example.com", "b@example.com"))
    assert r.status_code == 202 and r.content == b""
    assert r.headers["X-Message-Id"]
    assert sendgrid_server.deliveries() == {"a@example.com": 1, "b@example.com": 1}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"personalizations": [{"to": [{"email": "a@example.com"}]}], "subject": "x"}, None),  # no from
        (body("not-an-address"), "personalizations[0].to[0].email"),
        (body("a@example.com", custom_args="a string"), "custom_args"),
        (body("a@example.com", "A@example.com"), "personalizations.1.to.0.email"),
        (body(*[f"u{i}@example.com" for i in range(1001)]), "personalizations"),
        (body("a@example.com", subject=None), None),
    ],
)
def test_invalid_requests_get_400_with_errors(sendgrid_server: SendGridServer, payload: dict, field) -> None:
    payload = {k: v for k, v in payload.items() if v is not None}
    r = post(sendgrid_server, payload)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert errors and all(set(e) == {"message", "field", "help"} for e in errors)
    if field:
        assert field in [e["field"] for e in errors]
    assert sendgrid_server.accepted == []


def test_substitutions_over_10000_bytes_rejected(sendgrid_server: SendGridServer) -> None:
    payload = body("a@example.com")
    payload["personalizations"][0]["substitutions"] = {"%%x%%": "y" * 10_000}
    r = post(sendgrid_server, payload)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "personalizations.0.substitutions"


def test_missing_or_wrong_key_is_401(sendgrid_server: SendGridServer) -> None:
    assert post(sendgrid_server, body("a@example.com"), headers={}).status_code == 401
    r = post(sendgrid_server, body("a@example.com"), headers={"Authorization": "Bearer SG.wrong"})
    assert r.status_code == 401 and r.json()["errors"][0]["message"]
    assert sendgrid_server.accepted == []


def test_body_over_30mb_is_413(sendgrid_server: SendGridServer) -> None:
    big = body("a@example.com")
    big["content"][1]["value"] = "x" * (30 * 1024 * 1024 + 1)
    assert post(sendgrid_server, big).status_code == 413


def test_failures_on_cue(sendgrid_server: SendGridServer) -> None:
    sendgrid_server.fail_next(2, 429)
    first, second = post(sendgrid_server, body("a@example.com")), post(sendgrid_server, body("a@example.com"))
    assert first.status_code == second.status_code == 429
    assert int(first.headers["X-RateLimit-Reset"]) > 0 and first.headers["X-RateLimit-Remaining"] == "0"
    sendgrid_server.fail_next(1, 500)
    assert post(sendgrid_server, body("a@example.com")).status_code == 500
    assert post(sendgrid_server, body("a@example.com")).status_code == 202
    assert sendgrid_server.deliveries() == {"a@example.com": 1}


def test_random_failures_are_reproducible() -> None:
    outcomes = []
    for _ in range(2):
        with SendGridServer() as server:
            server.fail_randomly(0.5, seed=7)
            outcomes.append(
                [
                    post(server, body("a@example.com"), {"Authorization": "Bearer x"}).status_code
                    for _ in range(12)
                ]
            )
    assert outcomes[0] == outcomes[1]
    assert {202, 429, 500} <= set(outcomes[0])


def test_dropped_connections(sendgrid_server: SendGridServer) -> None:
    sendgrid_server.drop_next(1, when="before")
    with pytest.raises(httpx.TransportError):
        post(sendgrid_server, body("a@example.com"))
    assert sendgrid_server.accepted == []
    sendgrid_server.drop_next(1, when="after")
    with pytest.raises(httpx.TransportError):
        post(sendgrid_server, body("a@example.com"))
    assert sendgrid_server.deliveries() == {"a@example.com": 1}  # accepted, though the client never heard


def test_activity_lookup_by_custom_arg(sendgrid_server: SendGridServer) -> None:
    post(sendgrid_server, body("a@example.com", custom_args={"batch_key": "s1-b1"}))
    post(sendgrid_server, body("b@example.com", custom_args={"batch_key": "s1-b2"}))
    r = httpx.get(
        f"{sendgrid_server.url}/v3/messages",
        headers=AUTH,
        params={"query": "unique_args['batch_key']=\"s1-b2\"", "limit": 10},
    )
    assert [m["to_email"] for m in r.json()["messages"]] == ["b@example.com"]
