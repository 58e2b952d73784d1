"""What the scheduler runs: collect, build a draft ahead, and the send cycle. Pure of any clock.

Every function takes `now` (an aware datetime) so tests drive weeks of schedule in milliseconds. The send
cycle is: collect -> build the period's issue -> preflight -> approval policy -> send. The database, not the
scheduler, makes it happen once per period: the issue table's unique (newsletter, period) key means a second
run of the cycle finds the issue already built or sent, and the send ledger never delivers twice.

Each step writes a ScheduleRun row; each run logs one structured (JSON) line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter.compose.approval import approval_state, is_approved_as_is
from newsletter.config import Newsletter, Settings
from newsletter.deliver.mailer import Mailer
from newsletter.schedule.cadence import (
    approval_policy,
    build_ahead,
    last_send_due,
    next_fire_times,
    next_send_after,
    period_key,
    send_grace,
    timezone_of,
)
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueRow, ScheduleRun

log = logging.getLogger("newsletter.schedule")

EMPTY_NOTE = "Nothing new this time: the sources we follow published nothing since the last issue."
RETRY_AFTER = timedelta(minutes=5)  # a failed or interrupted send is tried again this often
MAX_BACKOFF = timedelta(hours=6)  # the longest wait between two tries of a failing send
# Cycle outcomes tried again automatically (with growing waits, for up to a day): "waiting-audience" is a send
# that found nobody subscribed, which must not mark the issue sent to nobody.
RETRIED = ("failed", "held-preflight", "waiting-audience")
REMIND_EVERY = timedelta(hours=1)  # an issue waiting for approval is mentioned in the log this often


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime) -> datetime:
    """The database's naive UTC."""
    return utc(value).replace(tzinfo=None)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _default_mailer(settings: Settings) -> Mailer:
    from newsletter.deliver.factory import make_mailer

    return make_mailer(settings)


@dataclass
class Runtime:
    """What jobs need: the database, the settings, the current schedule files and a way to stop."""

    engine: Engine
    settings: Settings
    newsletters: dict[str, Newsletter] = field(default_factory=dict)
    mailer_factory: Callable[[Settings], Mailer] = _default_mailer
    clock: Callable[[], datetime] = _utcnow
    stop: threading.Event = field(default_factory=threading.Event)
    batch_size: int | None = None  # None: the send's own default for the mailer
    send_options: dict[str, Any] = field(default_factory=dict)  # more SendOptions (retries, backoff)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    # Collects one at a time: two newsletters sharing a feed, or the hourly collect meeting a send's collect,
    # would otherwise insert the same new items at once.
    collect_lock: threading.Lock = field(default_factory=threading.Lock)
    _reminded: dict[int, datetime] = field(default_factory=dict)

    def lock(self, slug: str) -> threading.Lock:
        """One cycle at a time per newsletter in this process (scheduled, catch-up and resume alike)."""
        with self._guard:
            return self._locks.setdefault(slug, threading.Lock())


# The running process's Runtime. Jobs in the persistent store are pickled as a function reference plus the
# newsletter's slug, so they find everything else here.
RUNTIME: Runtime | None = None


@dataclass
class Step:
    job: str
    outcome: str
    detail: str = ""


@dataclass
class CycleResult:
    slug: str
    period: str | None
    outcome: str
    issue_id: int | None = None
    sent: int = 0
    steps: list[Step] = field(default_factory=list)
    detail: str = ""

    def step(self, job: str) -> Step | None:
        return next((s for s in self.steps if s.job == job), None)


def record(engine: Engine, slug: str, job: str, started: datetime, outcome: str, detail: str = "",
           seconds: float = 0.0) -> None:
    with session_scope(engine) as session:
        session.add(ScheduleRun(newsletter_slug=slug, job=job, started_at=naive(started),
                                finished_at=naive(started) + timedelta(seconds=seconds),
                                outcome=outcome[:40], detail=detail[:4000] or None))


def log_line(**fields: object) -> None:
    """One structured line per run: easy to grep, easy to ship to a log store."""
    line = {"ts": datetime.now(UTC).isoformat(timespec="seconds"), **fields}
    log.info(json.dumps({k: v for k, v in line.items() if v is not None}, default=str, ensure_ascii=False))


def period_issue(session: Session, nl: Newsletter, period: str) -> IssueRow | None:
    nrow = ensure_newsletter(session, nl.slug, nl.name)
    return session.scalar(select(IssueRow).where(IssueRow.newsletter_id == nrow.id, IssueRow.period == period))


def due_period(nl: Newsletter, now: datetime) -> tuple[datetime, str]:
    """The send this moment belongs to: the latest one due (or now, before the first ever), and its period."""
    due = last_send_due(nl, now) or utc(now).astimezone(timezone_of(nl))
    return due, period_key(nl, due)


# --- steps ---------------------------------------------------------------------------------------------


def collect_step(rt: Runtime, nl: Newsletter) -> Step:
    """Fetch the newsletter's feeds. A failure is reported, never fatal: what was collected before still counts."""
    from newsletter.collect.run import collect

    try:
        with rt.collect_lock:
            report = collect(rt.engine, [nl])
    except Exception as exc:
        return Step("collect", "failed", f"{type(exc).__name__}: {exc}")
    failed = report.failed
    detail = f"{report.new_items} new items from {len(report.outcomes)} sources"
    if failed:
        detail += "; failed: " + "; ".join(f"{o.url}: {o.error}" for o in failed[:5])
    outcome = "ok" if not failed else ("partial" if len(failed) < len(report.outcomes) else "failed")
    return Step("collect", outcome, detail)


def build_step(rt: Runtime, nl: Newsletter, now: datetime, period: str) -> tuple[Step, int | None]:
    from newsletter.compose.build import build_issue

    allow_empty = nl.schedule.when_empty == "send"
    result = build_issue(rt.engine, nl, now=naive(now), period=period, allow_empty=allow_empty)
    if result.issue_id is None:
        return Step("build", "skipped-empty", "; ".join(result.problems) or "nothing new"), None
    if result.items == 0:
        with session_scope(rt.engine) as session:
            row = session.get_one(IssueRow, result.issue_id)
            if EMPTY_NOTE not in (row.intro or ""):
                row.intro = f"{row.intro}\n\n{EMPTY_NOTE}" if row.intro else EMPTY_NOTE
    verb = "rebuilt" if result.rebuilt else "built"
    detail = f"{verb} issue #{result.number} (id {result.issue_id}) with {result.items} stories"
    if result.problems:
        detail += "; notes: " + "; ".join(result.problems[:5])
    return Step("build", "empty" if result.items == 0 else verb, detail), result.issue_id


def preflight_step(rt: Runtime, nl: Newsletter, issue_id: int) -> Step:
    """Render the issue as it would go out and check it survives real mail clients; a failure holds the send."""
    from newsletter.deliver.preflight import preflight_issue
    from newsletter.render.engine import TemplateError

    with session_scope(rt.engine) as session:
        number = session.get_one(IssueRow, issue_id).number
    try:
        _rendered, report = preflight_issue(rt.engine, nl, issue_id, number, rt.settings)
    except TemplateError as exc:  # a broken template override: nothing can go out until it is fixed
        return Step("preflight", "failed", f"template error: {exc}")
    failed, warned = report.by_level("fail"), report.by_level("warn")
    shown = "; ".join(str(f) for f in failed + warned)
    if report.failed:
        return Step("preflight", "failed", shown)
    return Step("preflight", "passed", shown or report.summary())


def approval_step(rt: Runtime, nl: Newsletter, issue_id: int) -> Step:
    """Whether the approval policy lets this issue go now. Outcome 'go' means yes."""
    policy = approval_policy(nl)
    with session_scope(rt.engine) as session:
        state = approval_state(session, issue_id)
        row = session.get_one(IssueRow, issue_id)
        who = f" by {row.approved_by}" if row.approved_by else ""
    if state == "held":
        return Step("approval", "held", f"held by an editor: `newsletter issue reopen {issue_id}` to release it")
    if state == "changed-since-approval":
        return Step("approval", "changed-since-approval",
                    f"issue {issue_id} changed after it was approved{who}: approve it again "
                    f"(`newsletter issue approve {issue_id}`) to send it")
    if state == "approved":
        return Step("approval", "go", f"approved{who}")
    if policy.mode == "required":
        return Step("approval", "waiting-approval",
                    f"waiting for an editor: `newsletter issue approve {issue_id}` sends it as it is now")
    return Step("approval", "go", policy.mode)


def deliver(rt: Runtime, nl: Newsletter, issue_id: int, mailer: Mailer,  # noqa: ANN201 - a SendReport
            now: datetime | None = None):
    """send_issue, stopping after the batch in flight when the runner is asked to stop. Its readers get it at the
    send time in their own time zones; which of them are due is judged on the scheduler's clock."""
    from newsletter.deliver.engine import SendOptions
    from newsletter.deliver.send import send_issue

    # Groups due by the cycle's moment go (a cycle may be run for a moment its clock has not reached yet).
    at = utc(now).timestamp() if now is not None else 0.0
    options = SendOptions(**{"stop": rt.stop, "wall": lambda: max(utc(rt.clock()).timestamp(), at),
                             **rt.send_options})
    due = due_period(nl, now)[0] if now is not None else None
    return send_issue(rt.engine, nl, issue_id, mailer, rt.settings, batch_size=rt.batch_size, options=options,
                      due=due, before=next_send_after(nl, due) if due is not None else None)


def send_step(rt: Runtime, nl: Newsletter, issue_id: int, now: datetime | None = None) -> tuple[Step, int]:
    from newsletter.deliver.audience import empty_audience_hint, fresh_audience
    from newsletter.deliver.errors import SendError
    from newsletter.deliver.send import recent_hand_send

    # One digest per reader per period: not right after an issue an operator sent by hand (not retried).
    second = recent_hand_send(rt.engine, nl, issue_id, naive(now) if now is not None else None)
    if second is not None:
        log_line(event="second-digest-skipped", newsletter=nl.slug, issue=issue_id, detail=second)
        return Step("send", "skipped-second-digest", second), 0
    if fresh_audience(rt.engine, issue_id, nl) is False:
        return Step("send", "waiting-audience",
                    f"issue {issue_id} waits: {nl.slug} has no active subscribers, so nothing was sent and the "
                    f"issue is kept; {empty_audience_hint(nl.slug)} and it goes out at the next retry"), 0
    mailer = rt.mailer_factory(rt.settings)
    try:
        report = deliver(rt, nl, issue_id, mailer, now)
    except SendError as exc:  # the issue cannot be sent as it is (e.g. no stories): retrying will not help
        return Step("send", "refused", str(exc)), 0
    finally:
        mailer.close()
    status = getattr(report, "status", "done")
    sent_now = int(getattr(report, "sent_now", 0) or 0)
    total = int(getattr(report, "total", 0) or 0)
    # "held" from delivery means batches whose outcome is unknown wait for the operator's call, not an editor.
    outcome = {"done": "sent", "held": "send-held", "waiting": "send-waiting"}.get(status, status)
    detail = f"issue {issue_id}: {sent_now} sent now, {total} in the audience via {mailer.name}"
    next_at = getattr(report, "next_at", None)
    if status == "waiting" and next_at is not None:
        detail += (f"; the other readers get it at their own {due_period(nl, now or rt.clock())[0]:%H:%M}, the "
                   f"next group at {datetime.fromtimestamp(next_at, UTC):%Y-%m-%d %H:%M} UTC")
    if getattr(report, "error", None):
        detail += f"; {report.error}"
    if status == "held":
        detail += (f"; {report.held_recipients} recipients have an unknown outcome: decide with "
                   f"`newsletter send {nl.slug} --issue {issue_id} --unknown resend` (or skip)")
    return Step("send", outcome, detail), sent_now


# --- the cycle -----------------------------------------------------------------------------------------


def run_cycle(rt: Runtime, slug: str, *, now: datetime | None = None, reason: str = "schedule") -> CycleResult:
    """Collect, build, check, approve and send this newsletter's issue for the period due at `now`."""
    now = utc(now or rt.clock())
    nl = rt.newsletters.get(slug)
    if nl is None:
        result = CycleResult(slug, None, "unknown-newsletter", detail=f"no schedule file for '{slug}' any more")
        log_line(event="cycle", newsletter=slug, outcome=result.outcome, detail=result.detail, reason=reason)
        return result
    with rt.lock(slug):
        return _cycle(rt, nl, now, reason)


def _cycle(rt: Runtime, nl: Newsletter, now: datetime, reason: str) -> CycleResult:
    started = time.monotonic()
    due, period = due_period(nl, now)
    result = CycleResult(nl.slug, period, "failed")

    def step(fn: Callable[[], Step | tuple[Step, object]]) -> Step:
        t0 = time.monotonic()
        out = fn()
        s = out[0] if isinstance(out, tuple) else out
        record(rt.engine, nl.slug, s.job, now, s.outcome, f"{period}: {s.detail}", time.monotonic() - t0)
        result.steps.append(s)
        return s

    try:
        result.outcome, result.detail = _cycle_steps(rt, nl, now, period, result, step)
    except Exception as exc:  # a bad feed set, a provider outage: logged and recorded, tried again later
        result.outcome, result.detail = "failed", f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    record(rt.engine, nl.slug, "cycle", now, result.outcome, f"{period}: {result.detail}", seconds)
    try:  # raw events past their retention, folded into daily figures (cheap when there are none)
        from newsletter.report.retention import prune

        prune(rt.engine, rt.settings.event_retention_days)
    except Exception as exc:  # never the reason a send is reported failed
        log_line(event="retention", newsletter=nl.slug, outcome="failed", detail=f"{type(exc).__name__}: {exc}")
    log_line(event="cycle", newsletter=nl.slug, period=period, due=due.isoformat(), reason=reason,
             outcome=result.outcome, issue=result.issue_id, sent=result.sent,
             steps=" ".join(f"{s.job}={s.outcome}" for s in result.steps), detail=result.detail,
             seconds=round(seconds, 3))
    return result


def _cycle_steps(rt: Runtime, nl: Newsletter, now: datetime, period: str, result: CycleResult,
                 step: Callable) -> tuple[str, str]:
    policy = approval_policy(nl)
    with session_scope(rt.engine) as session:
        row = period_issue(session, nl, period)
        issue_id, status = (row.id, row.status) if row else (None, None)
    result.issue_id = issue_id
    if status == "sent":
        return "already-sent", f"issue {issue_id} for {period} was already sent"
    if status != "sending":  # a send in progress resumes without another look: it was cleared to go
        if status == "held":
            return "held", f"issue {issue_id} is held by an editor"
        if status is None or (status == "draft" and policy.mode == "auto"):
            step(lambda: collect_step(rt, nl))
            built = step(lambda: build_step(rt, nl, now, period))
            if built.outcome == "skipped-empty":
                return "skipped-empty", built.detail
            with session_scope(rt.engine) as session:
                built_row = period_issue(session, nl, period)
                if built_row is None:
                    raise LookupError(f"the build reported issue {result.issue_id} but there is none for {period}")
                issue_id = result.issue_id = built_row.id
        if issue_id is None:
            raise LookupError(f"no issue for {period}")
        checked = step(lambda: preflight_step(rt, nl, issue_id))
        if checked.outcome == "failed":
            log_line(event="preflight-hold", newsletter=nl.slug, period=period, issue=issue_id,
                     detail=checked.detail)
            return "held-preflight", f"preflight failed, not sent: {checked.detail}"
        allowed = step(lambda: approval_step(rt, nl, issue_id))
        if allowed.outcome != "go":
            if allowed.outcome == "waiting-approval":
                rt._reminded[issue_id] = now
            return allowed.outcome, allowed.detail
    if issue_id is None:
        raise LookupError(f"no issue for {period}")
    if status != "sending":
        with session_scope(rt.engine) as session:  # an edit since the approval step? (an editor is quick)
            row = session.get_one(IssueRow, issue_id)
            if row.approved_hash and not is_approved_as_is(session, issue_id):
                return "changed-since-approval", f"issue {issue_id} changed after it was approved: approve it again"
    if status != "sending":  # the guard: an earlier issue's complaints or bounces hold scheduled sends
        from newsletter.report.guard import check

        with session_scope(rt.engine) as session:
            why = check(session, nl)
        if why is not None:
            log_line(event="guard-hold", newsletter=nl.slug, issue=issue_id, detail=why)
            return "held-complaints", why
    out: dict[str, int] = {}

    def do_send() -> Step:
        s, out["sent"] = send_step(rt, nl, issue_id, now)
        return s

    sent = step(do_send)
    result.sent = out.get("sent", 0)
    return sent.outcome, sent.detail


# --- the other jobs ------------------------------------------------------------------------------------


def run_collect(rt: Runtime, slug: str, *, now: datetime | None = None) -> Step | None:
    now = utc(now or rt.clock())
    nl = rt.newsletters.get(slug)
    if nl is None:
        return None
    t0 = time.monotonic()
    s = collect_step(rt, nl)
    seconds = time.monotonic() - t0
    record(rt.engine, slug, "collect", now, s.outcome, s.detail, seconds)
    log_line(event="collect", newsletter=slug, outcome=s.outcome, detail=s.detail, seconds=round(seconds, 3))
    return s


def run_build(rt: Runtime, slug: str, *, now: datetime | None = None) -> Step | None:
    """The draft of the next send, built ahead so editors can look (approval 'required' / 'auto after')."""
    now = utc(now or rt.clock())
    nl = rt.newsletters.get(slug)
    if nl is None or build_ahead(nl) is None:
        return None
    upcoming = next_send_after(nl, now)
    if upcoming is None:
        return None
    period = period_key(nl, upcoming)
    t0 = time.monotonic()
    with rt.lock(slug):
        with session_scope(rt.engine) as session:
            row = period_issue(session, nl, period)
            existing = (row.id, row.status) if row else None
        if existing:
            s = Step("build", "exists", f"issue {existing[0]} for {period} is already {existing[1]}")
        else:
            try:
                collect_step(rt, nl)
                s, issue_id = build_step(rt, nl, now, period)
                if issue_id is not None:
                    s.detail += (f"; due {upcoming:%Y-%m-%d %H:%M %Z}: review it, then "
                                 f"`newsletter issue approve {issue_id}`" if approval_policy(nl).mode == "required"
                                 else f"; goes out {upcoming:%Y-%m-%d %H:%M %Z} unless held "
                                      f"(`newsletter issue hold {issue_id}`)")
            except Exception as exc:
                s = Step("build", "failed", f"{type(exc).__name__}: {exc}")
    seconds = time.monotonic() - t0
    record(rt.engine, slug, "build", now, s.outcome, f"{period}: {s.detail}", seconds)
    log_line(event="build", newsletter=slug, period=period, outcome=s.outcome, detail=s.detail,
             seconds=round(seconds, 3))
    return s


def last_cycle(session: Session, slug: str) -> ScheduleRun | None:
    return session.scalar(select(ScheduleRun).where(ScheduleRun.newsletter_slug == slug, ScheduleRun.job == "cycle")
                          .order_by(ScheduleRun.started_at.desc(), ScheduleRun.id.desc()))


# --- when a send counts as missed ----------------------------------------------------------------------
#
# A newsletter "exists" for the scheduler from the moment a `newsletter run` on this database first saw its
# schedule file (a "seen" row, written once; for databases from before that row, the first cycle ever run).
# Not its row in the newsletter table: `newsletter send` or `build` by hand create that row long before a
# schedule runs, and a faked clock (the tests, libfaketime) would put it in the future. A send due before that
# moment is not missed, with one exception: a send whose period was still running when the newsletter first
# appeared, and within its grace, goes out at once (a runner first started at 03:10 on the spring-forward day
# still sends that day's issue due at 03:00; one first started at 06:58 does not send yesterday's 07:00 issue).

SEEN_JOB = "seen"


def note_first_seen(rt: Runtime, nl: Newsletter, now: datetime) -> datetime:
    """Record, once, when a runner first saw this newsletter; returns that moment."""
    with session_scope(rt.engine) as session:
        known = existed_since(session, nl.slug)
        if known is not None:
            return known
        session.add(ScheduleRun(newsletter_slug=nl.slug, job=SEEN_JOB, started_at=naive(now), finished_at=naive(now),
                                outcome="first-seen", detail="first seen by `newsletter run` on this database"))
    log_line(event="first-seen", newsletter=nl.slug, at=utc(now).isoformat(),
             detail="sends due before now are not missed sends")
    return utc(now)


def existed_since(session: Session, slug: str) -> datetime | None:
    """When the scheduler first knew this newsletter: its "seen" row, or its first cycle (older databases)."""
    first = session.scalar(select(ScheduleRun.started_at).where(
        ScheduleRun.newsletter_slug == slug, ScheduleRun.job.in_((SEEN_JOB, "cycle")))
        .order_by(ScheduleRun.started_at).limit(1))
    return utc(first) if first is not None else None


def _counts(nl: Newsletter, due: datetime, existed: datetime | None) -> bool:
    """Whether the send due at `due` was this newsletter's to make (see above)."""
    if existed is None:
        return False  # never seen by a runner: nothing of its past is missed
    return utc(due) >= existed or period_key(nl, due) == period_key(nl, existed)


def _ran_since(session: Session, slug: str, due: datetime) -> bool:
    return session.scalar(select(ScheduleRun.id).where(
        ScheduleRun.newsletter_slug == slug, ScheduleRun.job == "cycle",
        ScheduleRun.started_at >= naive(due)).limit(1)) is not None


def missed_send(rt: Runtime, nl: Newsletter, now: datetime) -> datetime | None:
    """The due send this process has not run yet (it was down at the time), if still within its grace."""
    now = utc(now)
    due = last_send_due(nl, now)
    if due is None or now - utc(due) > send_grace(nl):
        return None
    with session_scope(rt.engine) as session:
        if not _counts(nl, due, existed_since(session, nl.slug)) or _ran_since(session, nl.slug, due):
            return None
    return due


@dataclass(frozen=True)
class Missed:
    """Sends that did not run within their grace: not sent late (they would crowd the next one), but said."""

    due: datetime  # the latest of them, local time
    count: int
    late: timedelta  # of the latest
    grace: timedelta
    period: str

    def detail(self, nl: Newsletter) -> str:
        upcoming = next_send_after(nl, self.due + self.late)
        after = f"; the next send is {upcoming:%a %Y-%m-%d %H:%M %Z}" if upcoming else ""
        earlier = f" ({self.count - 1} earlier send{'s' if self.count > 2 else ''} too)" if self.count > 1 else ""
        return (f"the send due {self.due:%a %Y-%m-%d %H:%M %Z} was missed by {_span(self.late)}{earlier}, more "
                f"than its grace of {_span(self.grace)}: not sent (no `newsletter run` ran it in time){after}; "
                f"`newsletter schedule run {nl.slug} --now` sends the current period's issue by hand")


def _span(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
             if n]
    return " ".join(parts) or f"{int(value.total_seconds())} seconds"


MISSED_SCAN = 400  # send times looked at after the last run: a year of a daily send


def missed_beyond_grace(session: Session, nl: Newsletter, now: datetime) -> Missed | None:
    """Sends due after the last run (and after the newsletter existed) that are now past their grace."""
    now = utc(now)
    existed = existed_since(session, nl.slug)
    if existed is None:
        return None  # never seen by a runner: nothing of its past is missed
    last_ran = session.scalar(select(ScheduleRun.started_at).where(
        ScheduleRun.newsletter_slug == nl.slug, ScheduleRun.job == "cycle")
        .order_by(ScheduleRun.started_at.desc()).limit(1))
    # Strictly after the last cycle (a cycle at the due time ran it); from the moment it existed, inclusive.
    since = max(existed, utc(last_ran)) if last_ran is not None else existed - timedelta(microseconds=1)
    grace = send_grace(nl)
    limit = now - grace  # a send due before this is late by more than its grace
    dues: list[datetime] = []
    while len(dues) < MISSED_SCAN:  # page by page: usually the first page ends past the limit
        page = next_fire_times(nl, since, 8)
        late = [d for d in page if utc(d) < limit]
        dues += late
        if len(late) < len(page) or not page:
            break
        since = page[-1]
    if not dues:
        return None
    latest = dues[-1].astimezone(timezone_of(nl))
    return Missed(latest, len(dues), now - utc(latest), grace, period_key(nl, latest))


def report_missed(rt: Runtime, nl: Newsletter, now: datetime) -> Missed | None:
    """Say (once) that sends were missed beyond their grace: a cycle row for `schedule list` and a JSON line.

    The row is dated at the missed send's due time (and finished when noticed), so that it stands for that send
    only: a later send still due within its grace is still caught up.
    """
    with session_scope(rt.engine) as session:
        missed = missed_beyond_grace(session, nl, now)
        if missed is None:
            return None
        detail = missed.detail(nl)
        session.add(ScheduleRun(newsletter_slug=nl.slug, job="cycle", started_at=naive(missed.due),
                                finished_at=naive(now), outcome="missed", detail=f"{missed.period}: {detail}"))
    log_line(event="missed", newsletter=nl.slug, period=missed.period, due=missed.due.isoformat(),
             missed=missed.count, late_seconds=int(missed.late.total_seconds()),
             grace_seconds=int(missed.grace.total_seconds()), outcome="missed", detail=detail)
    return missed


def _backoff(session: Session, slug: str, period: str, base: timedelta) -> timedelta:
    """Wait longer after each failure in a row (a provider refusing our key is not fixed in five minutes)."""
    if base <= timedelta(0):
        return base
    recent = session.scalars(select(ScheduleRun.outcome).where(
        ScheduleRun.newsletter_slug == slug, ScheduleRun.job == "cycle", ScheduleRun.detail.like(f"{period}:%"))
        .order_by(ScheduleRun.id.desc()).limit(8))
    failures = 0
    for outcome in recent:
        if outcome not in RETRIED:
            break
        failures += 1
    return min(base * 2 ** max(failures - 1, 0), MAX_BACKOFF)


def missed_build(rt: Runtime, nl: Newsletter, now: datetime) -> datetime | None:
    """The draft that should exist by now for the next send (its build time passed while no runner was up)."""
    ahead = build_ahead(nl)
    upcoming = next_send_after(nl, now) if ahead else None
    if ahead is None or upcoming is None or utc(upcoming) - ahead > utc(now):
        return None
    with session_scope(rt.engine) as session:
        exists = period_issue(session, nl, period_key(nl, upcoming)) is not None
    return None if exists else upcoming - ahead


def pending_sends(rt: Runtime, now: datetime, *, retry_after: timedelta = RETRY_AFTER) -> list[str]:
    """Newsletters whose current period's issue should go out now although no send is due at this moment:
    approved after its send time (at once), or a send interrupted or failed (stopped, crashed, provider down;
    tried again every `retry_after`). Issues still waiting for an editor get a reminder in the log, hourly."""
    now = utc(now)
    out: list[str] = []
    for slug, nl in rt.newsletters.items():
        due, period = due_period(nl, now)
        with session_scope(rt.engine) as session:
            row = period_issue(session, nl, period)
            if row is not None and row.status in ("sent", "held"):
                continue
            last = last_cycle(session, slug)
            if last is None or not (last.detail or "").startswith(f"{period}:"):
                continue  # its send time has not come yet (a draft built ahead), or a catch-up will run it
            if last.outcome == "held-complaints":  # held by the guard: goes as soon as an editor releases it
                from newsletter.report.guard import active_hold

                if active_hold(session, slug) is None:
                    out.append(slug)
                continue
            retry = now - utc(last.started_at) >= _backoff(session, slug, period, retry_after)
            if row is None or row.status == "draft" and last.outcome in RETRIED:
                # A failure before anything was sent (feeds, database, a template, the preflight checks):
                # try again for a while, so that a fix goes out without anyone running anything.
                if last.outcome in RETRIED and retry and now - utc(due) <= send_grace(nl):
                    out.append(slug)
            elif row.status == "sending":
                if last.outcome in ("send-waiting", "send-held"):
                    # Readers of a later time zone go at their group's time, also while batches an earlier
                    # group left held wait for the operator's decision (which only they can make).
                    if _group_due(session, row.id, utc(last.started_at), now):
                        out.append(slug)
                elif retry:
                    out.append(slug)
            elif last.outcome in ("waiting-approval", "changed-since-approval") or row.status == "approved":
                if is_approved_as_is(session, row.id):
                    if last.outcome not in RETRIED or retry:
                        out.append(slug)
                elif last.outcome in ("waiting-approval", "changed-since-approval"):
                    seen = rt._reminded.get(row.id)
                    if seen is None or now - seen >= REMIND_EVERY:
                        rt._reminded[row.id] = now
                        log_line(event="approval-reminder", newsletter=slug, period=period, issue=row.id,
                                 detail=f"issue {row.id} for {period} is waiting for approval: "
                                        f"`newsletter issue approve {row.id}` sends it as it is now")
    return out


def _group_due(session: Session, issue_id: int, since: datetime, now: datetime) -> bool:
    """Whether a time-zone group of this issue's send became due after the last run (`since`), by `now`."""
    from newsletter.store.models import Send

    groups = session.scalar(select(Send.groups).where(Send.issue_id == issue_id)) or []
    return any(since.timestamp() < float(g["at"]) <= now.timestamp() for g in groups)


# Entry points for the persistent job store: a function reference and the slug are all that is pickled.


def _runtime() -> Runtime:
    if RUNTIME is None:
        raise RuntimeError("the scheduler runtime is not set up (start it with `newsletter run`)")
    return RUNTIME


def scheduled_send(slug: str) -> None:
    run_cycle(_runtime(), slug)


def scheduled_collect(slug: str) -> None:
    run_collect(_runtime(), slug)


def scheduled_build(slug: str) -> None:
    run_build(_runtime(), slug)


def resume_send(slug: str) -> None:
    run_cycle(_runtime(), slug, reason="resume")
