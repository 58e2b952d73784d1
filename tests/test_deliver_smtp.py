"""The SMTP backend against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.deliver.errors import PartialDeliveryError
from newsletter.deliver.mailer import Message, PermanentDeliveryError, Recipient, TemporaryDeliveryError
from newsletter.deliver.smtp import SMTPMailer
from tests import smtp_server
from tests.smtp_server import Recorder

MESSAGE = Message(
    subject="AI Weekly #3: Ünïcode ✓",
    from_address="AI Weekly <news@example.com>",
    html='<p>Hi %%name%%</p><a href="%%unsubscribe_url%%">Unsubscribe</a>',
    text="Hi %%name%%\nUnsubscribe: %%unsubscribe_url%%",
    list_id="AI Weekly <ai-weekly.news.example.com>",
)


def people(n: int) -> list[Recipient]:
    return [
        Recipient(f"user{i}@example.com", f"User {i}", i, {"unsubscribe_url": f"https://n.example/u/t{i}"})
        for i in range(n)
    ]


@pytest.fixture
def smtpd() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    yield recorder, controller.port
    controller.stop()


def test_one_connection_carries_many_messages(smtpd: tuple[Recorder, int]) -> None:
    recorder, port = smtpd
    mailer = SMTPMailer.from_url(f"smtp://127.0.0.1:{port}")
    first = mailer.push(MESSAGE, people(3))
    second = mailer.push(MESSAGE, people(5)[3:])
    mailer.close()
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(5)}
    assert {r.session for r in recorder.received} == {1} and mailer.connections_opened == 1
    got = recorder.received[0].message
    assert got["To"] == "User 0 <user0@example.com>"
    assert got["Subject"] == MESSAGE.subject
    assert got["List-Unsubscribe"] == "<https://n.example/u/t0>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got["List-Id"] == MESSAGE.list_id and got["Date"]
    assert got["Message-ID"] == first.message_ids["user0@example.com"]
    assert [p.get_content_type() for p in got.iter_parts()] == ["text/plain", "text/html"]
    assert "Hi User 0" in got.get_body(("plain",)).get_content()
    assert second.message_ids.keys() == {"user3@example.com", "user4@example.com"}


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("MAIL", "421 4.3.2 shutting down"),
        ("RCPT", "451 4.3.0 try later"),
        ("DATA", "454 4.7.0 TLS not available"),
    ],
)
def test_temporary_failures_are_temporary_and_retry_works(
    smtpd: tuple[Recorder, int], stage: str, reply: str
) -> None:
    recorder, port = smtpd
    mailer = SMTPMailer("127.0.0.1", port)
    recorder.fail[stage].append(reply)
    with pytest.raises(TemporaryDeliveryError, match=reply[:3]):
        mailer.push(MESSAGE, people(2))
    assert recorder.deliveries() == {}
    mailer.push(MESSAGE, people(2))  # the retry, on a fresh connection after a 421
    assert recorder.deliveries() == {"user0@example.com": 1, "user1@example.com": 1}


def test_failure_mid_batch_reports_who_was_accepted(smtpd: tuple[Recorder, int]) -> None:
    recorder, port = smtpd
    mailer = SMTPMailer("127.0.0.1", port)
    recorder.defer["user2@example.com"] = "451 4.3.0 queue full"
    with pytest.raises(PartialDeliveryError) as info:
        mailer.push(MESSAGE, people(3))
    assert set(info.value.accepted) == {"user0@example.com", "user1@example.com"}
    assert info.value.outcome_unknown_for is None


def test_dropped_connection_reconnects_on_next_push(smtpd: tuple[Recorder, int]) -> None:
    recorder, port = smtpd
    mailer = SMTPMailer("127.0.0.1", port)
    mailer.push(MESSAGE, people(1))
    mailer._smtp.sock.shutdown(socket.SHUT_RDWR)  # the network cuts the connection under us
    with pytest.raises(TemporaryDeliveryError):
        mailer.push(MESSAGE, people(2)[1:])
    mailer.push(MESSAGE, people(2)[1:])
    assert recorder.deliveries() == {"user0@example.com": 1, "user1@example.com": 1}
    assert mailer.connections_opened == 2


def test_unknown_mailbox_is_rejected_without_stopping_the_batch(smtpd: tuple[Recorder, int]) -> None:
    recorder, port = smtpd
    result = SMTPMailer("127.0.0.1", port).push(MESSAGE, [Recipient("nobody@example.com"), *people(1)])
    assert result.rejected.keys() == {"nobody@example.com"} and "550" in result.rejected["nobody@example.com"]
    assert recorder.deliveries() == {"user0@example.com": 1}


def test_unreachable_server_is_temporary() -> None:
    with pytest.raises(TemporaryDeliveryError, match="cannot connect"):
        SMTPMailer("127.0.0.1", smtp_server.free_port(), timeout=2).push(MESSAGE, people(1))


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_and_auth(tmp_path: Path, mode: str) -> None:
    cert, key = smtp_server.self_signed(tmp_path)
    server_ctx = smtp_server.server_tls_context(cert, key)
    recorder = Recorder()
    checker = smtp_server.password_checker("ann", "p@ss word")
    if mode == "starttls":
        controller = smtp_server.start(
            recorder,
            tls_context=server_ctx,
            require_starttls=True,
            authenticator=checker,
            auth_require_tls=True,
        )
        url = f"smtp://ann:p%40ss%20word@127.0.0.1:{controller.port}?starttls=1"
    else:
        controller = smtp_server.start(
            recorder, ssl_context=server_ctx, authenticator=checker, auth_require_tls=False
        )
        url = f"smtps://ann:p%40ss%20word@127.0.0.1:{controller.port}"
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        mailer = SMTPMailer.from_url(url, tls_context=client_ctx)
        assert "p@ss" not in repr(mailer)
        mailer.push(MESSAGE, people(1))
        mailer.close()
        assert recorder.deliveries() == {"user0@example.com": 1}
        wrong = SMTPMailer.from_url(url.replace("p%40ss", "nope"), tls_context=client_ctx)
        with pytest.raises(PermanentDeliveryError, match="refused the login"):
            wrong.push(MESSAGE, people(1))
    finally:
        controller.stop()
