"""`newsletter run`: the lease, the persistent job store, reloading, and the real process end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.schedule.jobs import run_cycle
from newsletter.schedule.lease import LeaseHeld, acquire, renew
from newsletter.schedule.runner import Runner
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, ScheduleRun, utcnow
from tests.conftest import BOTH_DATABASES
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.schedule_support import PEOPLE, Paper, make_paper
from tests.sendgrid_server import SendGridServer


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


def quiet_clock() -> datetime:
    """A moment with no send due (a Wednesday noon), so that starting a runner catches nothing up."""
    return datetime(2026, 11, 25, 12, tzinfo=UTC)


@BOTH_DATABASES
def test_a_second_runner_is_refused_and_the_database_sends_once(paper: Paper) -> None:
    paper.configure(send="weekly on monday at 08:00", timezone="Europe/Paris")
    first = Runner(paper.rt.engine, paper.settings, clock=quiet_clock, mailer_factory=paper.rt.mailer_factory)
    second = Runner(paper.rt.engine, paper.settings, clock=quiet_clock, mailer_factory=paper.rt.mailer_factory)
    first.start()
    try:
        with pytest.raises(LeaseHeld) as refused:
            second.start()
        assert "another `newsletter run` is already running" in str(refused.value)
        assert first.holder in str(refused.value)
        assert second.scheduler is None  # refused before scheduling anything
        # Even if two processes ran the same due cycle (say, a lease forced by hand), the period's issue is one
        # row and the ledger delivers it once.
        due = datetime(2026, 11, 30, 7, tzinfo=UTC)
        paper.publish(due)
        second.load()
        outcomes = sorted(run_cycle(r.rt, "paper", now=due).outcome for r in (first, second))
        assert outcomes == ["already-sent", "sent"]
        assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []
    finally:
        first.shutdown()
    second.start()  # the lease was released on a clean stop
    second.shutdown()


@BOTH_DATABASES
def test_lease_expires_when_its_holder_stops_renewing(paper: Paper) -> None:
    engine, now = paper.rt.engine, utcnow()
    acquire(engine, "host-a:1", now=now, ttl=timedelta(seconds=60))
    with pytest.raises(LeaseHeld, match="host-a:1"):
        acquire(engine, "host-b:2", now=now + timedelta(seconds=30))
    assert renew(engine, "host-a:1", now=now + timedelta(seconds=30))
    acquire(engine, "host-b:2", now=now + timedelta(seconds=200))  # a dead holder's lease runs out
    assert not renew(engine, "host-a:1", now=now + timedelta(seconds=201))  # and it learns it lost it


def stored_jobs(runner: Runner) -> dict[str, str]:
    return {job.id: repr(job.trigger) for job in runner.scheduler.get_jobs(jobstore="default")}


@BOTH_DATABASES
def test_jobs_persist_and_follow_schedule_file_changes_without_restart(paper: Paper) -> None:
    path = paper.workdir / "schedules" / "paper.toml"
    paper.configure(send="weekly on monday at 08:00", approval="required")
    runner = Runner(paper.rt.engine, paper.settings, clock=quiet_clock)
    runner.start()
    try:
        jobs = stored_jobs(runner)
        assert set(jobs) == {"collect:paper", "send:paper", "build:paper"}
        assert "day_of_week='mon'" in jobs["send:paper"]
        next_send = runner.scheduler.get_job("send:paper").next_run_time
        assert (next_send.weekday(), next_send.hour) == (0, 8)
    finally:
        runner.shutdown()

    # A restart keeps the stored jobs (the same trigger is not replaced, so a missed run is still known).
    runner = Runner(paper.rt.engine, paper.settings, clock=quiet_clock)
    runner.start()
    try:
        assert runner.scheduler.get_job("send:paper").next_run_time == next_send
        # Edit the file while it runs: the next pass picks it up.
        text = path.read_text().replace("weekly on monday at 08:00", "daily at 06:45").replace(
            'approval = "required"', 'approval = "auto"')
        path.write_text(text)
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        runner.tick()
        jobs = stored_jobs(runner)
        assert set(jobs) == {"collect:paper", "send:paper"}  # no draft ahead with approval = auto
        assert "hour='6', minute='45'" in jobs["send:paper"]
        # A broken edit keeps the previous settings and says where the problem is.
        path.write_text(text.replace("daily at 06:45", "daily at 6:75"))
        runner.request_reload()  # as SIGHUP does
        runner.tick()
        assert "hour='6', minute='45'" in stored_jobs(runner)["send:paper"]
        # A removed file takes its jobs with it.
        path.unlink()
        runner.tick()
        assert stored_jobs(runner) == {}
    finally:
        runner.shutdown()


def _env(workdir: Path, sendgrid: SendGridServer) -> dict[str, str]:
    """The test's settings, with the local SendGrid server as the provider."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({k: v for k, v in os.environ.items() if k.startswith("NEWSLETTER_")})
    env.update({"NEWSLETTER_MAILER": "sendgrid", "SENDGRID_API_KEY": SENDGRID_TEST_KEY,
                "SENDGRID_API_HOST": sendgrid.url, "NEWSLETTER_SCHEDULES_DIR": str(workdir / "schedules"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return env


class Process:
    """`python -m newsletter run` with its stderr (JSON lines) read as it comes."""

    def __init__(self, workdir: Path, sendgrid: SendGridServer) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "newsletter", "run", "--tick", "0.5"], cwd=workdir,
                                     env=_env(workdir, sendgrid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("not seen; stderr:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=2)
        return code


@pytest.mark.slow  # three real processes: about 5 s
def test_newsletter_run_delivers_once_refuses_a_second_and_stops_cleanly(paper: Paper,
                                                                        sendgrid_server: SendGridServer) -> None:
    now = datetime.now(UTC)
    paper.configure(send=f"daily at {now:%H:%M}", timezone="UTC")  # due this very minute
    paper.publish(now)
    first = Process(paper.workdir, sendgrid_server)
    try:
        started = first.wait_for(lambda e: e.get("event") == "runner-started")
        assert started["newsletters"] == ["paper"]
        cycle = first.wait_for(lambda e: e.get("event") == "cycle")
        assert cycle["outcome"] == "sent" and cycle["sent"] == len(PEOPLE), cycle
        assert cycle["steps"].startswith("collect=ok build=built")
        assert sendgrid_server.deliveries() == {p: 1 for p in PEOPLE}
        (request,) = sendgrid_server.accepted
        assert request.custom_args["newsletter"] == "paper"
        assert request.body["subject"].startswith("Paper Weekly #1")

        first.proc.send_signal(signal.SIGHUP)  # re-read the schedule files without a restart
        assert first.wait_for(lambda e: e.get("event") == "reloaded")["newsletters"] == ["paper"]

        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "newsletter", "run"], cwd=paper.workdir,
                                env=_env(paper.workdir, sendgrid_server), capture_output=True, text=True,
                                timeout=90)  # generous: a loaded CI machine starts Python slowly
        assert second.returncode == 1, (time.monotonic() - t0, second.stderr)
        assert "another `newsletter run` is already running" in second.stderr
        t0 = time.monotonic()
        code = first.stop(timeout=90)
        stopped_in = time.monotonic() - t0
        assert code == 0 and stopped_in < 10, (code, stopped_in, "\n".join(first.lines))
        assert any(e.get("event") == "runner-stopped" for e in first.events())
    finally:
        if first.proc.poll() is None:
            first.proc.kill()

    # Started again the same day: the send already happened, so nothing goes out twice.
    again = Process(paper.workdir, sendgrid_server)
    try:
        again.wait_for(lambda e: e.get("event") == "runner-started")
        time.sleep(1.0)
        assert again.stop() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
    assert not any(e.get("event") == "cycle" for e in again.events())
    assert sendgrid_server.deliveries() == {p: 1 for p in PEOPLE}
    with session_scope(paper.rt.engine) as session:
        assert len(list(session.scalars(select(Delivery)))) == len(PEOPLE)
        cycles = list(session.scalars(select(ScheduleRun.outcome).where(ScheduleRun.job == "cycle")))
    assert cycles == ["sent"]
