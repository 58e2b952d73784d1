"""Three `newsletter worker` processes share one send on PostgreSQL; one is killed with SIGKILL midway, at the
worst moment: the provider (the local SendGrid server) has accepted its batch and not yet answered.

The end state a user cares about: every subscriber got the issue exactly once (by the provider's count), the
ledger agrees, and the send finished without anyone restarting anything (the dead worker's job was found
stalled and retried by another worker, which asked the provider what it had accepted instead of sending again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

from tests.conftest import postgres_schema
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.scale_world import SLUG, make_world, stop_workers, write_schedule
from tests.sendgrid_server import Accepted, SendGridServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SUBSCRIBERS = 20_000
BATCH = 1000


def _env(tmp_path: Path, url: str, sendgrid: SendGridServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SCHEDULES_DIR": str(tmp_path / "schedules"),
        "NEWSLETTER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NEWSLETTER_SECRET_KEY": "test-secret-key",
        "NEWSLETTER_BASE_URL": "https://news.example.com",
        "NEWSLETTER_MAILER": "sendgrid",
        "SENDGRID_API_HOST": sendgrid.url,
        "SENDGRID_API_KEY": SENDGRID_TEST_KEY,
        # The local server's activity log is complete at once; SendGrid's lags (300 s by default).
        "SENDGRID_ACTIVITY_SETTLE_SECONDS": "1",
        "NEWSLETTER_SEND_PARALLEL": "6",
        # Four batches planned up front: the rest is planned by a send job while the workers send (and one dies).
        "NEWSLETTER_PLAN_FIRST": "4",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _newsletter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newsletter", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _send_done(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM send")).scalar() == "done"


def _worker(env: dict[str, str], log: IO[str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--heartbeat", "1", *extra], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _one_long_job(
    tmp_path: Path, url: str, sendgrid: SendGridServer, job_seconds: int
) -> tuple[sa.Engine, dict[str, str]]:
    """The world, its job tables, and an environment where one send job at a time may run `job_seconds`."""
    world = make_world(url, SUBSCRIBERS)
    write_schedule(tmp_path / "schedules")
    env = {**_env(tmp_path, url, sendgrid), "NEWSLETTER_SEND_JOB_SECONDS": str(job_seconds),
           "NEWSLETTER_SEND_PARALLEL": "1"}
    assert _newsletter(env, "db", "upgrade", "--scale").returncode == 0
    return world.engine, env


def test_three_workers_one_killed_every_address_gets_the_issue_exactly_once(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    with postgres_schema() as url:
        world = make_world(url, SUBSCRIBERS)
        engine = world.engine
        write_schedule(tmp_path / "schedules")
        env = _env(tmp_path, url, sendgrid_server)
        upgraded = _newsletter(env, "db", "upgrade", "--scale")
        assert upgraded.returncode == 0, upgraded.stderr
        assert "job tables" in upgraded.stdout.lower()
        logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]  # noqa: SIM115 - closed below
        workers = [_worker(env, log, "--stalled-after", "4") for log in logs]
        pids = {str(w.pid): w for w in workers}
        killed: dict[str, str] = {}
        one_kill = threading.Lock()  # the server answers requests on several threads at once

        def kill_at_the_worst_moment(accepted: Accepted) -> None:
            # A quarter in, the provider has this batch and its sender is about to hear so: kill the sender.
            with one_kill:
                if not killed and sendgrid_server.accepted_recipients >= SUBSCRIBERS // 4:
                    kill_sender_of(accepted)

        def kill_sender_of(accepted: Accepted) -> None:
            number = accepted.custom_args["batch"].split("-")[1]
            with engine.connect() as conn:
                claimed_by = conn.execute(sa.text("SELECT claimed_by FROM send_batch WHERE number = :n"),
                                          {"n": int(number)}).scalar()
            pid = claimed_by.rsplit(":", 1)[-1]
            if pid in pids:
                os.kill(int(pid), signal.SIGKILL)
                killed.update(pid=pid, batch=number)

        try:
            sendgrid_server.on_accept = kill_at_the_worst_moment
            queued = _newsletter(env, "scale", "send", SLUG, "--batch-size", str(BATCH))
            assert queued.returncode == 0, queued.stderr

            _wait(lambda: _send_done(engine), 50, "the send to finish without the killed worker")
        finally:
            sendgrid_server.on_accept = None
            stop_workers(workers)
            for log in logs:
                log.close()

        assert killed, "no worker was killed"
        assert [w.returncode for w in workers].count(-signal.SIGKILL) == 1
        assert pids[killed["pid"]].returncode == -signal.SIGKILL
        copies = sendgrid_server.deliveries()
        assert len(copies) == SUBSCRIBERS and set(copies.values()) == {1}  # the provider's count
        with engine.connect() as conn:
            deliveries = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT subscriber_id), count(DISTINCT email) FROM delivery")).one()
            batches = conn.execute(sa.text(
                "SELECT number, status, claimed_by FROM send_batch ORDER BY number")).all()
            issue = conn.execute(sa.text("SELECT status FROM issue WHERE id = :i"), {"i": world.issue_id}).scalar()
        assert tuple(deliveries) == (SUBSCRIBERS, SUBSCRIBERS, SUBSCRIBERS)  # the ledger's count
        assert issue == "sent"
        assert [b.status for b in batches] == ["sent"] * (SUBSCRIBERS // BATCH)
        # The dead worker's batch was settled by another worker: asked of the provider, not sent again.
        settled = next(b for b in batches if b.number == int(killed["batch"]))
        assert not settled.claimed_by.endswith(f":{killed['pid']}")
        assert len(sendgrid_server.accepted) == SUBSCRIBERS // BATCH


def test_a_worker_asked_to_stop_mid_send_ends_its_long_job_at_the_next_batch(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """SIGTERM in the middle of a send job that may go on for a minute: the worker finishes the batches it has in
    flight, leaves the rest pending (nothing claimed or sending), exits 0 within seconds, and a worker started
    later sends the rest, each address exactly once."""
    with postgres_schema() as url:
        engine, env = _one_long_job(tmp_path, url, sendgrid_server, job_seconds=60)
        log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
        first = _worker(env, log)
        asked: list[float] = []
        released = threading.Event()

        def stop_at_the_third_request(accepted: Accepted) -> None:
            if len(sendgrid_server.accepted) == 3 and not asked:
                first.send_signal(signal.SIGTERM)
                asked.append(time.monotonic())
            if asked:
                released.wait(5)  # the provider answers slowly from here: the job must not wait for it to end

        later = None
        try:
            sendgrid_server.on_accept = stop_at_the_third_request
            queued = _newsletter(env, "scale", "send", SLUG, "--batch-size", str(BATCH))
            assert queued.returncode == 0, queued.stderr
            _wait(lambda: asked, 30, "the third request")
            released.set()
            first.wait(timeout=20)
            stopped_in = time.monotonic() - asked[0]
            sendgrid_server.on_accept = None
            assert first.returncode == 0
            assert stopped_in < 8, f"the worker took {stopped_in:.1f}s to stop"
            with engine.connect() as conn:
                states = dict(conn.execute(sa.text("SELECT status, count(*) FROM send_batch GROUP BY status")).all())
                send_status = conn.execute(sa.text("SELECT status FROM send")).scalar()
            assert send_status == "running"
            assert set(states) <= {"sent", "pending"} and states.get("pending"), states  # nothing left half-done
            later = _worker(env, log)
            _wait(lambda: _send_done(engine), 50, "the second worker to finish the send")
        finally:
            released.set()
            sendgrid_server.on_accept = None
            stop_workers([first, later])
            log.close()
        copies = sendgrid_server.deliveries()
        assert len(copies) == SUBSCRIBERS and set(copies.values()) == {1}


def test_a_long_send_job_hands_back_the_locks_of_its_sent_batches(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """Every batch a job claims takes an advisory lock, a slot of PostgreSQL's shared lock table (6,400 by default
    for the whole server). A job that sends 200 batches must not hold 200: the sent ones' go back as it goes."""
    with postgres_schema() as url:
        engine, env = _one_long_job(tmp_path, url, sendgrid_server, job_seconds=120)
        held: list[int] = []
        watcher = sa.create_engine(url, poolclass=sa.pool.NullPool)

        def count_locks(accepted: Accepted) -> None:
            # This schema's batch locks only (tests in other schemas of the database run beside this one): the
            # two-key form shows its first key, BATCH_LOCK, as classid.
            with watcher.connect() as conn:
                held.append(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                    "AND classid = CAST(CAST(hashtext('newsletter-batch:' || coalesce(current_schema(), '')) "
                    "AS bigint) & 4294967295 AS oid)")).scalar())

        log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
        worker = _worker(env, log)
        try:
            sendgrid_server.on_accept = count_locks
            queued = _newsletter(env, "scale", "send", SLUG, "--batch-size", "100")
            assert queued.returncode == 0, queued.stderr
            _wait(lambda: _send_done(engine), 60, "the send to finish")
        finally:
            sendgrid_server.on_accept = None
            stop_workers([worker])
            log.close()
            watcher.dispose()
        assert len(held) == SUBSCRIBERS // 100
        assert max(held) <= 70, f"up to {max(held)} batch locks held at once"  # 64 sent + those in flight
        copies = sendgrid_server.deliveries()
        assert len(copies) == SUBSCRIBERS and set(copies.values()) == {1}
