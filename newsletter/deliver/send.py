"""`newsletter send` (and the send step of `newsletter run`): one issue to its audience, in one process.

The driver of the ledger's batch API (newsletter.deliver.ledger: the states; newsletter.deliver.engine: one batch)
on one machine. `send_issue` checks the issue can be sent, freezes its audience (`start_send`) and builds its one
Message; `run_send` takes the send's lease (newsletter.deliver.lease), resumes what an earlier run left behind,
then claims the audience page by page and delivers each page, with up to `concurrency` batches in flight, until
the audience is walked, a batch is refused for good, or it is asked to stop (Ctrl-C: after the batch in flight).
It ends by writing how the run ended (done, held, stopped, failed); run it again to go on from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update

from newsletter.compose.issue import has_content
from newsletter.config import Newsletter, Settings
from newsletter.config.cadence import shortest_gap
from newsletter.deliver.audience import audience_newsletter, frequency_filter
from newsletter.deliver.cancels import MAX_AHEAD
from newsletter.deliver.engine import UNKNOWN_POLICIES, BatchSender, SendJob, SendOptions, gc_spared
from newsletter.deliver.errors import SendError
from newsletter.deliver.issue_mail import issue_message
from newsletter.deliver.lease import SendLease
from newsletter.deliver.ledger import Batch, Ledger, fail_send, start_send
from newsletter.deliver.mailer import DeliveryError, Mailer, Message, Recipient
from newsletter.render.variant import variant_of
from newsletter.store.db import ensure_newsletter, secret_key, session_scope
from newsletter.store.models import IssueRow, Send, utcnow
from newsletter.subscribers.tokens import Signer

DEFAULT_BATCH = 1000
SMTP_BATCH = 50  # SMTP cannot be asked what it accepted: small batches keep an unknown outcome small
SENDABLE = ("draft", "approved", "sending", "held")


@dataclass
class SendReport:
    send_id: int
    issue_id: int
    status: str  # done, already-sent, held, stopped, failed
    total: int
    sent_now: int
    sent_before: int
    batches_now: int
    error: str | None = None
    held_batches: list[int] = dataclasses.field(default_factory=list)
    held_recipients: int = 0
    # The operator's `--unknown` decision, applied at the start of this run to the batches listed to them.
    decided: str | None = None
    decided_batches: list[int] = dataclasses.field(default_factory=list)
    decided_recipients: int = 0
    skipped: int = 0  # people of this send the operator skipped (ever): no delivery row, not sent
    left_during: int = 0  # readers who unsubscribed after the send started, before their copy went
    next_at: float | None = None  # a `waiting` send: when its next time-zone group is due (epoch seconds)


class _Run:
    """One run of one send: the leftovers of earlier runs first, then the rest of the audience, page by page."""

    def __init__(self, sender: BatchSender) -> None:
        self.sender, self.ledger, self.options = sender, sender.ledger, sender.options
        self.held: list[Batch] = []
        sender.defer_settle = True  # an unknown batch waits aside for the activity log; _report_out settles it

    def _stopped(self) -> bool:
        return self.options.stop is not None and self.options.stop.is_set()

    def _done_with(self, batch: Batch) -> None:
        if batch.status == "unknown":
            self.held.append(batch)
        self.sender.report()

    def run(self) -> SendReport:
        self.sender.report()
        # Leftovers of an earlier run first: a claimed one was never sent, a sending/unknown one is settled.
        for batch in self.ledger.unfinished():
            if self._stopped():
                return self._report_out("stopped")
            self.sender.resume(batch)
            self._done_with(batch)
        if self.options.concurrency > 1:
            return self._run_concurrently()
        while True:
            if self._stopped():
                return self._report_out("stopped")
            fresh = self.ledger.claim_next(self.sender.me, self._until())
            if fresh is None:
                break
            self.sender.deliver(fresh)
            self._done_with(fresh)
        return self._report_out("held" if self.held else "done")

    def _until(self) -> float:
        """Time-zone groups due by this moment are claimed: now, or SendGrid's 72 hours ahead (it holds the mail
        until each request's send_at); SMTP and the outbox leave the later groups to a later run."""
        mailer = self.sender.mailer
        if getattr(mailer, "name", "") == "sendgrid" and callable(now := getattr(mailer, "now", None)):
            return float(now()) + MAX_AHEAD
        return self.options.wall()

    def _run_concurrently(self) -> SendReport:
        """Claims stay in order in this thread; up to `concurrency` batches are delivered at once."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        stopped = False
        error: BaseException | None = None
        in_flight: dict[Future[None], Batch] = {}
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="send") as pool:
            while True:
                while error is None and len(in_flight) < self.options.concurrency:
                    if self._stopped():
                        stopped = True
                        break
                    batch = self.ledger.claim_next(self.sender.me, self._until())
                    if batch is None:
                        break
                    in_flight[pool.submit(self.sender.deliver, batch)] = batch
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = in_flight.pop(future)
                    if future.exception() is not None and error is None:
                        error = future.exception()  # stop claiming; let the others finish and record
                    elif batch.status == "unknown":
                        self.held.append(batch)
                self.sender.report()
                if stopped and not in_flight:
                    break
        if error is not None:
            raise error
        return self._report_out("stopped" if stopped else "held" if self.held else "done")

    def _report_out(self, status: str) -> SendReport:
        if status != "stopped":  # the batches put aside for the provider's activity log, then what SendGrid owes
            self.sender.settle_waiting()
            self.held = [b for b in self.held if b.status == "unknown"]
            # Readers whose own send time has not come yet: the send stays open (`waiting`) until then.
            status = "held" if self.held else "waiting" if self.ledger.next_at() is not None else "done"
        self.sender.release_cancellations()
        held_recipients = sum(self.ledger.held_recipients(b) for b in self.held)
        return SendReport(self.ledger.send_id, 0, status, self.ledger.total, self.sender.sent_now,
                          self.ledger.sent_before, self.sender.batches_now,
                          held_batches=[b.number for b in self.held], held_recipients=held_recipients,
                          skipped=self.ledger.skipped(), left_during=self.ledger.left_during_send(),
                          next_at=self.ledger.next_at())


def _decide(ledger: Ledger, policy: str) -> tuple[list[int], int]:
    """Apply the operator's `--unknown resend|skip` to the held batches they were shown (listed), by id, and to no
    other: one that goes unknown during this run is held again and reported."""
    if policy == "hold":
        return [], 0
    batches = ledger.listed()
    return [b.number for b in batches], sum(ledger.decide(b, policy) for b in batches)


def run_send(engine: Engine, send_id: int, newsletter_id: int, slug: str, message: Message, mailer: Mailer,
             signer: Signer, base_url: str, options: SendOptions | None = None,
             variant_message: Callable[[str], Message] | None = None) -> SendReport:
    """Deliver (or resume delivering) one send. Raises DeliveryError when it must stop; state is kept."""
    options = options or SendOptions()
    if options.unknown not in UNKNOWN_POLICIES:
        raise SendError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}")
    lease = SendLease(engine, send_id)
    lease.acquire()
    try:
        # The decision is recorded on the listed batches before anything is sent; the engine itself only holds.
        sender = BatchSender(engine, SendJob(send_id, newsletter_id, slug, message, signer, base_url,
                                             variant_message), mailer,
                             dataclasses.replace(options, unknown="hold"))
        decided, decided_recipients = _decide(sender.ledger, options.unknown)
        with gc_spared():
            report = _Run(sender).run()
        if decided:
            report.decided, report.decided_batches = options.unknown, decided
            report.decided_recipients = decided_recipients
    except DeliveryError as exc:
        fail_send(engine, send_id, str(exc))
        raise
    finally:
        mailer.flush()
        lease.release()
    if report.status == "held":
        error = f"{report.held_recipients} recipients in batches {report.held_batches} have an unknown outcome"
        report.issue_id = sender.ledger.finish("held", error)
    else:
        report.issue_id = sender.ledger.finish(report.status if report.status in ("done", "waiting") else "stopped")
    return report


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the batch in flight, then stop (resumable). Second Ctrl-C: stop now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- an issue ------------------------------------------------------------------------------------------------

def per_reader_time(nl: Newsletter) -> bool:
    """Whether a scheduled send goes at each reader's own local time: a cadence of a day or more (several sends
    a day are times of the newsletter's day, not a reader's morning)."""
    return shortest_gap(nl.schedule.send, ZoneInfo(nl.schedule.timezone)) >= timedelta(hours=23)


def default_concurrency(mailer: Mailer) -> int:
    # SendGrid pushes are independent HTTP requests: two in flight overlap our work with the API's.
    # SMTP shares one connection and the outbox one folder: one at a time.
    return 2 if getattr(mailer, "name", "") == "sendgrid" else 1


def default_batch_size(mailer: Mailer) -> int:
    return SMTP_BATCH if getattr(mailer, "name", "") == "smtp" else DEFAULT_BATCH


def check_mailer_ready(mailer: Mailer, nl: Newsletter) -> None:
    """The mailer's own check before a send (DKIM: the published key matches ours), DeliveryError when it fails."""
    ready = getattr(mailer, "ready", None)
    if ready is not None:
        ready(nl.from_address)


def send_issue(
    engine: Engine,
    nl: Newsletter,
    issue_id: int,
    mailer: Mailer,
    settings: Settings,
    *,
    batch_size: int | None = None,
    options: SendOptions | None = None,
    due: datetime | None = None,
    before: datetime | None = None,
) -> SendReport:
    """Deliver the issue to everyone in its audience who has not had it yet.

    `due` (the scheduler's send: the instant it was due, aware): each reader gets it at that wall-clock time in
    their own time zone (newsletter.deliver.zones); the send stays `waiting` while some readers' time is still
    to come (SMTP, outbox: run it again then; SendGrid holds each request until its send_at). None: now, for all.
    `before`: the newsletter's next send; every group goes before it.
    """
    options = options or SendOptions(rate=settings.send_rate)
    if options.rate is None:
        options.rate = settings.send_rate
    with session_scope(engine) as session:
        nrow = ensure_newsletter(session, nl.slug, nl.name)
        row = session.get(IssueRow, issue_id)
        if row is None or row.newsletter_id != nrow.id:
            raise SendError(f"no issue {issue_id} in newsletter '{nl.slug}'")
        if row.status == "sent":
            send = session.scalar(select(Send).where(Send.issue_id == issue_id))
            total = send.total if send else 0
            return SendReport(send.id if send else 0, issue_id, "already-sent", total, 0, total, 0)
        if row.status not in SENDABLE:
            raise SendError(f"issue {issue_id} is {row.status}: it cannot be sent")
        if not has_content(row):
            raise SendError(f"issue {issue_id} has no stories and no intro: nothing to send")
        secret = secret_key(session, settings.secret_key)
        # A cadence's issues go to its parent's readers who chose it (newsletter.deliver.audience).
        newsletter_id = audience_newsletter(session, nl).id
    check_mailer_ready(mailer, nl)  # a DKIM key that receivers could not verify: nothing is started
    size = batch_size or options.batch_size or default_batch_size(mailer)
    send_id = start_send(engine, issue_id, newsletter_id, mailer.name, size, frequency_filter(nl),
                         due if due is not None and per_reader_time(nl) else None, before)
    _set_issue(engine, issue_id, status="sending")
    message = issue_message(engine, nl, issue_id, settings, send_id=send_id)
    report = run_send(engine, send_id, newsletter_id, nl.audience_slug, message, mailer, Signer(secret),
                      settings.base_url, options, variant_messages(engine, nl, issue_id, settings, send_id))
    if report.status == "done":
        _set_issue(engine, issue_id, status="sent", sent_at=utcnow())
    return report


def variant_messages(engine: Engine, nl: Newsletter, issue_id: int, settings: Settings,
                     send_id: int) -> Callable[[str], Message]:
    """One Message per variant the send's batches name, made (rendered, or taken from the kept render) the first
    time a batch of it goes out, then reused: renders = distinct variants, never one per reader."""
    made: dict[str, Message] = {}
    lock = threading.Lock()

    def message_for(key: str) -> Message:
        with lock:  # batches of one variant may be in flight at once (SendGrid's concurrency)
            if key not in made:
                made[key] = issue_message(engine, nl, issue_id, settings, send_id=send_id, variant=variant_of(key))
            return made[key]

    return message_for


def recent_scheduled_send(engine: Engine, nl: Newsletter, issue_id: int,
                          now: datetime | None = None) -> str | None:
    """Why a hand-started send of this issue would give readers a second digest within one period, or None.

    Refused (unless forced) when a scheduled issue of the same newsletter (one with a period) started going out
    less than one period of its send cadence ago (its shortest gap: a day for a daily send). A send that has
    already started is never refused: resuming it sends nobody a second copy.
    """
    found = _recent_other_send(engine, nl, issue_id, now, scheduled=True)
    if found is None:
        return None
    issue_number, (number, period_key, started, sent), period = found
    return (f"the scheduled issue #{number} ({period_key}) of {nl.slug} started going out at {started:%Y-%m-%d %H:%M} "
            f"UTC ({sent} sent), less than one send period ({_period_text(period)}, `send = \"{nl.schedule.send}\"`) "
            f"ago: sending issue #{issue_number} now would give those readers a second digest. Nothing was sent; "
            "send it with --force if a second one is meant")


def recent_hand_send(engine: Engine, nl: Newsletter, issue_id: int, now: datetime | None = None) -> str | None:
    """The same rule from the scheduler's side: why the scheduled send of this issue would follow a hand-started
    issue (one without a period) within one send period, or None. The scheduler then leaves its issue unsent
    and says so; `newsletter send SLUG --issue N --force` sends it anyway."""
    found = _recent_other_send(engine, nl, issue_id, now, scheduled=False)
    if found is None:
        return None
    issue_number, (number, _period, started, sent), period = found
    return (f"issue #{number} of {nl.slug} was sent by hand at {started:%Y-%m-%d %H:%M} UTC ({sent} sent), less "
            f"than one send period ({_period_text(period)}) ago: the scheduled issue #{issue_number} was not sent, "
            f"so that no reader gets a second digest; `newsletter send {nl.slug} --issue {issue_id} --force` sends it")


def _recent_other_send(engine: Engine, nl: Newsletter, issue_id: int, now: datetime | None, *,
                       scheduled: bool) -> tuple[int, Any, timedelta] | None:
    """(this issue's number, (number, period, started_at, sent) of the other issue's send, the period) when
    another issue of the newsletter (scheduled ones: with a period; else hand-made ones: without) started going
    out less than one send period before `now`; None also when this issue's own send has started."""
    with session_scope(engine) as session:
        issue = session.get(IssueRow, issue_id)
        if issue is None or session.scalar(select(Send.id).where(Send.issue_id == issue_id)) is not None:
            return None
        period = shortest_gap(nl.schedule.send, ZoneInfo(nl.schedule.timezone))
        until = now or utcnow()
        since = until - period
        kind = IssueRow.period.is_not(None) if scheduled else IssueRow.period.is_(None)
        other = session.execute(
            select(IssueRow.number, IssueRow.period, Send.started_at, Send.sent)
            .join(Send, Send.issue_id == IssueRow.id)
            .where(IssueRow.newsletter_id == issue.newsletter_id, IssueRow.id != issue_id, kind,
                   Send.started_at >= since, Send.started_at <= until,
                   (Send.sent > 0) | (Send.status != "failed"))
            .order_by(Send.started_at.desc()).limit(1)
        ).first()
        return (issue.number, tuple(other), period) if other is not None else None


def _period_text(period: timedelta) -> str:
    hours = period.total_seconds() / 3600
    return f"{hours / 24:.0f} day(s)" if hours >= 23 else f"{hours:.0f} hour(s)"


def _set_issue(engine: Engine, issue_id: int, **values: Any) -> None:
    with session_scope(engine) as session:
        session.execute(update(IssueRow).where(IssueRow.id == issue_id).values(**values))


def send_test(nl: Newsletter, issue_id: int, engine: Engine, mailer: Mailer, settings: Settings,
              address: str) -> None:
    """Send the issue to one address (an editor's own) without touching the ledger."""
    check_mailer_ready(mailer, nl)
    message = issue_message(engine, nl, issue_id, settings, test=True)
    mailer.push(message, [Recipient(email=address, values={"unsubscribe_url": f"{settings.base_url}/u/test",
                                                           "feedback_url": f"{settings.base_url}/f/test",
                                                           "manage_url": f"{settings.base_url}/m/test"})])
    mailer.flush()
