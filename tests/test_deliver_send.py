"""Exactly-once, resumable sends against the local SendGrid server: nobody gets two copies, nobody is skipped."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import func, select

from newsletter.deliver.engine import SendOptions, SendProgress
from newsletter.deliver.errors import OutcomeUnknownError
from newsletter.deliver.ledger import start_send
from newsletter.deliver.mailer import PermanentDeliveryError, TemporaryDeliveryError
from newsletter.deliver.send import run_send
from newsletter.deliver.sendgrid import SendGridMailer
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Send, SendBatch, SendHold, Subscriber
from newsletter.subscribers.tokens import FEEDBACK, MANAGE, UNSUBSCRIBE, Signer
from newsletter.web.public import record_event
from tests.conftest import BOTH_DATABASES
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.send_fixtures import BASE_URL, MESSAGE, SECRET, SLUG, World, make_world
from tests.sendgrid_server import SendGridServer, check_request


@pytest.fixture
def world(db_url: str) -> World:
    return make_world(db_url, 500)


def mailer_for(server: SendGridServer, key: str = SENDGRID_TEST_KEY) -> SendGridMailer:
    return SendGridMailer(key, server.url, timeout=5, activity_settle_seconds=0)


def exactly_once(server: SendGridServer, n: int) -> None:
    counts = server.deliveries()
    assert len(counts) == n, f"{n - len(counts)} subscribers were skipped"
    twice = {a: c for a, c in counts.items() if c > 1}
    assert not twice, f"{len(twice)} subscribers got more than one copy, e.g. {next(iter(twice.items()))}"


def ledger(world: World) -> tuple[int, int, str]:
    with session_scope(world.engine) as s:
        rows = s.scalar(select(func.count()).select_from(Delivery))
        distinct = s.scalar(select(func.count(func.distinct(Delivery.subscriber_id))))
        status = s.scalar(select(Send.status))
        return rows, distinct, status


@BOTH_DATABASES
def test_2500_subscribers_arrive_in_3_valid_requests(db_url: str, sendgrid_server: SendGridServer) -> None:
    world = make_world(db_url, 2500)
    report = world.send(world.new_issue(1), mailer_for(sendgrid_server), 1000)
    assert report.status == "done" and report.sent_now == 2500
    assert [len(a.recipients) for a in sendgrid_server.accepted] == [1000, 1000, 500]
    assert all(check_request(a.body) == [] for a in sendgrid_server.accepted)
    exactly_once(sendgrid_server, 2500)
    with session_scope(world.engine) as s:
        ids = s.scalars(select(SendBatch.provider_message_id).order_by(SendBatch.number)).all()
    assert ids == [a.message_id for a in sendgrid_server.accepted]
    assert ledger(world) == (2500, 2500, "done")


@BOTH_DATABASES
def test_cut_connections_and_random_429_500_then_resume(world: World, sendgrid_server: SendGridServer) -> None:
    sendgrid_server.fail_randomly(0.35, seed=3)
    sendgrid_server.drop_next(1, when="after")  # accepted, but the answer is lost
    sendgrid_server.drop_next(1, when="before")  # cut mid-request
    mailer = mailer_for(sendgrid_server)
    with pytest.raises(TemporaryDeliveryError, match="still failing after 2 attempts"):
        world.send(world.new_issue(1), mailer, 25, SendOptions(max_attempts=2, sleep=lambda _s: None))
    assert 0 < sendgrid_server.accepted_recipients < 500
    assert ledger(world)[2] == "failed"
    sendgrid_server.drop_next(1, when="after")  # and once more during the resume, still failing at random
    report = world.send(1, mailer, 25, SendOptions(max_attempts=50, sleep=lambda _s: None))
    assert report.status == "done" and report.sent_before > 0
    assert {s for s, _ in sendgrid_server.rejected} == {429, 500}
    exactly_once(sendgrid_server, 500)
    assert ledger(world) == (500, 500, "done")


@BOTH_DATABASES
def test_crash_after_the_provider_accepted_resumes_without_duplicates(
    world: World, sendgrid_server: SendGridServer
) -> None:
    class Crash(BaseException):
        pass

    mailer = mailer_for(sendgrid_server)
    real_push, calls = mailer.push_prepared, []

    def push_then_die(prepared):  # noqa: ANN001, ANN202
        result = real_push(prepared)
        calls.append(1)
        if len(calls) == 3:
            raise Crash  # the process dies between the provider's 202 and our commit
        return result

    mailer.push_prepared = push_then_die  # the request is built (prepare) before the batch is marked sending
    with pytest.raises(Crash):
        world.send(world.new_issue(1), mailer, 100)
    with session_scope(world.engine) as s:
        assert s.scalar(select(SendBatch.status).where(SendBatch.number == 3)) == "sending"
    report = world.send(1, mailer_for(sendgrid_server), 100)
    assert report.status == "done"
    exactly_once(sendgrid_server, 500)
    assert ledger(world) == (500, 500, "done")


@BOTH_DATABASES
def test_without_a_way_to_ask_the_provider_unknown_batches_are_held(
    world: World, sendgrid_server: SendGridServer
) -> None:
    mailer = mailer_for(sendgrid_server)
    mailer.accepted = lambda custom_args, limit=1000: None  # e.g. no Email Activity add-on
    sendgrid_server.drop_next(1, when="after")
    issue = world.new_issue(1)
    report = world.send(issue, mailer, 100)
    assert report.status == "held" and report.held_batches == [1] and report.held_recipients == 100
    assert sendgrid_server.accepted_recipients == 500  # the other batches went on
    assert ledger(world)[2] == "held"
    again = world.send(issue, mailer, 100)  # resuming alone does not guess
    assert again.status == "held" and sendgrid_server.accepted_recipients == 500
    # The operator looked at SendGrid's activity and saw batch 1 went out: skip it.
    done = world.send(issue, mailer, 100, SendOptions(unknown="skip", sleep=lambda _s: None))
    assert done.status == "done"
    assert done.decided == "skip" and done.decided_batches == [1] and done.skipped == 100
    exactly_once(sendgrid_server, 500)
    # D4: the 100 skipped are recorded as skipped, not as delivered: the ledger says who was sent it.
    assert ledger(world) == (400, 400, "done")
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(SendHold).where(SendHold.status == "skipped")) == 100
        assert s.scalar(select(SendBatch.status).where(SendBatch.number == 1)) == "skipped"


@BOTH_DATABASES
def test_401_stops_the_send_with_a_clear_error_and_keeps_state(
    world: World, sendgrid_server: SendGridServer
) -> None:
    issue = world.new_issue(1)
    with pytest.raises(PermanentDeliveryError, match="401.*SENDGRID_API_KEY"):
        world.send(issue, mailer_for(sendgrid_server, "SG.revoked"), 100)
    with session_scope(world.engine) as s:
        send = s.scalar(select(Send))
        assert send.status == "failed" and "401" in send.error
        assert s.scalar(select(SendBatch.status)) == "failed"
    assert sendgrid_server.accepted == []
    assert world.send(issue, mailer_for(sendgrid_server), 100).status == "done"
    exactly_once(sendgrid_server, 500)


def test_backoff_honours_retry_after_and_rate_limit_paces(world: World, sendgrid_server: SendGridServer) -> None:
    sleeps: list[float] = []
    sendgrid_server.fail_next(1, 429, {"Retry-After": "7"})
    world.send(world.new_issue(1), mailer_for(sendgrid_server), 100, SendOptions(sleep=sleeps.append))
    assert sleeps and sleeps[0] >= 7
    sleeps.clear()
    now = [0.0]

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    world.send(world.new_issue(2), mailer_for(sendgrid_server), 100,
               SendOptions(rate=250, sleep=fake_sleep, clock=lambda: now[0]))
    # 500 messages at 250/s: the first batch goes at once, then each 100 waits ~0.4s
    assert 1.5 <= sum(sleeps) <= 1.61 and len(sleeps) == 4


def test_progress_and_stop_after_the_batch_in_flight(world: World, sendgrid_server: SendGridServer) -> None:
    stop = threading.Event()
    seen: list[SendProgress] = []

    def progress(p: SendProgress) -> None:
        seen.append(p)
        if p.sent >= 200:
            stop.set()  # what Ctrl-C does

    issue = world.new_issue(1)
    report = world.send(issue, mailer_for(sendgrid_server), 100,
                        SendOptions(stop=stop, progress=progress, sleep=lambda _s: None))
    assert report.status == "stopped" and sendgrid_server.accepted_recipients == 200
    last = seen[-1]
    assert (last.sent, last.total, last.remaining) == (200, 500, 300) and last.rate > 0 and last.eta is not None
    assert world.send(issue, mailer_for(sendgrid_server), 100).status == "done"
    exactly_once(sendgrid_server, 500)


@BOTH_DATABASES
def test_a_bounce_suppresses_the_next_send(world: World, sendgrid_server: SendGridServer) -> None:
    world.send(world.new_issue(1), mailer_for(sendgrid_server), 100)
    record_event(world.engine, {"event": "bounce", "type": "bounce", "email": "user7@example.com",
                                "sg_event_id": "b1", "newsletter": "ai-weekly"})
    record_event(world.engine, {"event": "unsubscribe", "email": "user8@example.com", "sg_event_id": "u1",
                                "newsletter": "ai-weekly"})
    sendgrid_server.reset()
    report = world.send(world.new_issue(2), mailer_for(sendgrid_server), 100)
    assert report.total == 498
    counts = sendgrid_server.deliveries()
    assert "user7@example.com" not in counts and "user8@example.com" not in counts and len(counts) == 498


def test_unknown_outcome_error_is_a_temporary_error() -> None:
    # Code that only knows the Mailer protocol still treats it as "try later", never as success.
    assert issubclass(OutcomeUnknownError, TemporaryDeliveryError)


def test_ctrl_c_asks_to_stop_then_a_second_one_interrupts() -> None:
    import os
    import signal

    from newsletter.deliver.send import stop_on_ctrl_c

    # A shell starts a background job with SIGINT ignored; the interactive case this test is about has Python's
    # default handler, so set it (and put back whatever the runner had).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop = threading.Event()
        with stop_on_ctrl_c(stop):
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(2)  # first Ctrl-C: finish the batch in flight, then stop
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(200):  # the signal is delivered between bytecodes
                    threading.Event().wait(0.01)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


@BOTH_DATABASES
def test_a_second_runner_of_the_same_send_is_refused(world: World, sendgrid_server: SendGridServer) -> None:
    from newsletter.deliver.errors import SendError

    issue = world.new_issue(1)
    sendgrid_server.delay = 0.1
    first: list = []
    runner = threading.Thread(target=lambda: first.append(world.send(issue, mailer_for(sendgrid_server), 100)))
    runner.start()
    while not sendgrid_server.accepted and runner.is_alive():
        threading.Event().wait(0.01)
    with pytest.raises(SendError, match="already running"):
        world.send(issue, mailer_for(sendgrid_server), 100)
    runner.join(30)
    assert first and first[0].status == "done"
    exactly_once(sendgrid_server, 500)
    # Once it is over, running it again is fine (and finds nothing to do).
    assert world.send(issue, mailer_for(sendgrid_server), 100).sent_now == 0


@BOTH_DATABASES
def test_two_sends_started_together_make_one_send_not_a_crash(world: World) -> None:
    """D7: both find no send for the issue and both insert one; the loser takes the winner's send."""
    from sqlalchemy import create_engine, event

    from newsletter.deliver.ledger import start_send

    issue = world.new_issue(1)
    elsewhere = create_engine(world.engine.url)  # another process's connection to the same database
    winner: list[int] = []

    def the_other_runner_wins(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        # Between our look-up and our insert, the other runner creates and commits the issue's send.
        if statement.lstrip().upper().startswith("INSERT INTO SEND ") and not winner:
            with session_scope(elsewhere) as s:
                send = Send(issue_id=issue, mailer="outbox", status="running", max_subscription_id=0,
                            batch_size=100, total=0, sent=0)
                s.add(send)
                s.flush()
                winner.append(send.id)

    event.listen(world.engine, "before_cursor_execute", the_other_runner_wins)
    try:
        send_id = start_send(world.engine, issue, world.newsletter_id, "outbox", 100)
    finally:
        event.remove(world.engine, "before_cursor_execute", the_other_runner_wins)
        elsewhere.dispose()
    assert winner and send_id == winner[0]  # the winner's send, and no IntegrityError
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(Send).where(Send.issue_id == issue)) == 1


def test_each_reader_gets_their_own_signed_links_where_the_issue_shows_them(
    world: World, sendgrid_server: SendGridServer
) -> None:
    # The engine signs the feedback and manage links only for an issue that shows them: one that does must get
    # every reader's own, in the part that shows each.
    message = dataclasses.replace(
        MESSAGE, html=MESSAGE.html + '<a href="%%feedback_url%%/1/2">Wrong?</a>',
        text=MESSAGE.text + "\nYour choices: %%manage_url%%")
    send_id = start_send(world.engine, world.new_issue(1), world.newsletter_id, "sendgrid", 200)
    run_send(world.engine, send_id, world.newsletter_id, SLUG, message, mailer_for(sendgrid_server), Signer(SECRET),
             BASE_URL, SendOptions(sleep=lambda _s: None))
    exactly_once(sendgrid_server, 500)
    with session_scope(world.engine) as s:
        ids = dict(s.execute(select(Subscriber.email, Subscriber.id)).all())
    signer = Signer(SECRET)
    for accepted in sendgrid_server.accepted:
        for p in accepted.body["personalizations"]:
            sid, subs = ids[p["to"][0]["email"]], p["substitutions"]
            # The HTML-only link under its escaped token where some link of the request needed escaping.
            feedback = subs.get("%%feedback_url:html%%") or subs["%%feedback_url%%"]
            links = {FEEDBACK: feedback, MANAGE: subs["%%manage_url%%"],
                     UNSUBSCRIBE: subs["%%unsubscribe_url%%"]}
            for purpose, link in links.items():
                assert link.startswith(f"{BASE_URL}/{purpose}/")
                assert signer.read(link.rsplit("/", 1)[1], purpose).subscriber_id == sid
