"""Unknown outcomes on SendGrid made certain: the install id in the Activity lookup, hold-and-cancel without it,
and unknown batches that never block the others. Every count is taken at the SendGrid test server (what readers
get once every hold has run out), never from our ledger."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.config import ConfigError
from newsletter.deliver.engine import SendOptions
from newsletter.deliver.errors import OutcomeUnknownError
from newsletter.deliver.mailer import PushResult
from newsletter.deliver.sendgrid import SendGridMailer
from newsletter.store.db import install_id, session_scope
from newsletter.store.models import Delivery, Send, SendBatch, SendGridHold, utcnow
from tests.conftest import BOTH_DATABASES
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.send_fixtures import World, make_world
from tests.sendgrid_server import SendGridServer, check_request


def holding(server: SendGridServer, **kwargs: object) -> SendGridMailer:
    """A mailer on the server's clock, holding (no Activity add-on on the server: `auto` picks hold)."""
    return SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=0, now=server.now,
                          **kwargs)  # type: ignore[arg-type]


def on_server_clock(server: SendGridServer, **kwargs: object) -> SendOptions:
    """Waits pass on the server's clock: minutes of hold and backoff cost no real time."""
    return SendOptions(sleep=server.advance, **kwargs)  # type: ignore[arg-type]


def exactly_once(server: SendGridServer, n: int, install: str | None = None) -> None:
    server.advance(3 * 3600)  # past every send_at: each held copy is delivered or discarded
    counts = server.deliveries() if install is None else copies_of(server, install)
    skipped = n - len(counts)
    twice = sum(c - 1 for c in counts.values() if c > 1)
    assert (skipped, twice) == (0, 0), f"{skipped} readers skipped, {twice} extra copies"


def copies_of(server: SendGridServer, install: str) -> dict[str, int]:
    """Copies SendGrid took from one database (by the install id its requests carry)."""
    out: dict[str, int] = {}
    for acc in server.accepted:
        if acc.custom_args.get("install") == install:
            for addr in acc.recipients:
                out[addr] = out.get(addr, 0) + 1
    return out


# -- D1: one database never answers for another ------------------------------------------------------------

def test_two_databases_sharing_one_account_never_settle_each_others_batches(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    a = make_world(f"sqlite:///{tmp_path / 'staging.db'}", 300)
    b = make_world(f"sqlite:///{tmp_path / 'production.db'}", 300)
    install_a, install_b = install_id(a.engine), install_id(b.engine)
    assert install_a != install_b and install_id(a.engine) == install_a  # generated once, kept
    mailer = SendGridMailer(SENDGRID_TEST_KEY, sendgrid_server.url, timeout=5, activity_settle_seconds=0,
                            settle_by="activity")
    # A sends its issue #1 (send 1, batches 1-1..1-3): SendGrid has all of it.
    assert a.send(a.new_issue(1), mailer, 100).sent_now == 300

    # B's first request is lost before SendGrid took it, and the client cannot tell (as with a cut connection).
    real_push, lost = mailer.push_prepared, []

    def lose_first(prepared: tuple[dict[str, Any], dict[str, str]]) -> PushResult:
        if not lost:
            lost.append(prepared[0]["custom_args"])
            raise OutcomeUnknownError("connection reset before the answer")
        return real_push(prepared)

    mailer.push_prepared = lose_first  # type: ignore[method-assign]
    report = b.send(b.new_issue(1), mailer, 100)
    # Same send id, same batch key as A's accepted batch 1-1; only the install id tells them apart.
    assert lost[0]["send"] == "1" and lost[0]["batch"] == "1-1" and lost[0]["install"] == install_b
    assert report.status == "done" and report.sent_now == 300
    exactly_once(sendgrid_server, 300, install_b)  # B's readers got B's issue: A's mail did not answer for it
    exactly_once(sendgrid_server, 300, install_a)
    assert all(acc.custom_args["install"] in (install_a, install_b) for acc in sendgrid_server.accepted)


# -- hold-and-cancel -----------------------------------------------------------------------------------------

@BOTH_DATABASES
def test_a_lost_202_is_cancelled_then_sent_again_and_released_after_send_at(
    db_url: str, sendgrid_server: SendGridServer
) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(db_url, 300)
    mailer = holding(server)
    assert mailer.holds()
    server.drop_next(1, when="after")  # SendGrid takes batch 1; the answer is lost
    notes: list[str] = []
    report = world.send(world.new_issue(1), mailer, 100,
                        on_server_clock(server, progress=lambda p: p.note and notes.append(p.note)))
    assert report.status == "done" and report.sent_now == 300 and report.held_batches == []
    assert any("cancelled before it went out" in n for n in notes)
    first = server.accepted[0]
    assert first.batch_id and first.send_at and first.send_at - first.at == pytest.approx(660, abs=2)
    assert all(check_request(a.body) == [] for a in server.accepted)
    assert len({a.batch_id for a in server.accepted}) == len(server.accepted)  # one batch id per request
    assert server.scheduled == {first.batch_id: ("cancel", pytest.approx(first.at, abs=5))}
    exactly_once(server, 300)
    assert server.discarded_recipients == 100  # the lost copy of batch 1, discarded at its send_at
    # The next run (or any later send) releases the cancellation once its send_at has passed.
    assert world.send(1, mailer, 100).status == "done"
    assert server.scheduled == {} and server.calls["release"] == 1
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 300
        assert s.scalars(select(SendGridHold.status).where(SendGridHold.status != "scheduled")).all() == ["released"]


def test_a_cancel_whose_answer_is_lost_is_confirmed_by_asking_again(sendgrid_server: SendGridServer,
                                                                   tmp_path: Path) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(f"sqlite:///{tmp_path / 'c.db'}", 200)
    server.drop_next(1, when="after")
    server.fail_endpoint("cancel", 1, 503)  # first a 503, then a cancel SendGrid applies but whose answer is lost
    server.fail_endpoint("cancel", 1, drop_after=True)
    report = world.send(world.new_issue(1), holding(server), 100, on_server_clock(server))
    assert report.status == "done" and server.calls["cancel"] == 3  # the third one: 400, already cancelled
    exactly_once(server, 200)


def _seed_cancellations(world: World, server: SendGridServer, mailer: SendGridMailer, send_at: float) -> None:
    """Ten cancellations of this database already at SendGrid (an earlier send's), to come free at send_at."""
    issue = world.new_issue(99)
    world.send(issue, mailer, 100, on_server_clock(server))
    with session_scope(world.engine) as s:
        send_id, batch_row = s.execute(select(SendBatch.send_id, SendBatch.id).limit(1)).one()
        for i in range(10):
            batch_id = mailer.new_batch_id()
            assert mailer.cancel_batch(batch_id)
            s.add(SendGridHold(send_id=send_id, batch_id=batch_row, attempt=100 + i, provider_batch_id=batch_id,
                               send_at=utcnow() + timedelta(seconds=send_at - time.time()), status="cancelled"))


def test_ten_cancellations_in_use_are_released_first_when_their_send_at_has_passed(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(f"sqlite:///{tmp_path / 'limit.db'}", 200)
    mailer = holding(server)
    _seed_cancellations(world, server, mailer, server.now() + 30)
    server.advance(120)  # their send_at has passed, but nobody has released them yet at SendGrid
    server.drop_next(1, when="after")
    before = len(server.accepted)
    mailer_again = holding(server)
    # Released at the next opportunity (this run's start), so the new cancel finds room among SendGrid's 10.
    report = world.send(world.new_issue(1), mailer_again, 100, on_server_clock(server))
    assert report.status == "done" and server.calls["release"] >= 10
    server.advance(3 * 3600)
    counts = {a: c for a, c in server.deliveries().items() if int(a[4:].split("@")[0]) < 200}
    taken_now = [a for a in server.accepted[before:] if a.state == "delivered"]
    assert sum(len(a.recipients) for a in taken_now) == 200 and set(counts.values()) == {2}  # issues 99 and 1


def test_ten_of_ours_in_use_hold_the_next_requests_longer_so_they_can_still_be_cancelled(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(f"sqlite:///{tmp_path / 'full.db'}", 200)
    mailer = holding(server)
    _seed_cancellations(world, server, mailer, server.now() + 3000)  # all ten in use for the next 50 minutes
    before = len(server.accepted)
    server.drop_next(1, when="after")
    notes: list[str] = []
    report = world.send(world.new_issue(1), mailer, 100,
                        on_server_clock(server, progress=lambda p: p.note and notes.append(p.note)))
    assert report.status == "done" and report.held_batches == []
    first = server.accepted[before]
    assert first.send_at and first.send_at - first.at > 3000 + 600  # its line falls after one comes free
    assert any("waiting" in n and "come free" in n for n in notes)
    server.advance(3 * 3600)
    copies: dict[str, int] = {}
    for acc in server.accepted[before:]:  # this issue's requests (issue 99 went to the same readers)
        for addr in acc.recipients if acc.state == "delivered" else []:
            copies[addr] = copies.get(addr, 0) + 1
    assert len(copies) == 200 and set(copies.values()) == {1}


def test_a_cancel_impossible_before_the_line_is_held_and_says_why(tmp_path: Path,
                                                                  sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(f"sqlite:///{tmp_path / 'other.db'}", 200)
    mailer = holding(server)
    for _ in range(10):  # another install on the account has all ten cancellations: we cannot know when
        assert mailer.cancel_batch(mailer.new_batch_id())
    server.drop_next(1, when="after")
    notes: list[str] = []
    report = world.send(world.new_issue(1), mailer, 100,
                        on_server_clock(server, progress=lambda p: p.note and notes.append(p.note)))
    # Genuinely unknown: no Activity API and no cancel in time. Held for the operator, with the reason.
    assert report.status == "held" and report.held_batches == [1] and report.held_recipients == 100
    assert any("SendGrid refused to cancel" in n for n in notes)
    with session_scope(world.engine) as s:
        error = s.scalar(select(SendBatch.error).where(SendBatch.status == "unknown"))
        assert s.scalar(select(Send.status)) == "held"
    assert error and "could not be confirmed 10 minutes before its send_at" in error


@BOTH_DATABASES
def test_a_fault_storm_ends_exactly_once_by_itself(db_url: str, sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    server.activity_api = False
    world = make_world(db_url, 3000)
    server.storm(seed=5, rate_429=0.20, rate_500=0.10, drop_before=0.05, lost_202=0.03)
    report = world.send(world.new_issue(1), holding(server), 50,
                        on_server_clock(server, concurrency=2, max_attempts=12, backoff_cap=5.0))
    assert report.status == "done" and report.sent_now == 3000
    statuses = {status for status, _ in server.rejected}
    assert statuses == {429, 500} and server.calls["cancel"] >= 3
    exactly_once(server, 3000)
    assert server.discarded_recipients > 0  # lost 202s: taken by SendGrid, cancelled in time


def test_settings_are_checked_with_a_clear_message(sendgrid_server: SendGridServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_SETTLE_BY", "guess")
    with pytest.raises(ConfigError, match="SENDGRID_SETTLE_BY: 'guess' is not one of activity, hold"):
        SendGridMailer(SENDGRID_TEST_KEY, sendgrid_server.url)
    monkeypatch.setenv("SENDGRID_SETTLE_BY", "hold")
    monkeypatch.setenv("SENDGRID_HOLD_SECONDS", "300")
    with pytest.raises(ConfigError, match="10 minutes before"):
        SendGridMailer(SENDGRID_TEST_KEY, sendgrid_server.url)
    monkeypatch.setenv("SENDGRID_HOLD_SECONDS", "900")
    mailer = SendGridMailer(SENDGRID_TEST_KEY, sendgrid_server.url)
    assert mailer.holds() and mailer.hold_seconds == 900


# -- D3: an unknown batch never blocks the others ------------------------------------------------------------

def test_an_unknown_batch_waits_aside_while_the_others_are_sent(tmp_path: Path,
                                                                sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    world = make_world(f"sqlite:///{tmp_path / 'aside.db'}", 1000)
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=300,
                            settle_by="activity")
    server.drop_next(1, when="after")
    waits: list[tuple[float, int]] = []
    report = world.send(world.new_issue(1), mailer, 100, SendOptions(
        concurrency=2, sleep=lambda s: waits.append((s, len(server.accepted)))))
    assert report.status == "done" and report.sent_now == 1000
    long = [(s, accepted) for s, accepted in waits if s > 100]
    assert len(long) == 1 and long[0][1] == 10  # it waited once, after the other nine batches had gone
    assert set(server.deliveries().values()) == {1} and len(server.deliveries()) == 1000


def test_an_account_without_activity_is_not_waited_for(tmp_path: Path, sendgrid_server: SendGridServer) -> None:
    server = sendgrid_server
    server.activity_api = False  # 403
    world = make_world(f"sqlite:///{tmp_path / 'no-activity.db'}", 300)
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=300,
                            settle_by="activity")  # the operator chose Activity: no hold, so it is held
    server.drop_next(1, when="after")
    waits: list[float] = []
    started = time.monotonic()
    report = world.send(world.new_issue(1), mailer, 100, SendOptions(sleep=waits.append))
    assert report.status == "held" and report.held_batches == [1]
    assert not [w for w in waits if w > 10] and time.monotonic() - started < 30
    assert server.calls["activity"] == 1  # asked once, 403: never waited for
