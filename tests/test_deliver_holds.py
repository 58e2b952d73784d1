"""Honest holds (issue 13, D2, D4, D5, D6 and the `sending` mark): a held batch names exactly the people whose outcome
is unknown, an operator's `--unknown` decision applies to the batches they were shown and to no other, a skip is
recorded as skipped (never as delivered), and attempts that made progress are not failures.

Copies are counted at the servers (the real SMTP server on loopback, the local SendGrid server), not in our ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.sendgrid import SendGridMailer
from newsletter.deliver.smtp import SMTPMailer
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, SendBatch
from tests import smtp_server
from tests.conftest import BOTH_DATABASES
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.send_fixtures import World, make_world
from tests.sendgrid_server import SendGridServer
from tests.smtp_server import Recorder


@pytest.fixture
def smtpd() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    yield recorder, controller.port
    controller.stop()


def no_wait() -> SendOptions:
    return SendOptions(sleep=lambda _s: None)


def deliveries(world: World) -> int:
    with session_scope(world.engine) as s:
        return s.scalar(select(func.count()).select_from(Delivery)) or 0


def holds(world: World) -> dict[str, str]:
    from newsletter.store.models import SendHold

    with session_scope(world.engine) as s:
        return {email: status for email, status in s.execute(select(SendHold.email, SendHold.status))}


def mailer_without_activity(server: SendGridServer) -> SendGridMailer:
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=0)
    mailer.accepted = lambda custom_args, limit=1000: None  # type: ignore[method-assign] # no Email Activity add-on
    return mailer


# -- SMTP: the hold names the one message in flight (D5); progress is not failure (D6) -------------------------

@BOTH_DATABASES
def test_smtp_hold_names_only_the_message_in_flight_and_sends_the_rest(
    db_url: str, smtpd: tuple[Recorder, int]
) -> None:
    recorder, port = smtpd
    world = make_world(db_url, 60)
    recorder.lose_answer.add("user10@example.com")  # accepted, and the connection dies before the "250"
    issue = world.new_issue(1)
    report = world.send(issue, SMTPMailer("127.0.0.1", port), 50, no_wait())
    # One person's outcome is unknown, not the 39 after them in the batch (which were never attempted before).
    assert report.status == "held" and report.held_batches == [1] and report.held_recipients == 1
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(60)}  # the rest went out
    assert deliveries(world) == 59 and holds(world) == {"user10@example.com": "unknown"}

    # The operator skips them (their mail server's log shows the copy arrived): exactly once, by the server.
    done = world.send(issue, SMTPMailer("127.0.0.1", port), 50,
                      SendOptions(unknown="skip", sleep=lambda _s: None))
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(60)}
    assert deliveries(world) == 59 and holds(world) == {"user10@example.com": "skipped"}
    assert done.status == "done" and done.decided_batches == [1] and done.skipped == 1 and done.sent_now == 0


def test_smtp_attempts_that_delivered_someone_do_not_count_toward_the_limit(
    tmp_path: Path, smtpd: tuple[Recorder, int]
) -> None:
    recorder, port = smtpd
    recorder.per_session = 5  # a flaky relay: every connection dies after 5 messages
    world = make_world(f"sqlite:///{tmp_path / 'd6.db'}", 40)
    report = world.send(world.new_issue(1), SMTPMailer("127.0.0.1", port), 40,
                        SendOptions(max_attempts=3, sleep=lambda _s: None))
    assert report.status == "done" and report.sent_now == 40  # 8 attempts, each one made progress
    assert recorder.deliveries() == {f"user{i}@example.com": 1 for i in range(40)}
    assert len({r.session for r in recorder.received}) == 8


def test_smtp_attempts_without_progress_still_stop_the_send(tmp_path: Path, smtpd: tuple[Recorder, int]) -> None:
    recorder, port = smtpd
    recorder.fail["MAIL"].extend(["451 4.3.0 try later"] * 3)
    world = make_world(f"sqlite:///{tmp_path / 'd6b.db'}", 10)
    from newsletter.deliver.mailer import TemporaryDeliveryError

    with pytest.raises(TemporaryDeliveryError, match="still failing after 3 attempts"):
        world.send(world.new_issue(1), SMTPMailer("127.0.0.1", port), 10,
                   SendOptions(max_attempts=3, sleep=lambda _s: None))
    assert recorder.deliveries() == {}


# -- the operator's decision applies to the batches listed, by id (D2); a skip is a skip (D4) ------------------

@BOTH_DATABASES
def test_a_resend_decision_is_not_applied_to_the_batch_when_it_goes_unknown_again(
    db_url: str, sendgrid_server: SendGridServer
) -> None:
    world = make_world(db_url, 300)
    mailer = mailer_without_activity(sendgrid_server)
    issue = world.new_issue(1)
    sendgrid_server.drop_next(1, when="after")  # batch 1 accepted, its answer lost
    first = world.send(issue, mailer, 100, no_wait())
    assert first.status == "held" and first.held_batches == [1] and sendgrid_server.accepted_recipients == 300

    # The operator is shown batch 1 and decides to resend it; the resend's answer is lost too.
    sendgrid_server.drop_next(1, when="after")
    second = world.send(issue, mailer, 100, SendOptions(unknown="resend", sleep=lambda _s: None))
    # Held again and reported, not resent a third time on the strength of the first decision.
    assert sendgrid_server.accepted_recipients == 400
    assert second.status == "held" and second.held_batches == [1] and second.held_recipients == 100
    assert second.decided == "resend" and second.decided_batches == [1] and second.decided_recipients == 100
    with session_scope(world.engine) as s:
        assert s.scalar(select(SendBatch.decision).where(SendBatch.number == 1)) == "resend"

    third = world.send(issue, mailer, 100, SendOptions(unknown="skip", sleep=lambda _s: None))
    assert third.status == "done" and third.decided_batches == [1] and third.skipped == 100
    assert sendgrid_server.accepted_recipients == 400  # the skip sent nothing
    assert deliveries(world) == 200  # D4: no delivery row for the skipped


@BOTH_DATABASES
def test_a_decision_does_not_apply_to_a_batch_nobody_was_shown(db_url: str, sendgrid_server: SendGridServer) -> None:
    """A batch left `sending` by a crash was never listed: `--unknown resend` does not resend it, it is held."""
    class Crash(BaseException):
        pass

    world = make_world(db_url, 300)
    mailer = mailer_without_activity(sendgrid_server)
    real_push = mailer.push_prepared

    def push_then_die(prepared):  # noqa: ANN001, ANN202
        real_push(prepared)
        raise Crash  # the process dies between the provider's 202 and our commit

    mailer.push_prepared = push_then_die  # type: ignore[method-assign]
    issue = world.new_issue(1)
    with pytest.raises(Crash):
        world.send(issue, mailer, 100, no_wait())
    mailer.push_prepared = real_push  # type: ignore[method-assign]
    report = world.send(issue, mailer, 100, SendOptions(unknown="resend", sleep=lambda _s: None))
    assert sendgrid_server.deliveries() == {f"user{i}@example.com": 1 for i in range(300)}  # no second copy
    assert report.status == "held" and report.held_batches == [1] and report.decided is None


# -- the request is built before the batch is marked `sending` ------------------------------------------------

@pytest.mark.parametrize("backend", ["smtp", "sendgrid"])
def test_a_crash_while_the_request_is_built_holds_nobody(
    tmp_path: Path, smtpd: tuple[Recorder, int], sendgrid_server: SendGridServer, backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Crash(BaseException):
        pass

    recorder, port = smtpd
    world = make_world(f"sqlite:///{tmp_path / 'build.db'}", 30)
    mailer: SMTPMailer | SendGridMailer
    if backend == "smtp":
        import newsletter.deliver.smtp as smtp_module

        mailer, target, name = SMTPMailer("127.0.0.1", port), smtp_module, "build_email"
    else:
        mailer = mailer_without_activity(sendgrid_server)
        target, name = mailer, "build_request"
    real = getattr(target, name)
    calls: list[int] = []

    def dies_while_building(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2 or backend == "sendgrid":
            raise Crash  # the process dies while the batch's request is being built
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, dies_while_building)
    issue = world.new_issue(1)
    with pytest.raises(Crash):
        world.send(issue, mailer, 30, no_wait())
    monkeypatch.undo()
    with session_scope(world.engine) as s:
        assert s.scalar(select(SendBatch.status)) == "claimed"  # nothing left the machine: nobody is unknown
    report = world.send(issue, mailer, 30, no_wait())
    assert report.status == "done" and report.held_batches == []
    counts = recorder.deliveries() if backend == "smtp" else dict(sendgrid_server.deliveries())
    assert counts == {f"user{i}@example.com": 1 for i in range(30)}
