"""`newsletter run`: one long-running process that keeps every newsletter on time.

APScheduler 3 with a persistent job store in the newsletter database runs, per newsletter, `collect:SLUG`,
`send:SLUG` (the whole cycle) and, when editors get a look first, `build:SLUG`. Around it this module adds what
a scheduler alone does not give:

- a lease row, so a second `newsletter run` against the same database is refused instead of racing;
- catch-up on start and on reload, from the database: a send due while the process was down (or under a schedule
  just edited) goes out once, within its grace; one missed by more is said, in the log and `schedule list`;
- a newsletter's past begins when a runner first saw it (see `jobs.note_first_seen`): no "catch-up" of a
  period that ended before it existed;
- resuming sends that were interrupted and sending issues approved after their send time;
- reloading schedule files when they change (or on SIGHUP) without a restart;
- a clean stop on SIGTERM: the batch in flight finishes, the rest resumes from the ledger next time.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from newsletter.config import ConfigError, Newsletter, Settings, load_newsletter
from newsletter.deliver.mailer import Mailer
from newsletter.schedule import jobs
from newsletter.schedule.cadence import build_ahead, build_trigger, collect_trigger, send_grace, send_trigger
from newsletter.schedule.jobs import (
    Runtime,
    log_line,
    missed_build,
    missed_send,
    note_first_seen,
    pending_sends,
    report_missed,
)
from newsletter.schedule.lease import DEFAULT_TTL, LeaseHeld, acquire, new_holder, release, renew

JOBSTORE_TABLE = "apscheduler_jobs"
TICK_SECONDS = 5.0  # lease renewal, schedule file polling, approvals and resumes
COLLECT_GRACE = timedelta(minutes=30)

__all__ = ["LeaseHeld", "Runner"]


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    func: Callable[[str], None]
    trigger: BaseTrigger
    slug: str
    grace: timedelta

    def same_as(self, job) -> bool:  # noqa: ANN001 - an APScheduler Job
        return (repr(job.trigger) == repr(self.trigger) and job.func_ref == _ref(self.func)
                and list(job.args) == [self.slug] and job.misfire_grace_time == int(self.grace.total_seconds()))


def _ref(func: Callable) -> str:
    return f"{func.__module__}:{func.__qualname__}"


def job_specs(nl: Newsletter) -> list[JobSpec]:
    specs = [
        JobSpec(f"collect:{nl.slug}", jobs.scheduled_collect, collect_trigger(nl), nl.slug, COLLECT_GRACE),
        JobSpec(f"send:{nl.slug}", jobs.scheduled_send, send_trigger(nl), nl.slug, send_grace(nl)),
    ]
    build = build_trigger(nl)
    if build is not None:
        ahead = build_ahead(nl) or timedelta(hours=1)
        specs.append(JobSpec(f"build:{nl.slug}", jobs.scheduled_build, build, nl.slug, min(ahead, send_grace(nl))))
    return specs


class Runner:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        tick_seconds: float = TICK_SECONDS,
        lease_ttl: timedelta = DEFAULT_TTL,
        mailer_factory: Callable[[Settings], Mailer] | None = None,
        clock: Callable[[], datetime] | None = None,
        scheduler_factory: Callable[..., BaseScheduler] = BackgroundScheduler,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.tick_seconds = tick_seconds
        self.lease_ttl = lease_ttl
        self.holder = new_holder()
        self.rt = Runtime(engine, settings)
        if mailer_factory is not None:
            self.rt.mailer_factory = mailer_factory
        if clock is not None:
            self.rt.clock = clock
        # The tests give a scheduler they step at moments of a controlled clock; `newsletter run` a background one.
        self.scheduler_factory = scheduler_factory
        self.scheduler: BaseScheduler | None = None
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.reload_requested = False
        self.exit_code = 0
        self._mtimes: dict[str, tuple[int, int]] = {}
        # Told of every schedule file that does not load, at start and on every reload (the CLI prints them).
        self.on_config_errors: Callable[[list[str]], None] | None = None

    # --- schedule files ---------------------------------------------------------------------------------

    def _scan(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        directory = Path(self.settings.schedules_dir)
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                try:
                    st = path.stat()
                except OSError:
                    continue
                out[str(path)] = (st.st_mtime_ns, st.st_size)
        return out

    def load(self) -> list[str]:
        """Read every schedule file. A file that no longer loads keeps its previous settings (nothing lost)."""
        self._mtimes = self._scan()
        previous = {nl.path: nl for nl in self.rt.newsletters.values()}
        found: dict[str, Newsletter] = {}
        errors: list[str] = []
        for path in self._mtimes:
            try:
                nl = load_newsletter(path)
            except ConfigError as exc:
                old = previous.get(path)
                note = f"; keeping the previous settings of '{old.slug}'" if old else ""
                errors.append(f"{exc}{note}")
                if old is not None and old.slug not in found:
                    found[old.slug] = old
                continue
            if nl.slug in found:
                errors.append(f"{path}: slug: '{nl.slug}' is already used by {found[nl.slug].path}")
                continue
            found[nl.slug] = nl
        self.rt.newsletters = found  # one assignment: jobs see the old or the new set, never half of it
        now = self.rt.clock()
        for nl in found.values():
            note_first_seen(self.rt, nl, now)
        for error in errors:
            log_line(event="config-error", detail=error)
        if errors and self.on_config_errors is not None:
            self.on_config_errors(errors)
        return errors

    def sync_jobs(self) -> set[str]:
        """Make the job store match the schedule files; unchanged jobs keep their stored next run time.

        Returns the ids of the jobs added or replaced (APScheduler gives them their next run time).
        """
        assert self.scheduler is not None
        wanted: dict[str, JobSpec] = {}
        changed: set[str] = set()
        for nl in self.rt.newsletters.values():
            try:
                for spec in job_specs(nl):
                    wanted[spec.job_id] = spec
            except ValueError as exc:  # validated on load; a bad cadence here is a bug, not a crash
                log_line(event="config-error", newsletter=nl.slug, detail=str(exc))
        for job in self.scheduler.get_jobs(jobstore="default"):
            if job.id not in wanted:
                self.scheduler.remove_job(job.id, jobstore="default")
                log_line(event="job-removed", job=job.id)
        for spec in wanted.values():
            existing = self.scheduler.get_job(spec.job_id, jobstore="default")
            if existing is not None and spec.same_as(existing):
                continue
            changed.add(spec.job_id)
            self.scheduler.add_job(
                spec.func, spec.trigger, id=spec.job_id, name=spec.job_id, args=[spec.slug], jobstore="default",
                replace_existing=True, coalesce=True, max_instances=1,
                misfire_grace_time=int(spec.grace.total_seconds()),
            )
            job = self.scheduler.get_job(spec.job_id, jobstore="default")
            log_line(event="job-scheduled", job=spec.job_id, trigger=str(spec.trigger),
                     next_run=job.next_run_time.isoformat() if job and job.next_run_time else None)
        return changed

    def reload(self) -> None:
        self.reload_requested = False
        errors = self.load()
        changed = self.sync_jobs()
        # An edited `send` line gets a new next run time from now on: a send it made due a moment ago (a 02:30
        # send in the spring gap went out at 03:00, edited at 03:10) would otherwise wait a day or a week.
        # Only within the grace, and nothing is called missed: under the old line that time was not a send time.
        self.catch_up_sends({job.split(":", 1)[1] for job in changed if job.startswith("send:")}, report=False)
        log_line(event="reloaded", newsletters=sorted(self.rt.newsletters), errors=len(errors))

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take the lease (or raise LeaseHeld), load the schedules and start the scheduler."""
        acquire(self.engine, self.holder, ttl=self.lease_ttl)
        jobs.RUNTIME = self.rt
        self.load()
        self.scheduler = self.scheduler_factory(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine, tablename=JOBSTORE_TABLE),
                       "runtime": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self.scheduler.start(paused=True)  # the job store is readable now; nothing runs until resume()
        self.sync_jobs()
        self.catch_up()
        self.scheduler.resume()
        log_line(event="runner-started", holder=self.holder, newsletters=sorted(self.rt.newsletters),
                 database=_redacted(self.settings.database_url))

    def catch_up_sends(self, slugs: set[str], *, report: bool = True) -> set[str]:
        """Sends due while no runner was up, or made due by an edit, run now (within their grace); with
        `report`, one missed by more than its grace is said. Returns the newsletters set to send now."""
        assert self.scheduler is not None
        now = self.rt.clock()
        caught: set[str] = set()
        for slug in sorted(slugs):
            nl = self.rt.newsletters.get(slug)
            job = self.scheduler.get_job(f"send:{slug}", jobstore="default")
            if nl is None or job is None:
                continue
            due = missed_send(self.rt, nl, now)
            if report:  # before the catch-up's own cycle row, which would hide the sends missed before it
                report_missed(self.rt, nl, now)
            if due is None:
                continue
            caught.add(slug)
            if job.next_run_time is not None and job.next_run_time <= now:
                continue  # the job store still has the missed run: APScheduler runs it once (coalesced)
            self.scheduler.modify_job(f"send:{slug}", jobstore="default", next_run_time=now)
            log_line(event="catch-up", newsletter=slug, due=due.isoformat())
        return caught

    def _on_missed(self, event: JobExecutionEvent) -> None:
        """APScheduler dropped a run past its grace (a process suspended, a long send before it): say so in
        our log and in `schedule list`, not only in APScheduler's warning."""
        kind, _, slug = event.job_id.partition(":")
        nl = self.rt.newsletters.get(slug)
        if kind != "send" or nl is None:
            return
        try:
            report_missed(self.rt, nl, self.rt.clock())
        except Exception as exc:  # a database hiccup: APScheduler's warning still says it
            log_line(event="missed-report-failed", newsletter=slug, detail=f"{type(exc).__name__}: {exc}")

    def catch_up(self) -> None:
        """Sends due while no runner was up (within their grace) run now; interrupted sends resume."""
        assert self.scheduler is not None
        now = self.rt.clock()
        caught = self.catch_up_sends(set(self.rt.newsletters))
        for slug, nl in self.rt.newsletters.items():
            build_due = missed_build(self.rt, nl, now)
            if build_due is not None and self.scheduler.get_job(f"build:{slug}", jobstore="default") is not None:
                self.scheduler.modify_job(f"build:{slug}", jobstore="default", next_run_time=now)
                log_line(event="catch-up", newsletter=slug, job="build", due=build_due.isoformat())
        for slug in pending_sends(self.rt, now, retry_after=timedelta(0)):
            if slug not in caught:
                self._resume(slug)

    def _resume(self, slug: str) -> None:
        assert self.scheduler is not None
        self.scheduler.add_job(jobs.resume_send, id=f"resume:{slug}", args=[slug], jobstore="runtime",
                               replace_existing=True, misfire_grace_time=3600)

    def tick(self) -> None:
        now = self.rt.clock()
        if not renew(self.engine, self.holder, ttl=self.lease_ttl, now=jobs.naive(now)):
            log_line(event="lease-lost", holder=self.holder,
                     detail="another process took the schedule lease; stopping so that only one runs")
            self.exit_code = 1
            self.request_stop()
            return
        if self.reload_requested or self._scan() != self._mtimes:
            self.reload()
        for slug in pending_sends(self.rt, now):
            if not self.rt.lock(slug).locked():
                self._resume(slug)

    def request_stop(self, *_args: object) -> None:
        self.stopping.set()
        self.rt.stop.set()  # a send in flight finishes its batch and stops; the ledger resumes it later
        self.wake.set()

    def request_reload(self, *_args: object) -> None:
        self.reload_requested = True
        self.wake.set()

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the exit code."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self.request_reload)
        try:
            while not self.stopping.is_set():
                self.wake.wait(self.tick_seconds)
                self.wake.clear()
                if self.stopping.is_set():
                    break
                try:
                    self.tick()
                except Exception as exc:  # a database hiccup must not end the process; the next tick retries
                    log_line(event="tick-error", detail=f"{type(exc).__name__}: {exc}")
        finally:
            self.shutdown()
        return self.exit_code

    def shutdown(self) -> None:
        self.rt.stop.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)  # running jobs finish (a send stops after its batch)
        try:
            release(self.engine, self.holder)
        except Exception as exc:  # the lease then simply expires
            log_line(event="lease-release-failed", detail=f"{type(exc).__name__}: {exc}")
        if jobs.RUNTIME is self.rt:
            jobs.RUNTIME = None
        log_line(event="runner-stopped", holder=self.holder, exit_code=self.exit_code)


def _redacted(url: str) -> str:
    from newsletter.config import redact_url

    return redact_url(url)


def setup_logging() -> None:
    """JSON lines on stderr for our runs; APScheduler's own warnings (missed runs) alongside."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("newsletter.schedule")
    if not ours.handlers:
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    aps = logging.getLogger("apscheduler")
    if not aps.handlers:
        aps_handler = logging.StreamHandler(sys.stderr)
        aps_handler.setFormatter(logging.Formatter("apscheduler %(levelname)s %(message)s"))
        aps.addHandler(aps_handler)
    aps.setLevel(logging.WARNING)
