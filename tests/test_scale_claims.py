"""Batch claims in scale mode: row locks (FOR UPDATE SKIP LOCKED) so that workers never take the same batch."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa
from sqlalchemy import func

from newsletter.scale import ledger
from newsletter.scale.app import ensure_schema
from newsletter.scale.tasks import begin_send
from newsletter.store.models import Send, SendBatch
from tests.conftest import postgres_schema
from tests.scale_world import make_world, write_schedule

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(tmp_path):  # noqa: ANN001, ANN201
    with postgres_schema() as url:
        w = make_world(url, subscribers=2_050)
        from newsletter.config import load_newsletter

        nl = load_newsletter(write_schedule(tmp_path / "schedules"))
        w.send_id = begin_send(w.engine, nl, w.issue_id, "outbox", batch_size=100)
        yield w


def test_planning_covers_the_audience_once_in_batches(world) -> None:  # noqa: ANN001
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(SendBatch.number, SendBatch.first_subscription_id,
                                      SendBatch.last_subscription_id, SendBatch.recipients, SendBatch.status)
                            .where(SendBatch.send_id == world.send_id).order_by(SendBatch.number)).all()
    assert [r.number for r in rows] == list(range(1, 22))
    assert sum(r.recipients for r in rows) == 2_050 and rows[-1].recipients == 50
    assert all(r.status == "pending" for r in rows)
    assert all(a.last_subscription_id < b.first_subscription_id for a, b in zip(rows, rows[1:], strict=False))
    # Planning again (a second start_send job) finds the plan instead of writing another.
    assert ledger.plan_batches(world.engine, world.send_id) == 21


def test_a_claimer_skips_a_batch_another_holds_instead_of_waiting_or_taking_it(world) -> None:  # noqa: ANN001
    other = sa.create_engine(world.url)
    with other.connect() as conn:
        txn = conn.begin()
        # Another worker is in the middle of claiming batch 1: it holds the row lock, nothing committed yet.
        held = conn.execute(sa.text("SELECT id FROM send_batch WHERE send_id = :s AND number = 1 FOR UPDATE"),
                            {"s": world.send_id}).scalar_one()
        result: list = []
        claimer = threading.Thread(target=lambda: result.append(ledger.claim(world.engine, world.send_id, "me")))
        claimer.start()
        claimer.join(timeout=3)
        waited = claimer.is_alive()
        txn.rollback()  # releases a claimer stuck on the lock, so a failing test does not hang
        claimer.join()
        assert not waited, "the claimer waited for another worker's lock instead of skipping the batch"
        mine = result[0]
        assert mine is not None and mine.id != held and mine.number == 2
    other.dispose()
    # Once released, batch 1 is there to take.
    assert ledger.claim(world.engine, world.send_id, "me").number == 1


def test_concurrent_claimers_take_every_batch_exactly_once(world) -> None:  # noqa: ANN001
    taken: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(n: int) -> None:
        start.wait()
        try:
            while (batch := ledger.claim(world.engine, world.send_id, f"w{n}")) is not None:
                with lock:
                    taken.append(batch.number)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(taken) == list(range(1, 22)), Counter(taken).most_common(3)


def test_a_retried_job_resumes_its_own_batch_and_a_dead_jobs_batch_is_taken_over(world) -> None:  # noqa: ANN001
    ensure_schema(world.url)
    first = ledger.claim(world.engine, world.send_id, "host:1", job_id=41)
    # The same job, retried after its worker died, comes back to the batch it held.
    again = ledger.claim(world.engine, world.send_id, "host:2", job_id=41)
    assert again.id == first.id
    # Another job never takes a batch held by a job that may still come back ... until the pending ones are
    # gone; then a batch whose job no longer exists in the queue (failed, deleted) is taken over.
    numbers = []
    while (b := ledger.claim(world.engine, world.send_id, "host:3", job_id=99)) is not None and b.id != first.id:
        numbers.append(b.number)
        with world.engine.begin() as conn:
            conn.execute(sa.update(SendBatch).where(SendBatch.id == b.id).values(status="sent"))
    assert b is not None and b.id == first.id and len(numbers) == 20


def test_a_batch_in_the_hands_of_a_live_process_is_never_taken_over(world) -> None:  # noqa: ANN001
    ensure_schema(world.url)
    with world.engine.begin() as conn:  # leave one batch to take
        conn.execute(sa.update(SendBatch).where(SendBatch.send_id == world.send_id, SendBatch.number > 1)
                     .values(status="sent"))
    with ledger.guard_connection(world.engine) as alive:
        mine = ledger.claim(world.engine, world.send_id, "host:1", job_id=41, guard=alive)
        assert mine.number == 1
        # Job 41 is not in the queue (the queue thinks it is gone), but its process still holds the batch's lock.
        with ledger.guard_connection(world.engine) as other:
            assert ledger.claim(world.engine, world.send_id, "host:2", job_id=77, guard=other) is None
    # The process is gone (its lock with it): now another takes the batch over.
    with ledger.guard_connection(world.engine) as other:
        assert ledger.claim(world.engine, world.send_id, "host:2", job_id=77, guard=other).number == 1


def test_a_send_begun_by_newsletter_send_is_planned_from_where_it_stopped(tmp_path) -> None:  # noqa: ANN001
    from newsletter.deliver.ledger import start_send

    with postgres_schema() as url:
        w = make_world(url, subscribers=2_050)
        send_id = start_send(w.engine, w.issue_id, w.newsletter_id, "outbox", 100)
        with w.engine.begin() as conn:  # `newsletter send` got through two batches, then stopped
            first = conn.execute(sa.text("SELECT min(id) FROM subscription")).scalar()
            conn.execute(sa.insert(SendBatch), [
                {"send_id": send_id, "number": n + 1, "first_subscription_id": first + 100 * n,
                 "last_subscription_id": first + 100 * n + 99, "recipients": 100, "status": "sent"}
                for n in range(2)])
        assert ledger.plan_batches(w.engine, send_id) == 21
        with w.engine.connect() as conn:
            rows = conn.execute(sa.select(SendBatch.number, SendBatch.first_subscription_id, SendBatch.recipients)
                                .where(SendBatch.status == "pending").order_by(SendBatch.number)).all()
        assert rows[0] == (3, first + 200, 100) and sum(r.recipients for r in rows) == 1_850
        assert ledger.plan_batches(w.engine, send_id) == 21


def test_one_runner_per_send_between_the_workers_and_newsletter_send(world) -> None:  # noqa: ANN001
    from newsletter.deliver.errors import SendError
    from newsletter.deliver.lease import SendLease

    # begin_send (the fixture) took the send's lease for the workers: a hand-run `newsletter send` is refused.
    with pytest.raises(SendError, match="already running in the scale-mode workers"):
        SendLease(world.engine, world.send_id).acquire()
    with world.engine.begin() as conn:  # the workers stopped two minutes ago
        conn.execute(sa.text("UPDATE lease SET expires_at = expires_at - interval '1 hour'"))
    hand = SendLease(world.engine, world.send_id)
    hand.acquire()
    try:  # and now the workers leave it to the process that holds it
        with pytest.raises(SendError, match="the workers leave it alone"):
            ledger.take_lease(world.engine, world.send_id)
    finally:
        hand.release()
    ledger.take_lease(world.engine, world.send_id)


def test_two_installs_in_schemas_of_one_database_never_hold_each_others_batches(world, tmp_path) -> None:  # noqa: ANN001
    from newsletter.config import load_newsletter

    ensure_schema(world.url)
    with postgres_schema() as other_url:  # staging beside production: the same batch ids, another schema
        other = make_world(other_url, subscribers=150)
        nl = load_newsletter(write_schedule(tmp_path / "other-schedules"))
        other.send_id = begin_send(other.engine, nl, other.issue_id, "outbox", batch_size=100)
        ensure_schema(other_url)
        with ledger.guard_connection(world.engine) as here, ledger.guard_connection(other.engine) as there:
            mine = ledger.claim(world.engine, world.send_id, "host:1", job_id=41, guard=here)
            theirs = ledger.claim(other.engine, other.send_id, "host:2", job_id=41, guard=there)
            assert mine is not None and theirs is not None and mine.id == theirs.id  # one key apart: the schema
            assert mine.number == theirs.number == 1


def test_a_process_that_lost_its_batch_while_cut_off_cannot_mark_it_sending_again(world) -> None:  # noqa: ANN001
    """A worker claims a batch and is cut off from the database before its `sending` mark; its job is retried
    elsewhere, and that worker takes the batch over and marks its attempt. When the first worker's link comes
    back, its late mark must fail (it would send the batch a second time), and the batch stays the other's."""
    from newsletter.deliver.errors import BatchTaken
    from newsletter.deliver.ledger import Ledger

    ensure_schema(world.url)
    cut_off = ledger.claim(world.engine, world.send_id, "job:41:inside:1", job_id=41)
    taker = ledger.claim(world.engine, world.send_id, "job:41:host:2", job_id=41)  # the retried job, elsewhere
    assert taker.id == cut_off.id and taker.attempts == cut_off.attempts == 0
    book = Ledger(world.engine, world.send_id, world.newsletter_id)
    book.sending(taker, "job:41:host:2")
    with pytest.raises(BatchTaken, match=f"batch {cut_off.number} was taken over"):
        book.sending(cut_off, "job:41:inside:1")
    with world.engine.connect() as conn:
        status, attempts, claimed_by = conn.execute(sa.select(
            SendBatch.status, SendBatch.attempts, SendBatch.claimed_by).where(SendBatch.id == taker.id)).one()
    assert (status, attempts, claimed_by) == ("sending", 1, "job:41:host:2")
    assert cut_off.status == "pending" and cut_off.attempts == 0  # the loser's copy is left as it was


def test_a_claim_on_an_ended_send_takes_nothing(world) -> None:  # noqa: ANN001
    """The send's status is read in the claim's own transaction: once an operator stopped it for good (or
    another worker finished it), a worker's next claim takes no batch and says why."""
    with world.engine.connect() as claims:
        first = ledger.claim_on(claims, world.send_id, "me", unless_ended=True)
        assert first.status == "running" and first.batch is not None and first.batch.number == 1
        with world.engine.begin() as conn:
            conn.execute(sa.update(Send).where(Send.id == world.send_id).values(status="failed"))
        stopped = ledger.claim_on(claims, world.send_id, "me", unless_ended=True)
    assert stopped.status == "failed" and stopped.batch is None
    with world.engine.connect() as conn:
        claimed = conn.execute(sa.select(func.count()).select_from(SendBatch).where(
            SendBatch.send_id == world.send_id, SendBatch.status != "pending")).scalar_one()
    assert claimed == 1


def test_a_send_planned_in_two_steps_is_not_closed_between_them(tmp_path) -> None:  # noqa: ANN001
    """The first batches are planned, the workers start on them, and the rest is planned meanwhile: a worker
    that has sent every batch planned so far must not close the send with readers still unplanned."""
    from newsletter.config import load_newsletter

    with postgres_schema() as url:
        w = make_world(url, subscribers=2_050)
        nl = load_newsletter(write_schedule(tmp_path / "schedules"))
        send_id = begin_send(w.engine, nl, w.issue_id, "outbox", batch_size=100, first=5)
        with w.engine.connect() as conn:
            assert ledger.planning_left(conn, send_id)

        def send_all() -> None:
            with w.engine.begin() as conn:
                conn.execute(sa.update(SendBatch).where(SendBatch.send_id == send_id).values(status="sent"))

        send_all()  # the workers got through the first five
        assert ledger.finish_if_done(w.engine, send_id) is None
        assert ledger.plan_batches(w.engine, send_id) == 21  # the rest, after the first five
        with w.engine.connect() as conn:
            assert not ledger.planning_left(conn, send_id)
            planned = conn.execute(sa.select(SendBatch.first_subscription_id, SendBatch.last_subscription_id,
                                             SendBatch.recipients).where(SendBatch.send_id == send_id)
                                   .order_by(SendBatch.number)).all()
        assert sum(r.recipients for r in planned) == 2_050
        assert all(a.last_subscription_id < b.first_subscription_id for a, b in zip(planned, planned[1:],
                                                                                        strict=False))
        assert ledger.finish_if_done(w.engine, send_id) is None  # 16 batches still pending
        send_all()
        assert ledger.finish_if_done(w.engine, send_id) == "done"


def test_a_batch_given_back_unsent_is_the_next_claimers_at_once(world) -> None:  # noqa: ANN001
    """A job whose built batch waited too long for the request before it gives it back: it is pending again,
    its lock released, and another worker takes it (its readers read again, nobody of it sent)."""
    with ledger.guard_connection(world.engine) as mine, world.engine.connect() as claims:
        held = ledger.claim_on(claims, world.send_id, "host:1", 41, mine, own_first=False,
                               newsletter_id=world.newsletter_id).batch
        assert held is not None and held.number == 1 and len(held.rows) == 100
        with ledger.guard_connection(world.engine) as other:
            # Held (its row says claimed, its lock is taken): another claimer goes on to batch 2.
            assert ledger.claim(world.engine, world.send_id, "host:2", 77, other).number == 2
            ledger.give_back(claims, mine, held.id)
            again = ledger.claim(world.engine, world.send_id, "host:2", 77, other, own_first=False,
                                 newsletter_id=world.newsletter_id)
    assert again.id == held.id and again.status == "pending" and len(again.rows) == 100
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(SendBatch.claimed_by).where(SendBatch.id == held.id)).scalar() == "job:77:host:2"


def test_suppressed_readers_inside_a_planned_batch_are_not_in_its_recipients(tmp_path) -> None:  # noqa: ANN001
    """Batches are planned over the subscriptions alone (no join to the addresses); the claim still leaves out
    an address suppressed everywhere or for this newsletter, and every other reader is in exactly one batch."""
    from newsletter.config import load_newsletter
    from newsletter.store.models import Subscriber, Suppression

    with postgres_schema() as url:
        w = make_world(url, subscribers=1_000)
        with w.engine.begin() as conn:
            conn.execute(sa.insert(Suppression), [
                {"email": "user7@example.com", "newsletter_id": None, "reason": "bounce"},
                {"email": "user512@example.com", "newsletter_id": w.newsletter_id, "reason": "unsubscribe"},
                {"email": "user999@example.com", "newsletter_id": w.newsletter_id, "reason": "complaint"}])
            everyone = set(conn.execute(sa.select(Subscriber.id)).scalars())
            suppressed = set(conn.execute(sa.select(Subscriber.id).where(Subscriber.email.in_(
                ["user7@example.com", "user512@example.com", "user999@example.com"]))).scalars())
        nl = load_newsletter(write_schedule(tmp_path / "schedules"))
        send_id = begin_send(w.engine, nl, w.issue_id, "outbox", batch_size=100)
        got: list[int] = []
        while (batch := ledger.claim(w.engine, send_id, "me", newsletter_id=w.newsletter_id)) is not None:
            assert len(batch.rows) <= 100
            got.extend(row[1] for row in batch.rows)
        assert len(suppressed) == 3
        assert sorted(got) == sorted(everyone - suppressed)
        with w.engine.connect() as conn:
            assert conn.execute(sa.select(Send.total).where(Send.id == send_id)).scalar() == 997
