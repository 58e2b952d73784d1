"""Hold-and-cancel on SendGrid: the scheduled requests this database sent and the cancellations it owes SendGrid.

Without the Email Activity add-on SendGrid cannot be asked whether it took a request whose answer was lost. So,
in hold mode (newsletter.deliver.sendgrid, SENDGRID_SETTLE_BY), every request goes out under its own `batch_id`
with a `send_at` a little over 10 minutes ahead, and an unknown outcome is made certain by cancelling that batch:

    plan     -- a new batch id, written here (`scheduled`) BEFORE the ledger marks the batch `sending`, so that a
                process killed after the request still knows what to cancel
    cancel   -- POST /v3/user/scheduled_sends {batch_id, status: cancel}, retried with backoff, confirmed only if
                the answer came before SendGrid's line (10 minutes before send_at) with a margin; then `cancelled`
                and the engine sends those readers again under a new batch id
    release  -- once send_at has passed (SendGrid has discarded the cancelled mail), DELETE the cancellation:
                SendGrid allows at most 10 paused or cancelled batches at a time. Pending ones are released at the
                next opportunity (the next run's start, before each cancel, the end of a run).

A cancel that cannot be confirmed before the line (SendGrid unreachable, 10 cancellations in use until after
it, the process restarted too late) leaves the batch genuinely unknown: the engine says so and falls back to
the Activity API or to holding it for the operator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine, select, update

from newsletter.deliver.mailer import TemporaryDeliveryError
from newsletter.store.db import session_scope
from newsletter.store.models import SendGridHold, utcnow

CANCEL_LINE = 600.0  # SendGrid: no pause or cancel later than 10 minutes before send_at
CANCEL_MARGIN = 15.0  # ours: a cancel is trusted only if confirmed this long before the line (clock skew)
RELEASE_AFTER = 60.0  # a cancellation is released this long after send_at, once SendGrid has discarded the mail
MAX_CANCELLED = 10  # SendGrid: at most 10 batches paused or cancelled at one time
SPARE = 2  # cancellations kept free for the requests in flight (`newsletter send` has two on SendGrid)
MAX_AHEAD = 72 * 3600.0 - 60.0  # SendGrid schedules at most 72 hours ahead


class HoldingMailer(Protocol):
    """What hold-and-cancel needs from a mailer (newsletter.deliver.sendgrid.SendGridMailer)."""

    hold_seconds: float

    def now(self) -> float: ...

    def new_batch_id(self) -> str: ...

    def cancel_batch(self, batch_id: str) -> bool: ...

    def release_batch(self, batch_id: str) -> None: ...


@dataclass
class Hold:
    """One request's SendGrid batch: what to cancel if its outcome goes unknown."""

    id: int
    batch_id: str  # SendGrid's
    send_at: float  # epoch seconds
    status: str  # scheduled, cancelled, released


def _naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def _hold(row: SendGridHold) -> Hold:
    return Hold(row.id, row.provider_batch_id, _epoch(row.send_at), row.status)


class Canceller:
    """Plans, cancels and releases the held requests of one send (and releases any of this database's)."""

    def __init__(self, engine: Engine, send_id: int, mailer: HoldingMailer, sleep: Callable[[float], None],
                 report: Callable[[str], None]) -> None:
        self.engine, self.send_id, self.mailer, self.sleep, self.report = engine, send_id, mailer, sleep, report

    # -- before the request ---------------------------------------------------------------------------------
    def plan(self, batch_row_id: int, attempt: int, not_before: float | None = None) -> Hold:
        """A new SendGrid batch for attempt `attempt` of a ledger batch, written before the request goes out.

        Its send_at is the hold ahead, or later when SendGrid's 10 cancellations are (nearly) all in use (a
        storm of lost answers): late enough that one comes free before this request's own line, so that it can
        still be cancelled. Mail then arrives later; never twice. `not_before`: the batch's time-zone group is
        due then (newsletter.deliver.zones): its send_at is that, when later, and its cancel line counts from it.
        """
        batch_id = self.mailer.new_batch_id()
        now = self.mailer.now()
        send_at = max(now + self.mailer.hold_seconds, min(not_before or 0.0, now + MAX_AHEAD))
        active = self._cancelled()
        if len(active) >= MAX_CANCELLED - SPARE:
            # After this moment at most MAX_CANCELLED - SPARE - 1 of today's cancellations are still in use.
            free_at = active[len(active) - (MAX_CANCELLED - SPARE)].send_at + RELEASE_AFTER
            send_at = min(max(send_at, free_at + CANCEL_LINE + CANCEL_MARGIN + 30.0), now + MAX_AHEAD)
        send_at = float(int(send_at))
        with session_scope(self.engine) as session:
            row = SendGridHold(send_id=self.send_id, batch_id=batch_row_id, attempt=attempt,
                               provider_batch_id=batch_id, send_at=_naive(send_at), status="scheduled")
            session.add(row)
            session.flush()
            return _hold(row)

    def of(self, batch_row_id: int, attempt: int) -> Hold | None:
        """The SendGrid batch attempt `attempt` of a ledger batch went out under, if it was held."""
        with session_scope(self.engine) as session:
            row = session.scalars(
                select(SendGridHold).where(SendGridHold.batch_id == batch_row_id, SendGridHold.attempt == attempt)
                .order_by(SendGridHold.id.desc()).limit(1)
            ).first()
            return _hold(row) if row else None

    # -- an unknown outcome ---------------------------------------------------------------------------------
    def deadline(self, hold: Hold) -> float:
        return hold.send_at - CANCEL_LINE - CANCEL_MARGIN

    def cancel(self, hold: Hold) -> bool:
        """Make the request of `hold` certainly not delivered. False: it could not be confirmed before the line."""
        if hold.status in ("cancelled", "released"):
            return True
        deadline = self.deadline(hold)
        failures = 0
        while True:
            now = self.mailer.now()
            if now >= deadline:
                return False
            active = self.release_due()
            if len(active) >= MAX_CANCELLED:
                free_at = active[0].send_at + RELEASE_AFTER  # the soonest of ours to come free
                if free_at >= deadline:
                    self.report(f"SendGrid allows {MAX_CANCELLED} cancelled batches at a time and ours are all "
                                f"in use until after batch {hold.batch_id} can still be cancelled")
                    return False
                self.report(f"{MAX_CANCELLED} cancelled batches in use: waiting {free_at - now:.0f}s for one to "
                            "come free")
                self.sleep(free_at - now)
                continue
            try:
                confirmed = self.mailer.cancel_batch(hold.batch_id)
            except TemporaryDeliveryError as exc:
                failures += 1
                delay = random.uniform(0, min(30.0, 0.5 * 2 ** failures))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                delay = min(delay, max(0.0, deadline - self.mailer.now()))
                self.report(f"{exc}; asking SendGrid again to cancel batch {hold.batch_id} in {delay:.1f}s")
                self.sleep(delay)
                continue
            answered = self.mailer.now()
            if confirmed:
                self._mark(hold, "cancelled", cancelled_at=utcnow())
                # An answer after the line proves nothing: SendGrid does not guarantee such a cancellation.
                return answered < hold.send_at - CANCEL_LINE
            # Refused: most likely the account's 10 are in use (ours or another install's). Wait a little.
            failures += 1
            delay = min(max(1.0, min(30.0, 2.0 ** failures)), max(0.0, deadline - answered))
            self.report(f"SendGrid refused to cancel batch {hold.batch_id} (10 cancelled batches in use?); "
                        f"again in {delay:.0f}s")
            self.sleep(delay)

    # -- afterwards -----------------------------------------------------------------------------------------
    def _cancelled(self) -> list[Hold]:
        """This database's cancellations still in use at SendGrid, soonest free first."""
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(SendGridHold).where(SendGridHold.status == "cancelled").order_by(SendGridHold.send_at)
            ).all()
            return [_hold(r) for r in rows]

    def release_due(self) -> list[Hold]:
        """Release every cancellation of this database whose send_at has passed; returns those still in use,
        soonest free first. A release that fails now is tried again at the next opportunity."""
        active = self._cancelled()
        now = self.mailer.now()
        left = []
        for hold in active:
            if hold.send_at + RELEASE_AFTER <= now:
                try:
                    self.mailer.release_batch(hold.batch_id)
                except TemporaryDeliveryError as exc:
                    self.report(f"{exc}; the cancellation of batch {hold.batch_id} is released later")
                    left.append(hold)
                    continue
                self._mark(hold, "released")
            else:
                left.append(hold)
        return left

    def _mark(self, hold: Hold, status: str, **values: object) -> None:
        with session_scope(self.engine) as session:
            session.execute(update(SendGridHold).where(SendGridHold.id == hold.id).values(status=status, **values))
        hold.status = status
