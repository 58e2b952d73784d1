"""A whole send over SMTP (aiosmtpd on loopback): one connection, temporary failures retried, bounces kept out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.smtp import SMTPMailer
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber, Subscription, Suppression
from tests import smtp_server
from tests.send_fixtures import World, make_world
from tests.smtp_server import Recorder


@pytest.fixture
def smtpd() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    yield recorder, controller.port
    controller.stop()


def test_send_over_smtp_retries_temporary_failures_and_suppresses_bounces(
    tmp_path: Path, smtpd: tuple[Recorder, int]
) -> None:
    recorder, port = smtpd
    world: World = make_world(f"sqlite:///{tmp_path / 'smtp.db'}", 60)
    with session_scope(world.engine) as s:
        sid = s.execute(insert(Subscriber).values(email="nobody@example.com", fields={})).inserted_primary_key[0]
        s.execute(insert(Subscription).values(newsletter_id=world.newsletter_id, subscriber_id=sid, status="active"))
    recorder.defer["user5@example.com"] = "451 4.3.0 try again later"  # mid-batch: user0-4 already accepted
    recorder.fail["MAIL"].append("421 4.3.2 too busy, closing")  # on the very first message
    sleeps: list[float] = []
    report = world.send(world.new_issue(1), SMTPMailer("127.0.0.1", port), 20, SendOptions(sleep=sleeps.append))
    assert report.status == "done"
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(60)}
    assert len(sleeps) == 2  # one backoff per temporary failure
    assert len({r.session for r in recorder.received}) <= 3  # reused, reopened only after failures
    with session_scope(world.engine) as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "nobody@example.com")) == "bounced"
        assert "nobody@example.com" not in set(s.scalars(select(Delivery.email)))
        assert len(s.scalars(select(Delivery.id)).all()) == 60
    first = recorder.received[0].message
    # (folded onto its own line when long, as RFC 5322 allows: hence strip)
    assert first["List-Unsubscribe"].strip().startswith("<https://news.example.com/u/")
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
