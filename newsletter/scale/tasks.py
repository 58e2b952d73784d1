"""The jobs scale mode runs on procrastinate workers: collect a chunk of sources, build, enrich and render an
issue, start a send, send one batch; and the periodic ticks that defer them at each newsletter's local times.

Each job is small and safe to run again: the database (unique keys, the send ledger) and not the job queue is
what guarantees one issue per period and one delivery per address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import procrastinate
from procrastinate import JobContext
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.retry import RetryDecision, RetryStrategy
from procrastinate.types import JSONDict
from sqlalchemy import Engine, select

from newsletter.config import ConfigError, Newsletter, Settings, load_all, settings_from_env
from newsletter.deliver.engine import SendJob, gc_spared
from newsletter.deliver.ledger import Batch
from newsletter.deliver.mailer import Mailer, TemporaryDeliveryError
from newsletter.scale import due, ledger, sending
from newsletter.scale.app import app, stop_requested
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import IssueRow, Send

log = logging.getLogger("newsletter.scale")


def send_parallel() -> int:
    """send_batch jobs per send at once: each re-defers itself while batches are left, so this is the most
    worker slots one send keeps busy; more than you run only costs idle polls."""
    return int(os.environ.get("NEWSLETTER_SEND_PARALLEL", "16"))


UNLOCK_EVERY = 64  # sent batches whose advisory locks a send job releases at once (one statement)
LEASE_RENEWAL = 30.0  # seconds between renewals of a send's lease (ledger.LEASE_SECONDS long) within one job


def send_job_seconds() -> float:
    """How long one send_batch job goes on claiming and delivering batches before it defers the next job: long
    enough that handing over to the next job (its batches in flight drained, its own queries, the queue's fetch:
    30-50 ms each time) is spread over hundreds of batches, short enough that the queue stays fair to other sends
    and jobs. A job also ends at its next batch when its worker is asked to stop or the job to abort."""
    return float(os.environ.get("NEWSLETTER_SEND_JOB_SECONDS", "10"))


def collect_chunk() -> int:
    """Sources per collect_sources job: enough to overlap their fetches, few enough to spread over workers."""
    return int(os.environ.get("NEWSLETTER_COLLECT_CHUNK", "50"))




class ProviderAwareRetry(RetryStrategy):
    """procrastinate's exponential backoff, never sooner than the provider asked (Retry-After, rate limit reset)."""

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job) -> RetryDecision | None:
        decision = super().get_retry_decision(exception=exception, job=job)
        after = getattr(exception, "retry_after", None)
        if decision is None or not after:
            return decision
        earliest = datetime.now(UTC) + timedelta(seconds=min(float(after), 3600.0))
        if decision.retry_at is None or decision.retry_at < earliest:
            decision.retry_at = earliest
        return decision


# Temporary errors and lost database connections come back; anything else is a bug or bad input: fail loudly.
def _transient() -> set[type[Exception]]:
    from sqlalchemy.exc import OperationalError

    return {TemporaryDeliveryError, OperationalError, ConnectionError, TimeoutError}


SEND_RETRY = ProviderAwareRetry(max_attempts=10, exponential_wait=2, retry_exceptions=_transient())
JOB_RETRY = RetryStrategy(max_attempts=5, exponential_wait=3, retry_exceptions=_transient())


# -- what every job needs, once per process ----------------------------------------------------------------

@cache
def settings() -> Settings:
    return settings_from_env()


def engine() -> Engine:
    return get_engine(settings().database_url)


_schedules: tuple[tuple, dict[str, Newsletter]] | None = None


def newsletters() -> dict[str, Newsletter]:
    """The schedule files, read again only when one changed (a job must not re-validate 5,000 sources)."""
    global _schedules
    folder = settings().schedules_dir
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    stamp = (str(folder.resolve()), *((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    cached = _schedules
    if cached is not None and cached[0] == stamp:
        return cached[1]
    result = load_all(folder)
    for error in result.errors:
        log.warning("%s", error)
    _schedules = (stamp, result.newsletters)
    return result.newsletters


def newsletter(slug: str) -> Newsletter:
    found = newsletters().get(slug)
    if found is None:
        raise ConfigError(f"no newsletter '{slug}' in {settings().schedules_dir}/ on this worker "
                          "(every worker needs the same schedules folder)")
    return found


_local = threading.local()  # a mailer per worker thread: backends keep per-request state
# Send ids are one database's own: a worker process that is pointed at another database (new settings) must
# not take that database's send 1 for the last one's.
_send_jobs: dict[tuple[str, int], SendJob] = {}
_send_jobs_lock = threading.Lock()


def mailer() -> Mailer:
    current = settings()
    if getattr(_local, "mailer", None) is None or getattr(_local, "mailer_for", None) is not current:
        from newsletter.deliver.factory import make_mailer

        _local.mailer, _local.mailer_for = make_mailer(current), current
    return _local.mailer


def send_job(send_id: int) -> SendJob:
    key = (settings().database_url, send_id)
    with _send_jobs_lock:
        job = _send_jobs.get(key)
    if job is None:
        nl = newsletter(sending.newsletter_slug_of_send(engine(), send_id))
        job = sending.load_send(engine(), settings(), nl, send_id)
        with _send_jobs_lock:
            _send_jobs[key] = job
    return job


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


# What the jobs import on first use, loaded when a worker starts instead: the first send a worker started paid
# 0.25 s of imports (the preflight, the renderer and Jinja2, the provider's client) before its first batch.
WARM_MODULES = ("newsletter.collect.run", "newsletter.compose.build", "newsletter.compose.approval",
                "newsletter.compose.select", "newsletter.deliver.preflight", "newsletter.deliver.issue_mail",
                "newsletter.deliver.zones", "newsletter.render.cache", "newsletter.render.variant",
                "newsletter.report.guard", "newsletter.schedule.cadence")


def warm_up() -> None:
    """Import what the jobs will need, before the worker takes its first one."""
    import importlib

    from newsletter.deliver.factory import BACKEND_MODULES

    for name in (*WARM_MODULES, BACKEND_MODULES.get(settings().mailer, "")):
        if name:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # the job that needs it says so, where it is used
                log.debug("not preloaded: %s (%s)", name, exc)


# -- collect ------------------------------------------------------------------------------------------------

@app.task(queue="collect", retry=JOB_RETRY)
def collect_sources(urls: list[str], force: bool = False) -> dict[str, int]:
    """Fetch a chunk of sources (each once, however many newsletters list it) and store new items."""
    from newsletter.collect.run import collect

    wanted = set(urls)
    chosen = []
    for nl in newsletters().values():
        mine = [s for s in nl.sources if s.url in wanted]
        if mine:
            chosen.append(nl.model_copy(update={"sources": mine}))
            wanted -= {s.url for s in mine}
    if wanted:
        log.warning("sources no longer in any schedule file, skipped: %s", ", ".join(sorted(wanted)))
    if not chosen:
        return {"sources": 0, "new_items": 0, "failed": 0}
    # The workers are the parallelism here: no parse pool inside a job.
    report = collect(engine(), chosen, force=force, parallel_parse=False)
    return {"sources": len(report.outcomes), "new_items": report.new_items, "failed": len(report.failed)}


def defer_collect(bound: procrastinate.App | None, slugs: list[str] | None = None, *, force: bool = False,
                  chunk: int | None = None) -> int:
    """Defer collect_sources jobs for every distinct source of the newsletters (all by default). Returns jobs."""
    from newsletter.collect.run import sources_of

    known = newsletters()
    chosen = [known[s] for s in slugs] if slugs else list(known.values())
    urls = [spec.url for spec in sources_of(chosen)]
    size = chunk or collect_chunk()
    task = collect_sources if bound is None else bound.tasks[collect_sources.name]
    chunks = [urls[i:i + size] for i in range(0, len(urls), size)]
    if chunks:
        jobs: list[JSONDict] = [{"urls": list(c), "force": force} for c in chunks]
        task.batch_defer(*jobs)
    return len(chunks)


@app.task(queue="collect", retry=JOB_RETRY)
def collect_newsletter(slug: str) -> int:
    """A newsletter's scheduled collect: its sources, in chunks, as separate jobs."""
    return defer_collect(None, [slug])


# -- build, enrich, render, send ----------------------------------------------------------------------------

@app.task(queue="build", retry=JOB_RETRY)
def build_issue(slug: str, period: str | None = None, send: bool = False) -> int | None:
    """Build the period's issue (at most one per newsletter and period: a unique key), then enrich it."""
    from newsletter.compose.build import BuildError
    from newsletter.compose.build import build_issue as build

    nl = newsletter(slug)
    try:
        result = build(engine(), nl, period=period, enrich=False, allow_empty=nl.schedule.when_empty == "send")
    except BuildError as exc:
        log.info("%s: no issue built for %s: %s", slug, period, exc)
        return None
    if result.issue_id is None:
        log.info("%s: %s", slug, "; ".join(result.problems))
        return None
    enrich_issue.defer(issue_id=result.issue_id, send=send)
    return result.issue_id


@app.task(queue="build", retry=JOB_RETRY)
def enrich_issue(issue_id: int, send: bool = False) -> list[str]:
    """Summaries, key quotes and related reading for every story of the issue; then render it."""
    from newsletter.compose.build import enrich_stories

    slug = _slug_of_issue(issue_id)
    summary, problems = enrich_stories(engine(), issue_id, newsletter(slug))
    log.info("%s: issue %s: %s", slug, issue_id, summary)
    for problem in problems:
        log.warning("%s: issue %s: %s", slug, issue_id, problem)
    render_issue.defer(issue_id=issue_id, send=send)
    return problems


@app.task(queue="build", retry=JOB_RETRY)
def render_issue(issue_id: int, send: bool = False) -> str:
    """Render the issue once (HTML + text with per-recipient tokens); when `send`, send it if the policy lets it."""
    from newsletter.render.cache import rendered_issue

    slug = _slug_of_issue(issue_id)
    nl = newsletter(slug)
    templates = settings().templates_dir if settings().templates_dir.is_dir() else None
    rendered = rendered_issue(engine(), issue_id, nl, base_url=settings().base_url, templates_dir=templates)
    if send:
        send_if_allowed(nl, issue_id)
    return rendered.subject


@app.task(queue="build", retry=JOB_RETRY)
def send_period(slug: str, period: str) -> str:
    """A newsletter's send time: send the period's issue if its approval policy lets it (building it first when
    the send builds it, approval 'auto')."""
    from newsletter.compose.select import newsletter_row

    nl = newsletter(slug)
    with session_scope(engine()) as session:
        nrow = newsletter_row(session, slug)
        issue_id = None if nrow is None else session.scalar(
            select(IssueRow.id).where(IssueRow.newsletter_id == nrow.id, IssueRow.period == period))
    if issue_id is None:
        build_issue.defer(slug=slug, period=period, send=True)
        return "building"
    return send_if_allowed(nl, issue_id)


def send_if_allowed(nl: Newsletter, issue_id: int) -> str:
    """Defer the send of an issue as its newsletter's approval policy says. Returns what was decided."""
    from newsletter.compose.approval import approval_state
    from newsletter.schedule.cadence import approval_policy

    with session_scope(engine()) as session:
        state = approval_state(session, issue_id)
    policy = approval_policy(nl).mode
    if state == "sent":
        return state
    if state in ("held", "changed-since-approval") or (state == "not-approved" and policy == "required"):
        log.warning("%s: issue %s not sent: %s", nl.slug, issue_id, {
            "held": "held by an editor",
            "changed-since-approval": f"changed after it was approved: `newsletter issue approve {issue_id}`",
        }.get(state, f"waiting for an editor: `newsletter issue approve {issue_id}` sends it"))
        return state
    if state != "sending":  # the guard: an earlier issue's complaints or bounces hold scheduled sends
        from newsletter.report.guard import check

        with session_scope(engine()) as session:
            why = check(session, nl)
        if why is not None:
            log.warning("%s: issue %s not sent: %s", nl.slug, issue_id, why)
            return "held-complaints"
    with contextlib.suppress(AlreadyEnqueued):  # already on its way
        start_send.configure(queueing_lock=f"start:{issue_id}").defer(issue_id=issue_id, scheduled=True)
    return "sending"


def _slug_of_issue(issue_id: int) -> str:
    from newsletter.store.models import NewsletterRow

    with session_scope(engine()) as session:
        slug = session.scalar(select(NewsletterRow.slug).join(IssueRow, IssueRow.newsletter_id == NewsletterRow.id)
                              .where(IssueRow.id == issue_id))
    if slug is None:
        raise LookupError(f"no issue {issue_id}")
    return slug


def wall_clock() -> float:
    """Epoch seconds: the clock time-zone groups are judged by (a test sets its own)."""
    return time.time()


def scheduled_due(nl: Newsletter, period: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    """A scheduled send's due instant and the next send's (as `newsletter run` gives `start_send`), when its
    readers get it at their own local time (a cadence of a day or more) and the issue is that send's period's."""
    from newsletter.deliver.send import per_reader_time
    from newsletter.schedule.cadence import last_send_due, next_send_after

    if period is None or not per_reader_time(nl):
        return None, None
    when = last_send_due(nl, now)
    if when is None or due.period_key(nl, when) != period:
        return None, None
    return when, next_send_after(nl, when)


def begin_send(eng: Engine, nl: Newsletter, issue_id: int, mailer_name: str, batch_size: int,
               scheduled: bool = False, first: int | None = None) -> int:
    """The send of the issue, created with its audience frozen (once), its lease taken and its batches planned
    (`first`: only that many for now; see ledger.plan_batches).

    `scheduled` (the scheduler's send, not one by hand): readers with a time zone get it at the send time where
    they are, one batch group per UTC offset (newsletter.deliver.zones), as `newsletter run` sends it."""
    from newsletter.compose.issue import has_content
    from newsletter.deliver.audience import audience_newsletter, frequency_filter
    from newsletter.deliver.errors import SendError
    from newsletter.deliver.ledger import start_send
    from newsletter.deliver.send import SENDABLE

    with session_scope(eng) as session:
        nrow = ensure_newsletter(session, nl.slug, nl.name)
        row = session.get(IssueRow, issue_id, with_for_update=True)  # two start_send jobs: one after the other
        if row is None or row.newsletter_id != nrow.id:
            raise SendError(f"no issue {issue_id} in newsletter '{nl.slug}'")
        started = session.scalar(select(Send.id).where(Send.issue_id == issue_id)) is not None
        if not started and row.status not in SENDABLE:
            raise SendError(f"issue {issue_id} is {row.status}: it cannot be sent")
        if not started and not has_content(row):
            raise SendError(f"issue {issue_id} has no stories and no intro: nothing to send")
        # A cadence's issues go to its parent newsletter's readers who chose it (newsletter.deliver.audience).
        newsletter_id = audience_newsletter(session, nl).id
        period = row.period
    when, before = (scheduled_due(nl, period, datetime.fromtimestamp(wall_clock(), UTC)) if scheduled
                    else (None, None))
    send_id = start_send(eng, issue_id, newsletter_id, mailer_name, batch_size, frequency_filter(nl), when, before)
    ledger.take_lease(eng, send_id)
    with session_scope(eng) as session:
        row = session.get_one(IssueRow, issue_id)
        if row.status != "sent":
            row.status = "sending"
    ledger.plan_batches(eng, send_id, newsletter_id, first=first)
    return send_id


def plan_first() -> int:
    """Batches planned before the workers are called; the first send_batch job plans the rest while it sends
    these (a million readers: 1.6 s of planning that was all before the first mail, and that held a worker)."""
    return max(1, int(os.environ.get("NEWSLETTER_PLAN_FIRST", "128")))


def plan_rest(send_id: int) -> None:
    """Plan what is left of the send's audience (its first batches are out already), then defer jobs for it:
    the send's jobs may all have ended meanwhile (each stops when it finds nothing pending, and the send
    cannot close while unplanned). Run beside a send_batch job's deliveries; a planner that fails leaves the
    send marked unplanned, and the next send_batch job plans again."""
    try:
        ledger.plan_batches(engine(), send_id)
    except Exception:
        log.exception("send %s: planning the rest of the audience failed; the next job plans it again", send_id)
        send_batch.defer(send_id=send_id)
        return
    fan_out(None, send_id)


@app.task(queue="send", retry=JOB_RETRY)
def start_send(issue_id: int, batch_size: int | None = None, parallel: int | None = None,
               force: bool = False, scheduled: bool = False) -> int | None:
    """Start (or resume) sending an issue: freeze the audience, plan the batches, fan out send_batch jobs."""
    from newsletter.deliver.preflight import preflight_issue
    from newsletter.deliver.send import default_batch_size

    slug = _slug_of_issue(issue_id)
    nl = newsletter(slug)
    with session_scope(engine()) as session:
        status = session.scalar(select(IssueRow.status).where(IssueRow.id == issue_id))
    if status == "sent":
        return None
    if status == "held":
        log.info("%s: issue %s is held by an editor; not sending", slug, issue_id)
        return None
    if status != "sending" and not force:  # a send already under way passed this check when it started
        with session_scope(engine()) as session:
            number = session.execute(select(IssueRow.number).where(IssueRow.id == issue_id)).scalar_one()
        _, report = preflight_issue(engine(), nl, issue_id, number, settings())
        if report.failed:
            with session_scope(engine()) as session:
                session.get_one(IssueRow, issue_id).status = "held"
            log.error("%s: issue %s held, not sent:\n%s", slug, issue_id, report.to_text())
            return None
    # Render before the send exists: what goes out is frozen once the issue is `sending`.
    render_issue(issue_id)
    send_id = begin_send(engine(), nl, issue_id, mailer().name, batch_size or default_batch_size(mailer()),
                         scheduled, first=plan_first())
    render_variants(nl, issue_id, send_id)
    fan_out(None, send_id, parallel)  # the rest of the audience is planned by the first of these (plan_rest)
    return send_id


def render_variants(nl: Newsletter, issue_id: int, send_id: int) -> int:
    """Render (and keep in issue_render) each variant the send's audience holds, here, once, before any batch
    job runs: the workers then read the kept copies back instead of racing to render the same variant."""
    from newsletter.deliver.issue_mail import issue_message
    from newsletter.render.variant import variant_of

    with session_scope(engine()) as session:
        variants = session.scalar(select(Send.variants).where(Send.id == send_id)) or []
    for key in variants:
        if key:
            issue_message(engine(), nl, issue_id, settings(), send_id=send_id, variant=variant_of(key))
    return len(variants)


def claim_until() -> float:
    """Time-zone groups due by this moment are claimed: now, or 72 hours ahead on SendGrid (each request's
    send_at makes it hold the mail); SMTP and the outbox: each group when it is due (release_later)."""
    from newsletter.deliver.engine import MAX_AHEAD

    return wall_clock() + (MAX_AHEAD if mailer().name == "sendgrid" else 0.0)


def release_later(send_id: int, soonest: float = 0.0) -> float | None:
    """Queue the send's next time-zone group, not due yet, for its time (not before `soonest`): one waiting job
    per send."""
    at = ledger.next_group_at(engine(), send_id)
    if at is None or at <= claim_until():
        return None
    with contextlib.suppress(AlreadyEnqueued):
        release_group.configure(queueing_lock=f"release:{send_id}",
                                schedule_at=datetime.fromtimestamp(max(at, soonest), UTC)).defer(send_id=send_id)
    return at


@app.task(queue="send", retry=JOB_RETRY)
def release_group(send_id: int) -> int:
    """A time-zone group of a send is due: fan its batches out to the send jobs."""
    at = ledger.next_group_at(engine(), send_id)
    if at is not None and at > claim_until():
        # The queue's clock (the database's) ran ahead of this worker's: come back shortly, not in a tight loop.
        release_later(send_id, soonest=wall_clock() + 5.0)
        return 0
    return fan_out(None, send_id)


def fan_out(bound: procrastinate.App | None, send_id: int, parallel: int | None = None) -> int:
    """Defer up to `parallel` send_batch jobs for a send (fewer when it has fewer batches left)."""
    left = ledger.remaining(engine(), send_id)
    count = min(parallel or send_parallel(), sum(left.get(s, 0) for s in ("pending", *ledger.OPEN)))
    task = send_batch if bound is None else bound.tasks[send_batch.name]
    if count:
        jobs: list[JSONDict] = [{"send_id": send_id} for _ in range(count)]
        task.batch_defer(*jobs)
    elif ledger.finish_if_done(engine(), send_id) is None:
        release_later(send_id)
    return count


@app.task(queue="send", retry=SEND_RETRY, pass_context=True)
def send_batch(context: JobContext, send_id: int) -> dict[str, Any]:
    """Claim the next batch of the send (row lock, SKIP LOCKED), deliver it, and go on with the next one for up to
    `send_job_seconds()`, with up to as many batches in flight as `newsletter send` has (two for SendGrid: the
    next one is claimed and built while the last one's request is out, and sent once that is answered, while
    the last one is recorded; never two requests out at once); then defer the next job. The job that finds the
    send's audience not all planned yet plans the rest beside its deliveries (plan_rest).

    Batches, not jobs, are the unit of the ledger: each is claimed under its row lock and advisory lock, named
    after this job, and goes through the ledger's states as with one batch per job; a retry of this job first
    resumes the open batches it holds (at most the ones it had in flight), and the job stops claiming once one
    of its batches ends held. Several per job spare each batch the job's own cost (the
    queue's fetch and finish, the lease and status checks, the count of what is left, the next defer): 56-58%
    of a worker's time went there and into per-batch setup when every batch was a job.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from newsletter.deliver.errors import SendError
    from newsletter.deliver.ledger import fail_send
    from newsletter.deliver.mailer import PermanentDeliveryError
    from newsletter.deliver.send import default_concurrency

    eng = engine()
    sending.time_database(eng)
    job_id = context.job.id if context.job else None
    me = ledger.claimer(job_id, worker_name())
    t0, db0 = time.perf_counter(), sending.database_seconds()
    until = t0 + send_job_seconds()
    depth = default_concurrency(mailer())  # batches in flight at once, as `newsletter send` has them
    deliverer: sending.Deliverer | None = None
    job: SendJob | None = None
    done_batches: list[int] = []
    recipients, provider, leased = 0, 0.0, 0.0
    state: str | None = None
    ended: dict[str, Any] | None = None  # why the job stops claiming, when it is not the time
    own_first = True  # until a fresh batch comes: a retried job first resumes the open batches it holds
    pushed: threading.Event | None = None  # set when the provider's call for the last batch claimed is over
    error: BaseException | None = None
    in_flight: dict[Future[tuple[str, sending.Timing]],
                    tuple[Batch, float, float, threading.Event | None]] = {}
    overlap = True  # until a batch is given back: then the rest of this job claims after each answer
    planner: threading.Thread | None = None
    unlock: list[int] = []  # sent batches whose advisory locks this job still holds
    # One connection for the job's claims, one for its batches' advisory locks (guard), kept for the job.
    with (ledger.guard_connection(eng) as guard, eng.connect() as claims,
          ThreadPoolExecutor(depth, thread_name_prefix="batch") as pool, gc_spared()):
        with claims.begin():
            unplanned = ledger.planning_left(claims, send_id)
        if unplanned:
            planner = threading.Thread(target=plan_rest, args=(send_id,), name=f"plan-{send_id}", daemon=True)
            planner.start()
        stop = False
        while True:
            # Asked to stop (the worker, or this job): nothing more is claimed; the batches in flight finish.
            stop = stop or stop_requested.is_set() or context.should_abort()
            while not stop and error is None and len(in_flight) < depth:
                turn = None  # the last batch's `pushed`, when the next one waits for it once built
                if pushed is not None:
                    # Never two requests out at once (a worker cut off from the provider holds only the batch it
                    # was sending). The next batch is claimed and built while the last one's request is out, and
                    # its own request waits for that answer (Deliverer.waits_its_turn); where it cannot wait
                    # there, it is claimed once that call is over.
                    if overlap and deliverer is not None and deliverer.waits_its_turn:
                        turn = pushed
                    else:
                        pushed.wait()
                started, db_started = time.perf_counter(), sending.database_seconds()
                if started - leased >= LEASE_RENEWAL:
                    # Renewed at the job's first claim, and then often enough that it never lapses while on it.
                    try:
                        status = ledger.take_lease(eng, send_id)
                    except SendError as exc:
                        log.warning("%s", exc)
                        ended, stop = {"state": "left to newsletter send"}, True
                        break
                    leased = started
                    if status in ledger.ENDED:
                        ended, stop = {"state": status}, True
                        break
                job = job or send_job(send_id)
                # The send's status is read in the claim's own transaction: none is taken once it has ended.
                taken = ledger.claim_on(claims, send_id, worker_name(), job_id, guard, own_first=own_first,
                                        newsletter_id=job.newsletter_id, until=claim_until(), unless_ended=True)
                if taken.status in ledger.ENDED:
                    ended, stop = {"state": taken.status}, True
                    break
                batch = taken.batch
                if batch is None:
                    ended, stop = {"state": None}, True  # nothing left to take: finish_if_done below says
                    break
                own_first = own_first and batch.status != "pending"
                deliverer = deliverer or sending.Deliverer(eng, job, mailer(), me)
                pushed = threading.Event()
                in_flight[pool.submit(deliverer.deliver, batch, pushed, turn)] = (
                    batch, time.perf_counter() - started, sending.database_seconds() - db_started, turn)
                stop = time.perf_counter() >= until
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                batch, claim_seconds, claim_db, turn = in_flight.pop(future)
                if future.exception() is not None:
                    error = error or future.exception()  # the others finish and record; then it is raised
                    continue
                state, timing = future.result()
                if state == "claimed":
                    # Its turn did not come: the request before it is still out (a slow provider, a cut link).
                    # Given back to the other workers, with a job for it should every other one have ended; this
                    # job claims again only once that request is over.
                    ledger.give_back(claims, guard, batch.id)
                    send_batch.defer(send_id=send_id)
                    log.warning("send %s batch %s given back unsent: the request before it was not answered in "
                                "%.0fs", send_id, batch.number, sending.TURN_WAIT)
                    overlap, pushed = False, turn
                    continue
                if state == "taken":
                    log.warning("send %s batch %s was taken over by another worker while this one was cut off "
                                "from the database: it sends nothing of it", send_id, batch.number)
                    continue
                # A sent batch is never claimed again: its advisory lock guards nothing, and goes back with the
                # next few (ledger.release_many; a held one's stays with the job, to its end).
                done_batches.append(batch.number)
                if state == "sent":
                    unlock.append(batch.id)
                    if len(unlock) >= UNLOCK_EVERY:
                        ledger.release_many(guard, unlock)
                        unlock.clear()
                recipients += timing.recipients
                provider += timing.provider
                log.info("send %s batch %s %s: %d recipients in %.3fs: db %.3fs, provider %.3fs (and %.3fs "
                         "waiting for its turn)", send_id, batch.number, state, timing.recipients,
                         claim_seconds + timing.total, claim_db + timing.db, timing.provider, timing.waited)
                # Only sent batches let the job go on: a held one (unknown) is this job's to report, as before.
                stop = stop or state != "sent"
    if planner is not None:
        planner.join()  # the job ends with its planning (and the jobs that planning defers)
    if error is not None:
        if isinstance(error, PermanentDeliveryError):  # the provider will not take this send: stop it for all
            fail_send(eng, send_id, str(error))
        raise error
    last = done_batches[-1] if done_batches else None
    if ended is not None and ended["state"] is not None:
        return {"batch": last, **ended, "batches": done_batches}
    done = ledger.finish_if_done(eng, send_id, job_id)
    if done is None:
        release_later(send_id)
    if ended is not None:  # the audience is all claimed (of the time-zone groups due)
        return {"batch": last, "state": done, "batches": done_batches}
    if done is None and ledger.remaining(eng, send_id, job_id).get("pending"):
        send_batch.defer(send_id=send_id)
    total, db = time.perf_counter() - t0, sending.database_seconds() - db0
    return {"batch": last, "state": state, "batches": done_batches, "recipients": recipients,
            "seconds": round(total, 6), "db_seconds": round(db, 6), "provider_seconds": round(provider, 6)}


# -- periodic -----------------------------------------------------------------------------------------------

# After an outage, fire times this recent are still honoured (a send only within its grace, as `newsletter run`
# on one machine does: up to a day, never into the next send's slot).
CATCH_UP = timedelta(days=1)
SCHEDULE_MARK = "scale:scheduled-until"


@app.periodic(cron="* * * * *", periodic_id="schedule")
@app.task(queue="schedule", queueing_lock="newsletter-tick")
def tick(timestamp: int) -> list[str]:
    """Every minute (UTC): defer each newsletter's collects and sends that fell due since the last tick.

    procrastinate defers each tick once however many workers run (a unique key per periodic task and
    timestamp), and a mark in the database makes each minute handled once even if a tick is replayed; the
    issue's unique (newsletter, period) key makes a second build of a period impossible anyway.
    """
    return schedule_until(datetime.fromtimestamp(timestamp, UTC))


def schedule_until(end: datetime) -> list[str]:
    """Defer what fell due between the last handled moment and `end` (at most CATCH_UP back), then mark `end`."""
    from newsletter.store.models import Meta

    with session_scope(engine()) as session:
        mark = session.get(Meta, SCHEDULE_MARK, with_for_update=True)
        start = end - timedelta(minutes=1)
        if mark is not None:
            start = max(datetime.fromisoformat(mark.value), end - CATCH_UP)
        if start >= end:
            return []
        # Deferred before the mark moves: a crash in between repeats the window, and the queueing locks and the
        # issue's unique key make the repeat harmless; the other order could lose a send.
        deferred = defer_due(start, end) + defer_late_approvals(end)
        if mark is None:
            session.add(Meta(key=SCHEDULE_MARK, value=end.isoformat()))
        else:
            mark.value = end.isoformat()
    return deferred


def defer_due(start: datetime, end: datetime) -> list[str]:
    """Defer each newsletter's collects, draft builds and sends whose local time falls in (start, end]."""
    from newsletter.schedule.cadence import send_grace

    deferred: list[str] = []
    for slug, nl in newsletters().items():
        try:
            collects = due.due_between(nl, "collect", start, end)
            builds = due.due_between(nl, "build", start, end)
            sends = due.due_between(nl, "send", start, end)
        except ValueError as exc:
            log.error("%s: schedule: %s", nl.path or slug, exc)
            continue
        if collects:
            try:
                collect_newsletter.configure(queueing_lock=f"collect:{slug}").defer(slug=slug)
                deferred.append(f"collect {slug}")
            except AlreadyEnqueued:
                log.info("%s: a collect is already waiting; not deferring another", slug)
        grace = send_grace(nl)
        for job, times in (("build", builds), ("send", sends)):
            for when in times:
                send_time = due.send_of_build(nl, when) if job == "build" else when
                if end - send_time.astimezone(UTC) > grace:
                    continue  # too late now: the next period's issue will carry these stories
                period = due.period_key(nl, send_time)
                try:
                    if job == "build":  # a draft ahead of its send, for an editor to approve (or hold)
                        build_issue.configure(queueing_lock=f"build:{slug}:{period}").defer(slug=slug, period=period)
                    else:
                        send_period.configure(queueing_lock=f"send:{slug}:{period}").defer(slug=slug, period=period)
                    deferred.append(f"{job} {slug} {period}")
                except AlreadyEnqueued:
                    pass
    return deferred


def defer_late_approvals(now: datetime) -> list[str]:
    """Issues approved after their send time (within the grace a missed send has) go out now."""
    from newsletter.compose.select import newsletter_row
    from newsletter.schedule.cadence import last_send_due, send_grace

    deferred = []
    for slug, nl in newsletters().items():
        try:
            when = last_send_due(nl, now)
        except ValueError:
            continue
        if when is None or now - when.astimezone(UTC) > send_grace(nl):
            continue
        with session_scope(engine()) as session:
            nrow = newsletter_row(session, slug)
            issue_id = None if nrow is None else session.scalar(select(IssueRow.id).where(
                IssueRow.newsletter_id == nrow.id, IssueRow.period == due.period_key(nl, when),
                IssueRow.status == "approved"))
        if issue_id is not None and send_if_allowed(nl, issue_id) == "sending":
            deferred.append(f"late approval {slug} {issue_id}")
    return deferred


STALLED_SECONDS = float(os.environ.get("NEWSLETTER_WORKER_STALLED_SECONDS", "30"))


@app.periodic(cron="* * * * * */5", periodic_id="stalled")
@app.task(queue="maintenance", queueing_lock="newsletter-stalled", pass_context=True)
async def retry_stalled(context: JobContext, timestamp: int) -> list[int]:
    """Jobs of workers that stopped sending heartbeats (killed, machine lost) go back to the queue."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_SECONDS)
    retried = []
    for job in stalled:
        if context.job and job.id == context.job.id:
            continue
        await manager.retry_job(job)
        if job.id is not None:  # always set on a job read from the database
            retried.append(job.id)
    if retried:
        log.warning("retried %d jobs of stalled workers: %s", len(retried), retried)
    return retried
