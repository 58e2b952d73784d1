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


# -- scheduled sends ---------------------------------------------------------------------------------------

def api(server: SendGridServer, method: str, path: str, payload: object = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", json=payload, headers=AUTH)


def test_batch_ids_scheduled_mail_and_cancellation_as_documented(sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    made = api(server, "POST", "/v3/mail/batch")
    assert made.status_code == 201
    batch_id = made.json()["batch_id"]
    assert api(server, "GET", f"/v3/mail/batch/{batch_id}").json() == {"batch_id": batch_id}
    assert api(server, "GET", "/v3/mail/batch/nope").status_code == 400
    send_at = int(server.now()) + 900
    assert post(server, body("a@example.com", batch_id=batch_id, send_at=send_at)).status_code == 202
    assert post(server, body("b@example.com", send_at=send_at)).status_code == 202  # scheduled, no batch
    # A batch id must come from POST /v3/mail/batch; send_at at most 72 hours ahead.
    assert post(server, body("c@example.com", batch_id="made-up")).json()["errors"][0]["field"] == "batch_id"
    late = post(server, body("c@example.com", send_at=int(server.now()) + 73 * 3600))
    assert late.status_code == 400 and late.json()["errors"][0]["field"] == "send_at"
    assert server.deliveries() == {"a@example.com": 1, "b@example.com": 1}  # both will go out

    cancel = api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"})
    assert cancel.status_code == 201 and cancel.json() == {"batch_id": batch_id, "status": "cancel"}
    again = api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "pause"})
    assert again.status_code == 400  # a status is set already: PATCH or DELETE it
    assert api(server, "GET", f"/v3/user/scheduled_sends/{batch_id}").json() == [
        {"batch_id": batch_id, "status": "cancel"}]
    assert server.deliveries() == {"b@example.com": 1}
    server.advance(1000)  # send_at passes: the cancelled batch is discarded, the other delivered
    assert [a.state for a in server.accepted] == ["discarded", "delivered"]
    assert api(server, "DELETE", f"/v3/user/scheduled_sends/{batch_id}").status_code == 204
    assert server.deliveries() == {"b@example.com": 1}  # released after send_at: stays discarded
    assert api(server, "DELETE", f"/v3/user/scheduled_sends/{batch_id}").status_code == 404


@pytest.mark.parametrize("payload", [{"batch_id": "x"}, {"status": "cancel"}, {"batch_id": "-x", "status": "cancel"},
                                     {"batch_id": "abc", "status": "stop"}])
def test_a_cancellation_is_validated_against_the_spec(sendgrid_server: SendGridServer, payload: dict) -> None:
    r = api(sendgrid_server, "POST", "/v3/user/scheduled_sends", payload)
    assert r.status_code == 400 and r.json()["errors"][0]["message"]


def test_ten_at_a_time_and_a_late_cancellation_is_not_guaranteed(sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    ids = [api(server, "POST", "/v3/mail/batch").json()["batch_id"] for _ in range(11)]
    for batch_id in ids[:10]:
        assert api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"}
                   ).status_code == 201
    full = api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": ids[10], "status": "cancel"})
    assert full.status_code == 400 and "10" in full.json()["errors"][0]["message"]
    assert api(server, "DELETE", f"/v3/user/scheduled_sends/{ids[0]}").status_code == 204
    # Cancelled 5 minutes before send_at (inside SendGrid's 10-minute line): accepted, yet delivered.
    post(server, body("late@example.com", batch_id=ids[10], send_at=int(server.now()) + 300))
    assert api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": ids[10], "status": "cancel"}
               ).status_code == 201
    server.advance(400)
    assert server.deliveries() == {"late@example.com": 1}


def test_activity_without_the_add_on_is_403_and_faults_of_other_endpoints(sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    server.activity_api = False
    r = httpx.get(f"{server.url}/v3/messages", headers=AUTH, params={"query": "x", "limit": 1})
    assert r.status_code == 403
    server.fail_endpoint("batch", 1, 429)
    assert api(server, "POST", "/v3/mail/batch").status_code == 429
    server.fail_endpoint("cancel", 1, drop_after=True)
    batch_id = api(server, "POST", "/v3/mail/batch").json()["batch_id"]
    with pytest.raises(httpx.TransportError):
        api(server, "POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"})
    assert server.scheduled[batch_id][0] == "cancel"  # done, though the answer was lost
    assert httpx.post(f"{server.url}/_clock", json={"advance": 60}).json()["now"] >= server.now() - 1 > 0


def test_a_storm_draws_each_fault_at_its_rate() -> None:
    with SendGridServer() as server:
        server.storm(seed=1, rate_429=0.2, rate_500=0.1, drop_before=0.05, lost_202=0.03)
        outcomes = []
        for _ in range(300):
            try:
                outcomes.append(post(server, body("a@example.com"), {"Authorization": "Bearer x"}).status_code)
            except httpx.TransportError:
                outcomes.append(0)
        lost = len(server.accepted) - outcomes.count(202)
    assert 40 <= outcomes.count(429) <= 80 and 15 <= outcomes.count(500) <= 45
    assert 8 <= outcomes.count(0) <= 45 and 2 <= lost <= 20
