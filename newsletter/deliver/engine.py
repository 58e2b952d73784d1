"""Delivering one batch of a send, and settling a batch whose outcome is unknown: the same code on one machine
(`newsletter send`, `newsletter run`) and in the scale-mode workers.

A batch is handed to the provider until it is sent, held (outcome unknown and no way to find out) or refused for
good, every step written to the ledger (newsletter.deliver.ledger) before the next one:

    deliver(batch)  -- build the request (Mailer.prepare, when it has one), mark `sending` (attempt N), push,
                       then record what happened:
                         accepted      -> deliveries + `sent`, in one transaction
                         partly (SMTP) -> deliveries for those accepted; the one message in flight when the
                                          connection died is held by name (ledger.hold); the rest again. An
                                          attempt that delivered someone does not count toward max_attempts
                         no answer     -> `unknown`, then settle(batch)
                         for now       -> `retry`, back off (full jitter, never before Retry-After), again,
                                          until `max_attempts`: then it raises, the ledger says `retry`
                         for good      -> `failed`, and it raises
    settle(batch)   -- an `unknown` batch: cancel it if it was held (SendGrid hold-and-cancel, see
                       newsletter.deliver.cancels) and send its readers again; else ask the provider what it
                       accepted (once its activity log is old enough: meanwhile the batch waits aside, the
                       others go on); else resend (idempotent outbox, or `--unknown resend`), skip, or hold
    resume(batch)   -- a batch an earlier run or a dead worker left in any open state: settle, then deliver

What a push did to each recipient lands in one place, `BatchSender._pushed`: delivered, refused for good by
the receiving server (a bounce: suppressed, no delivery), or left out because its copy could not be built
(PushResult.failed: no delivery, not a bounce, named in the batch's error); the rest of the batch goes on.

The engine waits (backoff, pacing, the activity log) through `SendOptions.sleep`; a scale-mode worker passes a
sleep that raises instead, so that the job queue does the waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from newsletter.deliver.cancels import MAX_AHEAD, Canceller, Hold
from newsletter.deliver.errors import OutcomeUnknownError, PartialDeliveryError
from newsletter.deliver.lease import worker_name
from newsletter.deliver.ledger import Batch, Ledger, Row, batch_key
from newsletter.deliver.mailer import (
    Mailer,
    Message,
    PermanentDeliveryError,
    PushResult,
    Recipient,
    TemporaryDeliveryError,
)
from newsletter.render import tokens
from newsletter.render.tracking import TrackSigner
from newsletter.store.db import install_id
from newsletter.subscribers.tokens import MANAGE, Signer

UNKNOWN_POLICIES = ("hold", "resend", "skip")
SEND_AT_MIN = 60.0  # seconds: a time-zone group due sooner than this goes now, without send_at

_frozen = 0
_frozen_lock = threading.Lock()
_thresholds = gc.get_threshold()
# Containers allocated between young collections while a send runs (Python's default: 700). A batch makes and
# frees some 10,000 of them, by reference count, not by the collector; collecting every 700 allocations walks
# them for nothing (2% of a send's instructions, callgrind).
YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def gc_spared() -> Iterator[None]:
    """While a send runs, the garbage collector leaves alone the objects that existed before it (gc.freeze).

    A send builds some 10,000 short-lived containers per batch; enough of them live across a collection to set
    off full collections, each walking every object the process holds (the modules, SQLAlchemy's metadata):
    30% of a send's CPU. Frozen, the collector walks the send's own objects only, and less often
    (YOUNG_THRESHOLD); everything is handed back to it (gc.unfreeze, the thresholds as they were) when the last
    send running in the process ends, so nothing is kept for longer."""
    global _frozen, _thresholds
    with _frozen_lock:
        if _frozen == 0:
            gc.freeze()
            _thresholds = gc.get_threshold()
            gc.set_threshold(max(_thresholds[0], YOUNG_THRESHOLD), *_thresholds[1:])
        _frozen += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen -= 1
            if _frozen == 0:
                gc.set_threshold(*_thresholds)
                gc.unfreeze()


@dataclass
class SendProgress:
    sent: int  # delivered so far, this run and earlier ones
    total: int
    sent_this_run: int
    elapsed: float  # seconds, this run
    note: str | None = None  # e.g. "rate limited, retrying in 2.0s"

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.sent)

    @property
    def rate(self) -> float:
        return self.sent_this_run / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return self.remaining / self.rate if self.rate > 0 else None


@dataclass
class SendOptions:
    batch_size: int | None = None  # default: 1000, or 50 for SMTP
    rate: float | None = None  # messages per second, None: as fast as the provider takes them
    max_attempts: int = 8
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    unknown: str = "hold"  # what to do with a batch whose outcome cannot be found out: hold, resend, skip
    stop: threading.Event | None = None  # set it (Ctrl-C does) to stop after the batch in flight
    progress: Callable[[SendProgress], None] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic  # tests pass a fake clock with a fake sleep
    # The wall clock (epoch seconds) that says which time-zone groups of a send are due (the scheduler's clock).
    wall: Callable[[], float] = time.time
    # Batches in flight at once. >1 overlaps building the next request and writing the ledger with the
    # provider's work on the previous one; only for thread-safe mailers (SendGrid: one HTTP request per push).
    concurrency: int = 1


@dataclass(frozen=True)
class SendJob:
    """What every batch of one send needs besides the ledger: the issue's Message and how to sign its links."""

    send_id: int
    newsletter_id: int
    slug: str
    message: Message
    signer: Signer
    base_url: str
    # The Message of one variant's batches (sections off, text only: newsletter.render.variant), made once per
    # variant by the caller; None, or a batch without a variant: `message` for everyone.
    variant_message: Callable[[str], Message] | None = None


class BatchSender:
    """Delivers batches of one send through one mailer; thread-safe for `concurrency` > 1 (see SendOptions)."""

    def __init__(self, engine: Engine, job: SendJob, mailer: Mailer, options: SendOptions,
                 me: str | None = None) -> None:
        self.job, self.mailer, self.options = job, mailer, options
        self.ledger = Ledger(engine, job.send_id, job.newsletter_id)
        self.base_url = job.base_url.rstrip("/")
        self.me = me or worker_name()  # claims and attempts name it (a scale job: so that its retry finds them)
        self.started = time.monotonic()
        self.sent_now = 0
        self.batches_now = 0
        self.next_slot = options.clock()
        self.lock = threading.Lock()
        # This database's identity, in every request beside send and batch (the Activity lookup is keyed by all).
        self.install = install_id(engine)
        # Tracked links or the open pixel in the issue (its schedule file's [tracking]): each reader's value.
        tracked = tokens.RECIPIENT in job.message.html or tokens.RECIPIENT in job.message.text
        self._tracker = TrackSigner(job.signer.subkey("tracking")) if tracked else None
        # Unknown batches waiting for the provider's activity log, settled beside the send (see settle_waiting);
        # only a driver that calls settle_waiting sets defer_settle (a scale-mode job hands its waits to the queue).
        self.defer_settle = False
        self.waiting: list[tuple[float, Batch]] = []
        holds = getattr(mailer, "holds", None)
        self.canceller = (Canceller(engine, job.send_id, mailer, options.sleep, self.report)  # type: ignore[arg-type]
                          if callable(holds) and holds() else None)
        if self.canceller is not None:
            self.canceller.release_due()  # cancellations an earlier run left to release: free SendGrid's 10

    # -- the batch API --------------------------------------------------------------------------------------
    def resume(self, batch: Batch) -> None:
        """Finish a batch found in any open state; it ends sent, or `unknown` when held."""
        if batch.status == "sending":  # its process died while the provider had it: outcome unknown
            self.ledger.unknown(batch, "interrupted while the provider was called")
        if batch.status == "unknown" and not self.settle(batch):
            return
        self.deliver(batch)

    def deliver(self, batch: Batch) -> None:
        """Send what is left of one batch until it is sent, held (unknown) or the errors are permanent."""
        rows = batch.rows if batch.rows is not None else self.ledger.rows_left(batch)
        batch.rows = None
        base = (self.job.variant_message(batch.variant) if self.job.variant_message and batch.variant
                else self.job.message)
        message = dataclasses.replace(
            base, custom_args={**base.custom_args, "install": self.install,
                                           "send": str(self.job.send_id),
                                           "batch": batch_key(self.job.send_id, batch.number)})
        failures = 0  # attempts that delivered nothing: only those count toward max_attempts
        while True:
            if not rows:
                self.ledger.record(batch, [], final=True)  # `unknown` when someone of it is held by name
                return
            self._pace(len(rows))
            recipients = self._recipients(rows, base)
            try:
                # Held on SendGrid: the batch id to cancel is written before the request can go out.
                hold = (self.canceller.plan(batch.id, batch.attempts + 1, self.ledger.group_at(batch.group))
                        if self.canceller else None)
                push = self._prepare(message, recipients, hold,  # built before the mark: a kill while building
                                     self.ledger.group_at(batch.group))
                self.ledger.sending(batch, self.me)              # holds nobody
                result = push()
            except PermanentDeliveryError as exc:
                self.ledger.failed(batch, str(exc))
                raise
            except PartialDeliveryError as exc:
                accepted = [r for r in rows if r[2] in exc.accepted]
                self._count(self.ledger.record(batch, accepted, message_ids=exc.accepted))
                rows = [r for r in rows if r[2] not in exc.accepted]
                if exc.outcome_unknown_for:
                    # Only the message in flight is uncertain: hold that one by name, send the rest of the batch.
                    self.ledger.hold(batch, [r for r in rows if r[2] == exc.outcome_unknown_for], str(exc))
                    rows = [r for r in rows if r[2] != exc.outcome_unknown_for]
                if not accepted:
                    failures += 1
                if rows:
                    self._retry_or_stop(batch, exc, failures)
                continue
            except OutcomeUnknownError as exc:
                self.ledger.unknown(batch, str(exc))
                if not self.settle(batch):
                    return
                rows = self.ledger.rows_left(batch)
                failures += 1
                if rows:
                    self._retry_or_stop(batch, exc, failures)
                continue
            except TemporaryDeliveryError as exc:
                failures += 1
                self._retry_or_stop(batch, exc, failures)
                continue
            self._pushed(batch, rows, result)
            self.batches_now += 1
            return

    def settle(self, batch: Batch, waited: bool = False) -> bool:
        """Settle a batch whose outcome is unknown. True: its remaining recipients may be sent now.

        False: it stays `unknown`, held for the operator, or (when `defer_settle`) put aside in `waiting` until
        the provider's activity log can be believed; `settle_waiting` comes back to it.
        """
        hold = self.canceller.of(batch.id, batch.attempts) if self.canceller else None
        if hold is not None and self.canceller is not None:
            if self.canceller.cancel(hold):
                self.report(f"batch {batch.number}: SendGrid batch {hold.batch_id} cancelled before it went out; "
                            "sending its readers again")
                self.ledger.retry(batch, None)
                return True
            why = (f"the cancellation of SendGrid batch {hold.batch_id} could not be confirmed 10 minutes before "
                   f"its send_at ({time.strftime('%H:%M:%S', time.gmtime(hold.send_at))} UTC): outcome unknown")
            self.report(f"batch {batch.number}: {why}")
            self.ledger.unknown(batch, why)
        lookup = getattr(self.mailer, "accepted", None)
        available = getattr(self.mailer, "activity_available", None)
        # An account that cannot answer (no Activity add-on: 403) is not waited for (D3).
        if lookup is not None and (not callable(available) or available()):
            settle = float(getattr(self.mailer, "activity_settle_seconds", 0) or 0)
            wait = batch.claimed_at + settle - time.time() if batch.claimed_at else settle
            if wait > 0 and self.defer_settle and not waited:
                with self.lock:
                    self.waiting.append((time.time() + wait, batch))
                self.report(f"batch {batch.number} waits {wait:.0f}s aside for the provider's activity log; "
                            "the others go on")
                return False
            if wait > 0 and not waited:  # (waited: settle_waiting has slept it out already)
                self.report(f"waiting {wait:.0f}s for the provider's activity log to settle (batch "
                            f"{batch.number})")
                self.options.sleep(wait)
            accepted = lookup({"install": self.install, "send": str(self.job.send_id),
                               "batch": batch_key(self.job.send_id, batch.number)})
            if accepted is not None:
                rows = self.ledger.rows_left(batch)
                self._count(self.ledger.record(batch, [r for r in rows if r[2].lower() in accepted]))
                self.ledger.retry(batch, None)
                return True
        policy = self.options.unknown
        if getattr(self.mailer, "name", "") == "outbox":
            policy = "resend"  # one file per address, overwritten: sending again cannot duplicate
        if policy == "resend":
            self.ledger.retry(batch, None)
            return True
        if policy == "skip":  # recorded as skipped, never as delivered (newsletter.deliver.ledger.Ledger.decide)
            self.ledger.decide(batch, "skip")
            return False
        if batch.status != "unknown":
            self.ledger.unknown(batch)
        return False

    def settle_waiting(self) -> None:
        """Settle, then deliver, the batches put aside for the activity log, each once its wait is over."""
        while True:
            with self.lock:
                if not self.waiting:
                    return
                self.waiting.sort(key=lambda w: w[0])
                due, batch = self.waiting.pop(0)
            if self.options.stop is not None and self.options.stop.is_set():
                return  # it stays unknown: the next run settles it
            wait = due - time.time()
            if wait > 0:
                self.report(f"waiting {wait:.0f}s for the provider's activity log to settle (batch "
                            f"{batch.number})")
                self.options.sleep(wait)
            if self.settle(batch, waited=True):
                self.deliver(batch)

    def release_cancellations(self) -> None:
        """Release the SendGrid cancellations whose send_at has passed (a run ends with this)."""
        if self.canceller is not None:
            self.canceller.release_due()

    def report(self, note: str | None = None) -> None:
        """Tell the caller's progress callback where the send is (and why it waits, in `note`)."""
        if self.options.progress:
            ledger = self.ledger
            self.options.progress(SendProgress(ledger.sent_before + self.sent_now, ledger.total, self.sent_now,
                                               time.monotonic() - self.started, note))

    # -- one push -------------------------------------------------------------------------------------------
    def _pushed(self, batch: Batch, rows: Sequence[Row], result: PushResult) -> None:
        """Record a push that returned: each recipient delivered, refused for good (a bounce), or left out because
        its message could not be built (PushResult.failed: recorded on the batch, skipped); batch `sent`."""
        bounced: Mapping[str, str] = getattr(result, "rejected", None) or {}
        not_built = result.failed
        delivered = ([r for r in rows if r[2] not in bounced and r[2] not in not_built] if bounced or not_built
                     else rows)
        self._count(self.ledger.record(batch, delivered, message_ids=result.message_ids, bounced=bounced,
                                       not_built=not_built, final=True,
                                       provider_message_id=result.provider_message_id))
        for email, why in not_built.items():
            self.report(f"not sent to {email}: {why}")

    def _prepare(self, message: Message, recipients: Sequence[Recipient],
                 hold: Hold | None = None, due: float | None = None) -> Callable[[], PushResult]:
        """Build the batch's request (a mailer with `prepare`: every message, the whole body) now, before the batch
        is marked `sending`, so that only the network call itself can leave an unknown outcome. A held request
        (SendGrid hold-and-cancel) goes in its own SendGrid batch, to go out at the hold's send_at; one whose
        time-zone group is due later (`due`, epoch seconds) is scheduled then (SendGrid's send_at)."""
        prepare = getattr(self.mailer, "prepare", None)
        if prepare is None:
            return lambda: self.mailer.push(message, recipients)
        if hold is not None:
            prepared = prepare(message, recipients, batch_id=hold.batch_id, send_at=int(hold.send_at))
        elif due is not None and callable(now := getattr(self.mailer, "now", None)) and due > now() + SEND_AT_MIN:
            prepared = prepare(message, recipients, send_at=int(min(due, now() + MAX_AHEAD)))
        else:
            prepared = prepare(message, recipients)
        return lambda: self.mailer.push_prepared(prepared)  # type: ignore[attr-defined]

    def _count(self, delivered: int) -> None:
        with self.lock:
            self.sent_now += delivered

    @staticmethod
    def _links(message: Message) -> tuple[bool, bool]:
        """Whether `message` shows the feedback and the manage link: a link signed for nobody to see costs
        about 2.3 microseconds a reader (a send signs a million of each). The unsubscribe link is always
        signed: every backend puts it in the List-Unsubscribe header."""
        shown = tokens.keys_in(message.html) + tokens.keys_in(message.text)
        return "feedback_url" in shown, "manage_url" in shown

    def _recipients(self, rows: Sequence[Row], message: Message) -> list[Recipient]:
        ids = [r[1] for r in rows]
        signer, base_url, slug = self.job.signer, self.base_url, self.job.slug
        feedback_shown, manage_shown = self._links(message)
        unsubscribe = signer.unsubscribe_urls(base_url, ids, slug)
        if not (feedback_shown or manage_shown or self._tracker):  # the usual issue: one link each, one pass
            return [Recipient(email, name, sid, {"unsubscribe_url": url})
                    for (_sub, sid, email, name), url in zip(rows, unsubscribe, strict=True)]
        values = [{"unsubscribe_url": url} for url in unsubscribe]
        if feedback_shown:  # each reader's own "this summary is wrong" link (newsletter.web.feedback)
            for own, url in zip(values, signer.feedback_urls(base_url, ids, slug), strict=True):
                own["feedback_url"] = url
        if manage_shown:
            for own, url in zip(values, signer.unsubscribe_urls(base_url, ids, slug, MANAGE), strict=True):
                own["manage_url"] = url
        if self._tracker is not None:  # tracked links and the pixel carry the reader's id and a MAC over it
            track = self._tracker.recipient_value
            for own, sid in zip(values, ids, strict=True):
                own["recipient"] = track(sid)
        return [Recipient(email=email, name=name, subscriber_id=sid, values=own)
                for (_sub, sid, email, name), own in zip(rows, values, strict=True)]

    def _pace(self, count: int) -> None:
        if not self.options.rate:
            return
        with self.lock:
            now = self.options.clock()
            wait = self.next_slot - now
            self.next_slot = max(now, self.next_slot) + count / self.options.rate
        if wait > 0:
            self.options.sleep(wait)

    def _retry_or_stop(self, batch: Batch, exc: TemporaryDeliveryError, failures: int) -> None:
        self.ledger.retry(batch, str(exc))
        if failures >= self.options.max_attempts:
            raise TemporaryDeliveryError(
                f"batch {batch.number} still failing after {failures} attempts: {exc}", exc.retry_after)
        delay = random.uniform(0, min(self.options.backoff_cap, self.options.backoff_base * 2 ** max(0, failures - 1)))
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, 3600.0))
        self.report(f"{exc}; retrying batch {batch.number} in {delay:.1f}s")
        self.options.sleep(delay)
