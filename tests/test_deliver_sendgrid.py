"""The SendGrid backend against the local SendGrid server (real HTTP, schema-validated)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from newsletter.deliver.errors import OutcomeUnknownError
from newsletter.deliver.mailer import Message, PermanentDeliveryError, Recipient, TemporaryDeliveryError
from newsletter.deliver.sendgrid import SendGridMailer
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.sendgrid_server import SendGridServer, check_request

MESSAGE = Message(
    subject="AI Weekly #3",
    from_address="AI Weekly <news@example.com>",
    html='<p>Hi %%name%%</p><a href="%%unsubscribe_url%%">Unsubscribe</a>',
    text="Hi %%name%%\nUnsubscribe: %%unsubscribe_url%%",
    list_id="AI Weekly <ai-weekly.news.example.com>",
    reply_to="editor@example.com",
    categories=("ai-weekly",),
    custom_args={"install": "db-a", "send_id": "7", "batch": "1"},
)


def people(n: int, start: int = 0) -> list[Recipient]:
    return [
        Recipient(
            f"user{i}@example.com", f"User {i}", i, {"unsubscribe_url": f"https://news.example.com/u/t{i}"}
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def mailer(sendgrid_server: SendGridServer) -> SendGridMailer:
    return SendGridMailer(SENDGRID_TEST_KEY, sendgrid_server.url, timeout=5)


def test_2500_recipients_in_3_valid_requests(mailer: SendGridMailer, sendgrid_server: SendGridServer) -> None:
    recipients = people(2500)
    ids = [mailer.push(MESSAGE, recipients[i : i + 1000]).provider_message_id for i in range(0, 2500, 1000)]
    assert len(sendgrid_server.accepted) == 3 and all(ids)
    assert ids == [a.message_id for a in sendgrid_server.accepted]
    assert [len(a.recipients) for a in sendgrid_server.accepted] == [1000, 1000, 500]
    assert set(sendgrid_server.deliveries().values()) == {1} and len(sendgrid_server.deliveries()) == 2500
    for accepted in sendgrid_server.accepted:
        assert check_request(accepted.body) == []
        assert all(
            len(p["to"]) == 1 and "cc" not in p and "bcc" not in p for p in accepted.body["personalizations"]
        )


def test_request_carries_headers_substitutions_and_ids(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    tricky = Recipient(
        "tom@example.com", 'Tom & "Jerry" <script>', 1, {"unsubscribe_url": "https://n.example/u/abc"}
    )
    mailer.push(MESSAGE, [tricky])
    body = sendgrid_server.accepted[0].body
    p = body["personalizations"][0]
    assert p["headers"] == {"List-Unsubscribe": "<https://n.example/u/abc>"}
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["List-Id"] == "AI Weekly <ai-weekly.news.example.com>"
    assert body["custom_args"] == {"install": "db-a", "send_id": "7", "batch": "1"}
    assert body["categories"] == ["ai-weekly"]
    assert body["from"] == {"email": "news@example.com", "name": "AI Weekly"}
    # What the reader sees, after SendGrid substitutes: raw in text, escaped in HTML.
    text, html_body = (c["value"] for c in body["content"])
    for token, value in p["substitutions"].items():
        text, html_body = text.replace(token, value), html_body.replace(token, value)
    assert 'Hi Tom & "Jerry" <script>' in text
    assert "Hi Tom &amp; &quot;Jerry&quot; &lt;script&gt;" in html_body and "<script>" not in html_body
    assert 'href="https://n.example/u/abc"' in html_body


def test_401_is_permanent_with_the_api_message(sendgrid_server: SendGridServer) -> None:
    bad = SendGridMailer("SG.wrong", sendgrid_server.url)
    with pytest.raises(PermanentDeliveryError, match="401.*authorization grant is invalid"):
        bad.push(MESSAGE, people(2))
    assert sendgrid_server.accepted == []


def test_400_is_permanent_and_names_the_field(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"400.*content"):
        mailer.push(dataclasses.replace(MESSAGE, html="", text=""), people(1))


def test_an_address_that_cannot_be_used_is_left_out_alone(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    result = mailer.push(MESSAGE, [Recipient("not an address"), *people(2)])
    assert list(result.failed) == ["not an address"] and "not a usable address" in result.failed["not an address"]
    assert sendgrid_server.deliveries() == {"user0@example.com": 1, "user1@example.com": 1}


def test_429_and_5xx_are_temporary_with_retry_after(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    sendgrid_server.fail_next(1, 429, {"X-RateLimit-Reset": "0", "Retry-After": "3"})
    with pytest.raises(TemporaryDeliveryError) as info:
        mailer.push(MESSAGE, people(1))
    assert info.value.retry_after == 3.0
    sendgrid_server.fail_next(1, 503)
    with pytest.raises(TemporaryDeliveryError, match="503"):
        mailer.push(MESSAGE, people(1))
    assert sendgrid_server.accepted == []


def test_lost_answer_is_outcome_unknown_and_lookup_resolves_it(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    sendgrid_server.drop_next(1, when="after")
    with pytest.raises(OutcomeUnknownError):
        mailer.push(MESSAGE, people(3))
    assert mailer.accepted({"install": "db-a", "send_id": "7", "batch": "1"}) == {
        f"user{i}@example.com" for i in range(3)}
    assert mailer.accepted({"install": "db-a", "send_id": "7", "batch": "2"}) == set()
    # Another database on the same account numbers its sends and batches from 1 too: never its answer.
    assert mailer.accepted({"install": "db-b", "send_id": "7", "batch": "1"}) == set()
    with pytest.raises(ValueError, match="install id"):
        mailer.accepted({"send_id": "7", "batch": "1"})


def test_requests_share_one_kept_alive_connection_and_its_failures_keep_their_meaning(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    for start in range(0, 30, 10):
        mailer.push(MESSAGE, people(10, start))
    assert sendgrid_server.connections == 1 and len(sendgrid_server.deliveries()) == 30
    # Cut while the request was being read: nothing taken, so a retry is safe...
    sendgrid_server.drop_next(1, when="before")
    with pytest.raises(TemporaryDeliveryError):
        mailer.push(MESSAGE, people(1000, 100))
    # ...cut after it was taken: only "unknown" is true.
    mailer.push(MESSAGE, people(1, 30))
    sendgrid_server.drop_next(1, when="after")
    with pytest.raises(OutcomeUnknownError):
        mailer.push(MESSAGE, people(1, 31))
    mailer.push(MESSAGE, people(1, 32))
    assert set(sendgrid_server.deliveries()) == {f"user{i}@example.com" for i in range(33)}
    assert set(sendgrid_server.deliveries().values()) == {1}


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(
    mailer: SendGridMailer, sendgrid_server: SendGridServer
) -> None:
    sendgrid_server.close_idle = True  # as a load balancer's idle timeout between two batches
    for start in range(0, 50, 10):
        mailer.push(MESSAGE, people(10, start))  # neither unknown nor retried
        deadline = time.monotonic() + 5
        while sendgrid_server.closed < start // 10 + 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # the close comes while the client is idle, as a timeout's does
    assert sendgrid_server.connections == 5
    assert len(sendgrid_server.deliveries()) == 50 and set(sendgrid_server.deliveries().values()) == {1}


def test_a_proxy_the_environment_names_carries_the_mail_send(
    sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server answers absolute-form request targets too, so it can stand in for the proxy.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", sendgrid_server.url)
    mailer = SendGridMailer(SENDGRID_TEST_KEY, "http://sendgrid.invalid", timeout=5)
    mailer.push(MESSAGE, people(2))
    assert sendgrid_server.mail_targets == ["http://sendgrid.invalid/v3/mail/send"]
    assert len(sendgrid_server.deliveries()) == 2


def test_unreachable_host_is_temporary() -> None:
    mailer = SendGridMailer(SENDGRID_TEST_KEY, "http://127.0.0.1:9", timeout=2)
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        mailer.push(MESSAGE, people(1))
    assert mailer.accepted({"install": "db-a", "send_id": "1"}) is None
