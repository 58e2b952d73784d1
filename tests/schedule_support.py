"""A newsletter with real feeds, subscribers and outbox, driven by a controlled clock for schedule tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import apscheduler.executors.base as aps_executors
import apscheduler.schedulers.base as aps_base
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import func, select

from newsletter.config import Newsletter, Settings, load_newsletter, settings_from_env
from newsletter.deliver.mailer import Mailer, Message, PushResult, Recipient, TemporaryDeliveryError
from newsletter.deliver.outbox import OutboxMailer
from newsletter.schedule.jobs import Runtime
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import Delivery, IssueRow, NewsletterRow
from newsletter.subscribers.manage import add_subscriber
from tests.conftest import rss, schedule_toml
from tests.feedserver import FeedServer, Route

PEOPLE = ("ann@example.com", "bo@example.org", "cy@example.net")


@dataclass
class CountingMailer:
    """The real outbox, plus a count of what was handed to it per (issue, address): duplicates show up here
    even though the outbox would overwrite a file."""

    inner: Mailer
    pushed: Counter = field(default_factory=Counter)
    fail_next: int = 0  # this many pushes fail as a provider outage would
    after_push: Callable[[], None] | None = None
    name: str = "outbox"

    def push(self, message: Message, recipients: list[Recipient]) -> PushResult:
        if self.fail_next:
            self.fail_next -= 1
            raise TemporaryDeliveryError("provider unavailable (503)")
        for r in recipients:
            self.pushed[(message.custom_args["issue"], r.email)] += 1
        result = self.inner.push(message, recipients)
        if self.after_push:
            self.after_push()
        return result

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Paper:
    """One newsletter ('paper') in a project folder; `week(now)` publishes fresh stories as of `now`."""

    workdir: Path
    server: FeedServer
    settings: Settings
    mailer: CountingMailer
    rt: Runtime
    slug: str = "paper"
    stories: int = 0

    @property
    def nl(self) -> Newsletter:
        return self.rt.newsletters[self.slug]

    def configure(self, **schedule: str) -> Newsletter:
        lines = "".join(f'{k} = "{v}"\n' for k, v in schedule.items())
        path = self.workdir / "schedules" / f"{self.slug}.toml"
        path.write_text(schedule_toml(self.slug, [("Desk", self.server.url("/feed"))],
                                      f"[digest]\nfetch_articles_under_words = 0\n\n[schedule]\n{lines}"))
        nl = load_newsletter(path)
        self.rt.newsletters = {self.slug: nl}
        return nl

    def publish(self, now: datetime, count: int = 2) -> None:
        items = []
        for _ in range(count):
            self.stories += 1
            n = self.stories
            items.append({"guid": f"s{n}", "title": f"Story {n} of the desk", "link": f"https://desk.example/{n}",
                          "body": f"<p>Story {n} happened. It mattered to many readers.</p>", "hours_ago": 2})
        self.server.routes["/feed"] = Route(body=rss("Desk", items, now=now))

    def issues(self) -> list[IssueRow]:
        with session_scope(self.rt.engine) as session:
            return list(session.scalars(select(IssueRow).join(NewsletterRow).where(NewsletterRow.slug == self.slug)
                                        .order_by(IssueRow.number)))

    def deliveries(self) -> int:
        with session_scope(self.rt.engine) as session:
            return session.scalar(select(func.count()).select_from(Delivery)) or 0

    def duplicates(self) -> list:
        return [key for key, n in self.mailer.pushed.items() if n > 1]


def make_paper(workdir: Path, server: FeedServer) -> Paper:
    settings = settings_from_env()
    engine = get_engine(settings.database_url)
    mailer = CountingMailer(OutboxMailer(settings.outbox_dir))
    rt = Runtime(engine, settings, mailer_factory=lambda _s: mailer)
    paper = Paper(workdir, server, settings, mailer, rt)
    paper.configure()
    with session_scope(engine) as session:
        row = ensure_newsletter(session, "paper", "Paper Weekly")
        for email in PEOPLE:
            add_subscriber(session, row, email)
    return paper


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


# --- APScheduler on a controlled clock ------------------------------------------------------------------


class Clock:
    """The time the runner, its jobs and APScheduler all read; the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class SteppedScheduler(BaseScheduler):
    """APScheduler's own job processing (due jobs from the persistent store, coalescing, misfire grace, next run
    times from the trigger), stepped by the test instead of a thread's timer; jobs run in the caller."""

    def __init__(self, **options: object) -> None:
        options["executors"] = {"default": DebugExecutor()}
        super().__init__(**options)

    def wakeup(self) -> None:
        """Nothing to wake: the test calls step() at each moment it sets."""

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def step(self) -> None:
        self._process_jobs()


def clock_apscheduler(monkeypatch, clock: Clock) -> None:  # noqa: ANN001
    """APScheduler 3 reads the time in two places (the scheduler's loop and the executor's misfire check):
    point both at the controlled clock, as libfaketime would for the whole process."""

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return clock().astimezone(tz) if tz is not None else clock().replace(tzinfo=None)

    monkeypatch.setattr(aps_base, "datetime", ClockDatetime)
    monkeypatch.setattr(aps_executors, "datetime", ClockDatetime)


def next_job_time(scheduler: BaseScheduler) -> datetime | None:
    times = [job.next_run_time for job in scheduler.get_jobs() if job.next_run_time is not None]
    return min(times) if times else None
