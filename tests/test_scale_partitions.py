"""Scale-mode workers partitioned from their database and from SendGrid, and the database restarted mid-send.

Each worker under test runs inside a network namespace of the test's own (tests/netns.py) and reaches the host
over two veth links: `db` to a PostgreSQL server the test started itself (never the machine's shared one) and
`api` to the local SendGrid server (tests/sendgrid_server.py). Cutting a link is a real partition: the worker's
open connections hear nothing more and new ones fail.

What a user cares about is judged at the provider: every subscriber got exactly one copy (the SendGrid server's
count of what it accepted), the ledger agrees, and the send finished without an operator decision. Batches whose
answer was lost are settled the documented way, by asking the Email Activity API what it accepted (the local
server answers it; SENDGRID_ACTIVITY_SETTLE_SECONDS shortens SendGrid's 300 s wait to the local server's 1 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("procrastinate", reason="scale mode needs the postgres extra")

import sqlalchemy as sa  # noqa: E402

from tests import netns  # noqa: E402
from tests.conftest_sendgrid import SENDGRID_TEST_KEY  # noqa: E402
from tests.scale_world import SLUG, make_world, stop_workers, write_schedule  # noqa: E402
from tests.sendgrid_server import Accepted, SendGridServer  # noqa: E402

SUBSCRIBERS = 3000
BATCH = 300
BATCHES = SUBSCRIBERS // BATCH
STALLED_AFTER = 4  # seconds without a heartbeat before a worker's jobs are retried by another


@pytest.fixture(scope="module")
def net() -> Iterator[tuple[netns.Namespace, netns.PrivatePostgres]]:
    """One namespace with `db` and `api` links, and a PostgreSQL server listening on the db link's host end."""
    reason = netns.unavailable() or netns.postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.namespace("w", ("db", "api")) as ns, netns.private_postgres([ns.host_ip("db")]) as pg:
        yield ns, pg


@dataclass
class Send:
    """One send of one issue to SUBSCRIBERS readers, with workers started in the namespace or on the host."""

    ns: netns.Namespace
    pg: netns.PrivatePostgres
    sendgrid: SendGridServer
    tmp: Path
    url: str  # the test's own way in (loopback: never cut)
    db_name: str
    issue_id: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[str]] = field(default_factory=list)

    def env(self, inside: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
        host = self.ns.host_ip("db") if inside else "127.0.0.1"
        env.update({
            "NEWSLETTER_DATABASE_URL": self.pg.url(host, self.db_name),
            "NEWSLETTER_SCHEDULES_DIR": str(self.tmp / "schedules"),
            "NEWSLETTER_OUTBOX_DIR": str(self.tmp / "outbox"),
            "NEWSLETTER_SECRET_KEY": "test-secret-key",
            "NEWSLETTER_BASE_URL": "https://news.example.com",
            "NEWSLETTER_MAILER": "sendgrid",
            "SENDGRID_API_HOST": self.sendgrid.url,
            "SENDGRID_API_KEY": SENDGRID_TEST_KEY,
            "SENDGRID_ACTIVITY_SETTLE_SECONDS": "1",
            "NEWSLETTER_SEND_PARALLEL": "2",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def newsletter(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "newsletter", *args], env=self.env(False), capture_output=True,
                              text=True, timeout=90, check=False)

    def start_worker(self, inside: bool) -> subprocess.Popen[bytes]:
        """A `newsletter worker` inside the namespace (reaching the host over the links) or on the host."""
        command = [sys.executable, "-m", "newsletter", "worker", "--heartbeat", "1",
                   "--stalled-after", str(STALLED_AFTER)]
        log = open(self.tmp / f"worker{len(self.workers)}-{'ns' if inside else 'host'}.log", "w")  # noqa: SIM115
        self.logs.append(log)
        argv = self.ns.argv(*command) if inside else command
        # `ip netns exec` execs the command in place: the pid is the worker's, the one its claims name.
        worker = subprocess.Popen(argv, env=self.env(inside), stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(worker)
        return worker

    def queue(self) -> None:
        queued = self.newsletter("scale", "send", SLUG, "--batch-size", str(BATCH))
        assert queued.returncode == 0, queued.stderr

    def scalar(self, sql: str, **params: Any) -> Any:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql), params).scalar()
        finally:
            engine.dispose()

    def batch_of(self, accepted: Accepted) -> int:
        return int(accepted.custom_args["batch"].split("-")[1])

    def stop_workers(self) -> None:
        stop_workers(self.workers, grace=20)
        for log in self.logs:
            log.close()

    def state(self) -> str:
        """The ledger's batches and the job queue, for a failure message."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                batches = conn.execute(sa.text(
                    "SELECT number, status, attempts, claimed_by, error FROM send_batch ORDER BY number")).all()
                jobs = conn.execute(sa.text(
                    "SELECT id, task_name, status, attempts, worker_id FROM procrastinate_jobs ORDER BY id")).all()
                workers = conn.execute(sa.text("SELECT * FROM procrastinate_workers")).all()
        except sa.exc.SQLAlchemyError as exc:
            return f"(no state: {exc})"
        finally:
            engine.dispose()
        return "\n".join(["batches:", *map(str, batches), "jobs:", *map(str, jobs), "workers:", *map(str, workers)])

    def log_text(self) -> str:
        exits = ", ".join(f"pid {w.pid}: {w.poll()}" for w in self.workers)
        tails = (f"--- {Path(f.name).name}\n{Path(f.name).read_text(errors='replace')[-4000:]}" for f in self.logs)
        return "\n".join([self.state(), f"worker exit codes (None: running): {exits}", *tails])

    def assert_exactly_once(self) -> None:
        copies = self.sendgrid.deliveries()
        assert len(copies) == SUBSCRIBERS, f"{SUBSCRIBERS - len(copies)} readers got nothing"
        assert set(copies.values()) == {1}, f"{sum(c - 1 for c in copies.values())} duplicate copies"
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            deliveries = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT subscriber_id) FROM delivery")).one()
            batches = conn.execute(sa.text("SELECT status, count(*) FROM send_batch GROUP BY status")).all()
            send = conn.execute(sa.text("SELECT status, sent FROM send")).one()
            issue = conn.execute(sa.text("SELECT status FROM issue WHERE id = :i"), {"i": self.issue_id}).scalar()
        engine.dispose()
        assert tuple(deliveries) == (SUBSCRIBERS, SUBSCRIBERS)  # the ledger agrees with the provider
        assert dict(batches) == {"sent": BATCHES}
        assert tuple(send) == ("done", SUBSCRIBERS)
        assert issue == "sent"


@pytest.fixture
def send(net: tuple[netns.Namespace, netns.PrivatePostgres], tmp_path: Path) -> Iterator[Send]:
    ns, pg = net
    db_name = pg.create_database(f"t_{uuid.uuid4().hex[:10]}")
    url = pg.url("127.0.0.1", db_name)
    world = make_world(url, SUBSCRIBERS)
    world.engine.dispose()
    write_schedule(tmp_path / "schedules")
    # The server listens on the api link's host end: the namespace reaches it only over that link.
    with SendGridServer(SENDGRID_TEST_KEY, host=ns.host_ip("api")) as sendgrid:
        run = Send(ns, pg, sendgrid, tmp_path, url, db_name, world.issue_id)
        from newsletter.scale.app import ensure_schema

        assert ensure_schema(url)  # the job tables, as `newsletter db upgrade --scale` makes them
        try:
            yield run
        finally:
            sendgrid.on_accept = None
            for link in ns.links:
                ns.restore(link)
            if not pg.running():
                pg.start()
            run.stop_workers()
            from newsletter.store.db import _engine_for

            _engine_for.cache_clear()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, run: Send | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    logs = f"\n{run.log_text()}" if run else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{logs}")


def on_nth_accept(run: Send, n: int, action: Callable[[Accepted], None]) -> threading.Event:
    """Call `action` (in the server's thread, before it answers) when the n-th request is accepted."""
    fired = threading.Event()
    lock = threading.Lock()
    taken: list[bool] = []

    def hook(accepted: Accepted) -> None:
        with lock:
            if taken or len(run.sendgrid.accepted) < n:
                return
            taken.append(True)
        try:
            action(accepted)
        finally:  # only once the action is done: the test reads what it recorded
            fired.set()

    run.sendgrid.on_accept = hook
    return fired


def send_status(run: Send) -> str | None:
    return run.scalar("SELECT status FROM send")


def test_worker_cut_off_from_postgresql_mid_batch_the_others_finish_the_send(send: Send) -> None:
    """The provider accepted the worker's batch and answered; then its database link went: it cannot record it.

    The rest of the fleet (a worker on the host) finishes the send while the partition lasts: PostgreSQL drops
    the silent worker's connections (and the batch lock they held), its job is found stalled and retried by the
    other worker, which asks SendGrid what it accepted for that batch instead of sending it again. When the
    network comes back, the cut-off worker sends nothing more.

    The server drops silent peers within seconds because the test tuned it so (tcp_keepalives_*,
    tcp_user_timeout: tests/netns.py); with PostgreSQL's defaults the lock would stay held, and that one batch
    would wait for the partition to heal, to be recorded by the worker that sent it.
    """
    run = send
    inside = run.start_worker(inside=True)
    cut: dict[str, int] = {}

    def cut_db(accepted: Accepted) -> None:
        run.ns.cut("db")  # before the answer: the worker gets its 202 and has nowhere to write it
        cut["batch"] = run.batch_of(accepted)

    fired = on_nth_accept(run, 3, cut_db)
    run.queue()
    wait_for(fired.is_set, 60, "the third batch to reach SendGrid", run)
    assert run.scalar("SELECT claimed_by FROM send_batch WHERE number = :n", n=cut["batch"]).endswith(
        f":{inside.pid}")
    run.start_worker(inside=False)
    wait_for(lambda: send_status(run) == "done", 60, "the host worker to finish the send", run)
    assert inside.poll() is None  # still cut off, not dead: nobody waited for it
    # The interrupted batch was settled by the other worker from SendGrid's activity log, not sent again.
    settled_by = run.scalar("SELECT claimed_by FROM send_batch WHERE number = :n", n=cut["batch"])
    assert not settled_by.endswith(f":{inside.pid}")
    assert len(run.sendgrid.accepted) == BATCHES
    requests = run.sendgrid.requests

    run.ns.restore("db")
    time.sleep(STALLED_AFTER)  # the cut-off worker hears its connections were dropped, and carries on
    assert run.sendgrid.requests == requests
    run.stop_workers()
    run.assert_exactly_once()


def test_worker_cut_off_from_sendgrid_after_its_request_was_accepted(send: Send) -> None:
    """SendGrid accepted the worker's batch; then the worker's link to it went, and the 202 never arrives.

    While the partition lasts the worker is alive and heartbeating, so nobody takes its batch from it (a resend
    would be the duplicate); the others go on. When the link comes back, the connection is found dead (reset, as
    the provider's side has long given up on it): the outcome is unknown, and the worker settles the batch from
    SendGrid's activity log instead of sending it again.
    """
    run = send
    inside = run.start_worker(inside=True)
    partitioned, release = threading.Event(), threading.Event()
    cut: dict[str, int] = {}

    state = threading.Lock()

    def on_accept(accepted: Accepted) -> None:
        with state:
            n = len(run.sendgrid.accepted)
            if n == 2:
                # One worker sends one batch at a time: its next request is to be accepted, then cut off.
                run.sendgrid.drop_next(1, when="after")
            if n != 3 or partitioned.is_set():
                return
            run.ns.cut("api")
            cut["batch"] = run.batch_of(accepted)
            partitioned.set()
        release.wait(60)  # the answer waits for the link; then the server resets the connection instead

    run.sendgrid.on_accept = on_accept
    run.queue()
    wait_for(partitioned.is_set, 60, "the third batch to reach SendGrid", run)
    try:
        run.start_worker(inside=False)
        # The rest of the fleet finishes every other batch; the partitioned worker's stays in flight.
        wait_for(lambda: run.scalar("SELECT count(*) FROM send_batch WHERE status = 'sent'") == BATCHES - 1, 60,
                 "the host worker to send the other batches", run)
        time.sleep(STALLED_AFTER + 2)  # long enough for a wrong takeover: a heartbeating worker is not stalled
        held = run.scalar("SELECT status || ' ' || claimed_by FROM send_batch WHERE number = :n", n=cut["batch"])
        assert held.startswith("sending ") and held.endswith(f":{inside.pid}"), held
        assert send_status(run) != "done"
    finally:
        run.ns.restore("api")
        release.set()
    wait_for(lambda: send_status(run) == "done", 60, "the partitioned worker to settle its batch", run)
    settled_by = run.scalar("SELECT claimed_by FROM send_batch WHERE number = :n", n=cut["batch"])
    assert settled_by.endswith(f":{inside.pid}")
    assert len(run.sendgrid.accepted) == BATCHES  # nothing was sent twice, by either worker
    run.stop_workers()
    run.assert_exactly_once()


def test_postgresql_restarted_mid_send(send: Send) -> None:
    """The database goes down after SendGrid accepted a batch and before the worker could record it, and comes
    back a few seconds later (a restart, a failover): the send finishes by itself, exactly once."""
    run = send
    inside = run.start_worker(inside=True)
    restarted = threading.Event()
    cut: dict[str, int] = {}

    def restart_postgres(accepted: Accepted) -> None:
        cut["batch"] = run.batch_of(accepted)
        run.pg.stop("fast")  # every connection is closed; the 202 is answered into a dead database

        def back() -> None:
            time.sleep(3)
            run.pg.start()
            restarted.set()

        threading.Thread(target=back, daemon=True).start()

    on_nth_accept(run, 3, restart_postgres)
    run.queue()
    wait_for(restarted.is_set, 60, "PostgreSQL to be restarted", run)
    wait_for(lambda: send_status(run) == "done", 45, "the send to finish after the restart", run)
    assert inside.poll() is None, run.log_text()  # the worker rode out the restart
    assert len(run.sendgrid.accepted) == BATCHES
    run.stop_workers()
    assert inside.returncode == 0  # and SIGTERM still stops it for good
    run.assert_exactly_once()
