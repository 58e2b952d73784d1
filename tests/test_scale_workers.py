"""Three `newsletter worker` processes share one send on PostgreSQL; one is killed with SIGKILL midway.

The end state a user cares about: every subscriber got the issue exactly once, the ledger agrees, and the send
finished without anyone restarting anything (the dead worker's job was found stalled and retried by another).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import postgres_schema
from tests.scale_world import SLUG, make_world, write_schedule

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# The outbox writes one MIME file per address (about 5 ms each here): a smaller audience keeps this test fast.
SUBSCRIBERS = 6_000
BATCH = 500


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SCHEDULES_DIR": str(tmp_path / "schedules"),
        "NEWSLETTER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NEWSLETTER_SECRET_KEY": "test-secret-key",
        "NEWSLETTER_BASE_URL": "https://news.example.com",
        "NEWSLETTER_MAILER": "outbox",
        "NEWSLETTER_SEND_PARALLEL": "6",
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


def test_three_workers_one_killed_every_address_gets_the_issue_exactly_once(tmp_path: Path) -> None:
    with postgres_schema() as url:
        world = make_world(url, SUBSCRIBERS)
        write_schedule(tmp_path / "schedules")
        env = _env(tmp_path, url)
        upgraded = _newsletter(env, "db", "upgrade", "--scale")
        assert upgraded.returncode == 0, upgraded.stderr
        assert "job tables" in upgraded.stdout.lower()
        logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]  # noqa: SIM115 - closed below
        workers = [subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--heartbeat", "1",
                                     "--stalled-after", "4"], env=env, stdout=log, stderr=subprocess.STDOUT)
                   for log in logs]
        try:
            queued = _newsletter(env, "scale", "send", SLUG, "--batch-size", str(BATCH))
            assert queued.returncode == 0, queued.stderr
            engine = world.engine
            pids = {str(w.pid): w for w in workers}

            def busy_victim() -> str | None:
                # A worker in the middle of a batch (the provider call is under way), once a fifth is delivered.
                with engine.connect() as conn:
                    sent = conn.execute(sa.text("SELECT coalesce(max(sent), 0) FROM send")).scalar()
                    if sent < SUBSCRIBERS // 5:
                        return None
                    for claimed_by in conn.execute(sa.text(
                            "SELECT claimed_by FROM send_batch WHERE status = 'sending'")).scalars():
                        pid = claimed_by.rsplit(":", 1)[-1]
                        if pid in pids:
                            return pid
                return None

            victim = _wait(busy_victim, 40, "a worker busy with a batch")
            with engine.connect() as conn:
                held = conn.execute(sa.text("SELECT number FROM send_batch WHERE status = 'sending' AND "
                                            "claimed_by LIKE :pat"), {"pat": f"%:{victim}"}).scalars().all()
            os.kill(int(victim), signal.SIGKILL)
            pids[victim].wait(timeout=10)

            def finished() -> bool:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT status FROM send")).scalar() == "done"

            _wait(finished, 45, "the send to finish without the killed worker")
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    w.kill()
            for log in logs:
                log.close()

        with engine.connect() as conn:
            deliveries = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT subscriber_id), count(DISTINCT email) FROM delivery")).one()
            batches = conn.execute(sa.text(
                "SELECT number, status, claimed_by FROM send_batch ORDER BY number")).all()
            issue = conn.execute(sa.text("SELECT status FROM issue WHERE id = :i"), {"i": world.issue_id}).scalar()
        assert tuple(deliveries) == (SUBSCRIBERS, SUBSCRIBERS, SUBSCRIBERS)
        assert issue == "sent"
        assert [b.status for b in batches] == ["sent"] * (SUBSCRIBERS // BATCH)
        # The batches the dead worker had in hand were finished by the others.
        finished_by = {b.number: b.claimed_by for b in batches}
        assert held and all(not finished_by[n].endswith(f":{victim}") for n in held)
        files = list((tmp_path / "outbox" / SLUG / "issue-1").glob("*.eml"))
        assert len(files) == SUBSCRIBERS
        assert "user0@example.com" in (tmp_path / "outbox" / SLUG / "issue-1" / "user0@example.com.eml").read_text()
