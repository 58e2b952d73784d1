"""Deliver one claimed batch of a send in a scale-mode worker, with the engine `newsletter send` uses
(newsletter.deliver.engine), and time where that went.

Each batch is marked `sending` (committed) before the provider is called and `sent`, with one delivery row per
recipient, in one transaction after it; a retry sends only the recipients without a delivery row. What differs
from `newsletter send` on one machine is who waits: a temporary failure is not slept on in the worker but raised,
so that the job's retry strategy brings it back later, and so is the wait for the provider's activity log before
an interrupted batch can be settled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, select

from newsletter.config import Newsletter, Settings
from newsletter.deliver.audience import audience_newsletter
from newsletter.deliver.engine import BatchSender, SendJob, SendOptions
from newsletter.deliver.errors import BatchTaken
from newsletter.deliver.issue_mail import issue_message
from newsletter.deliver.ledger import Batch
from newsletter.deliver.mailer import Mailer, Message, PushResult, Recipient, TemporaryDeliveryError
from newsletter.deliver.send import variant_messages
from newsletter.store.db import secret_key, session_scope
from newsletter.store.models import IssueRow, NewsletterRow, Send
from newsletter.subscribers.tokens import Signer


class SettleWait(TemporaryDeliveryError):
    """The provider's activity log is not old enough to be believed yet: come back in retry_after seconds."""


class GivenBack(Exception):  # noqa: N818 - an outcome, not a failure
    """A built batch whose turn did not come: the request before it was still out after TURN_WAIT seconds."""


# How long a built batch waits for the request before it (the one request a job has out) to be answered before
# it is given back unsent: a worker cut off from the provider then holds only the batch it was sending. SendGrid
# answers a batch in well under a second; a longer wait is a link or a provider in trouble.
TURN_WAIT = 2.0


def load_send(engine: Engine, settings: Settings, nl: Newsletter, send_id: int) -> SendJob:
    with session_scope(engine) as session:
        send = session.get(Send, send_id)
        if send is None:
            raise LookupError(f"no send {send_id}")
        issue_id = send.issue_id
        # Whose readers: a cadence's issue goes to its parent newsletter's (newsletter.deliver.audience).
        newsletter_id = audience_newsletter(session, nl).id
        secret = secret_key(session, settings.secret_key)
    # The issue was rendered once before the send started; this reads that render back.
    message = issue_message(engine, nl, issue_id, settings, send_id=send_id)
    # And each variant's batches (sections off, text only) get that variant's kept render, read once per process.
    return SendJob(send_id, newsletter_id, nl.audience_slug, message, Signer(secret), settings.base_url,
                   variant_messages(engine, nl, issue_id, settings, send_id))


def newsletter_slug_of_send(engine: Engine, send_id: int) -> str:
    with session_scope(engine) as session:
        slug = session.scalar(
            select(NewsletterRow.slug).join(IssueRow, IssueRow.newsletter_id == NewsletterRow.id)
            .join(Send, Send.issue_id == IssueRow.id).where(Send.id == send_id)
        )
    if slug is None:
        raise LookupError(f"no send {send_id}")
    return slug


@dataclass
class Timing:
    """Where a batch's time went: database statements, the provider's calls, and the rest (our own work)."""

    total: float = 0.0  # without `waited`
    provider: float = 0.0
    db: float = 0.0
    recipients: int = 0
    waited: float = 0.0  # built, waiting for the request before it to be answered (its turn)

    @property
    def other(self) -> float:
        return max(0.0, self.total - self.provider - self.db)


_db_time = threading.local()
_timed_engines: set[int] = set()


def time_database(engine: Engine) -> None:
    """Add up, per thread, the time this engine's statements take (sent to last row back; commits not included)."""
    if id(engine) in _timed_engines:
        return
    _timed_engines.add(id(engine))

    def before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        conn.info.setdefault("newsletter_started", []).append(time.perf_counter())

    def after(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        _db_time.seconds = database_seconds() + time.perf_counter() - conn.info["newsletter_started"].pop()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


def database_seconds() -> float:
    """Seconds this thread has spent in database statements so far."""
    return getattr(_db_time, "seconds", 0.0)


class _Timed:
    """The mailer, with the time spent in the provider's calls added up."""

    def __init__(self, mailer: Mailer, timing: Timing) -> None:
        self._mailer, self._local = mailer, threading.local()
        self._local.timing = self._first = timing
        self.name = mailer.name
        if hasattr(mailer, "activity_settle_seconds"):
            self.activity_settle_seconds = mailer.activity_settle_seconds
        if hasattr(mailer, "accepted"):
            self.accepted = self._accepted
        # Hold-and-cancel (SendGrid without the Activity API, newsletter.deliver.cancels): the engine asks for these
        # by name; a cancel's waits reach the job queue through the worker's sleep, like the activity log's.
        for name in ("activity_available", "holds", "new_batch_id", "cancel_batch", "release_batch", "now",
                     "hold_seconds"):
            if hasattr(mailer, name):
                setattr(self, name, getattr(mailer, name))
        if hasattr(mailer, "prepare"):  # the body built before the `sending` mark, as on one machine
            self.prepare = self._prepare
            self.push_prepared = self._push_prepared

    @property
    def _timing(self) -> Timing:
        """The timing of the batch this thread delivers (a job may deliver two at once)."""
        return getattr(self._local, "timing", self._first)

    @_timing.setter
    def _timing(self, timing: Timing) -> None:
        self._local.timing = timing

    def _returned(self) -> None:
        """The provider's call of this thread's batch is over (answered, refused or failed)."""
        pushed = getattr(self._local, "pushed", None)
        if pushed is not None:
            pushed.set()

    def push(self, message: Message, recipients: Sequence[Recipient]) -> PushResult:
        started = time.perf_counter()
        try:
            result = self._mailer.push(message, recipients)
        finally:
            self._timing.provider += time.perf_counter() - started
            self._returned()
        self._timing.recipients += len(recipients)
        return result

    def _prepare(self, message: Message, recipients: Sequence[Recipient], **held: Any) -> tuple[Any, int]:
        prepared = self._mailer.prepare(message, recipients, **held)  # type: ignore[attr-defined]
        turn = getattr(self._local, "turn", None)
        if turn is not None:
            # Built while the request before it was out; it goes once that one is answered (still `claimed`:
            # the `sending` mark comes after this), or is given back when that takes too long.
            self._local.turn = None
            started = time.perf_counter()
            answered = turn.wait(TURN_WAIT)
            self._timing.waited += time.perf_counter() - started
            if not answered:
                raise GivenBack("the request before it was not answered in time")
        return prepared, len(recipients)

    def _push_prepared(self, prepared: tuple[Any, int]) -> PushResult:
        inner, count = prepared
        started = time.perf_counter()
        try:
            result: PushResult = self._mailer.push_prepared(inner)  # type: ignore[attr-defined]
        finally:
            self._timing.provider += time.perf_counter() - started
            self._returned()
        self._timing.recipients += count
        return result

    def _accepted(self, custom_args: dict[str, str]) -> set[str] | None:
        started = time.perf_counter()
        try:
            return self._mailer.accepted(custom_args)  # type: ignore[attr-defined]
        finally:
            self._timing.provider += time.perf_counter() - started

    def flush(self) -> None:
        self._mailer.flush()

    def close(self) -> None:
        self._mailer.close()


def _settle_later(seconds: float) -> None:
    # The batch sender asks to sleep only while the provider's activity log settles (attempts are 1, rate is
    # unset): a worker hands that wait to the job queue instead of holding a slot.
    raise SettleWait("waiting for the provider's activity log before settling an interrupted batch",
                     retry_after=seconds)


class Deliverer:
    """One job's deliveries: the engine's BatchSender, made once (its ledger read, this database's identity) and
    used for every batch the job claims, with each batch's time added up on its own. Thread-safe as the
    BatchSender is: a job may have two batches in flight, as `newsletter send` does."""

    def __init__(self, engine: Engine, job: SendJob, mailer: Mailer, me: str) -> None:
        self._mailer = mailer
        self._timed = _Timed(mailer, Timing())
        options = SendOptions(max_attempts=1, sleep=_settle_later)
        # Claims and attempts name the job (`me`), so that its retry finds the batch again.
        self._sender = BatchSender(engine, job, self._timed, options, me)

    @property
    def waits_its_turn(self) -> bool:
        """Whether a fresh batch can be built while the request before it is out, and wait there for its turn:
        with a mailer that builds the request before the `sending` mark, and no hold planned before the build
        (hold-and-cancel writes the batch's hold first, which a batch given back would leave behind)."""
        return hasattr(self._timed, "prepare") and self._sender.canceller is None

    def deliver(self, batch: Batch, pushed: threading.Event | None = None,
                turn: threading.Event | None = None) -> tuple[str, Timing]:
        """Deliver what is left of a claimed batch. Returns its state (sent, or unknown: held; `taken`: another
        process took it over and marked its attempt first, and this one sent nothing of it; `claimed`: given
        back unsent, see `turn`) and where time went.

        Temporary errors raise once the ledger says `retry` (the job's retry strategy comes back to this batch);
        permanent ones once it says `failed`. `pushed` is set when the provider's first call for the batch is
        over (or the delivery ended without one).

        `turn` (when `waits_its_turn`): the last batch's `pushed`, so that a job never has two requests out. A
        fresh batch's request is built while that one is out and sent once it is answered; when that does not
        come within TURN_WAIT seconds, the batch is left `claimed`, unsent, for the caller to give back
        (`newsletter.scale.ledger.give_back`), and `pushed` is left unset (no call was made). A resumed batch
        waits for the answer before it starts.
        """
        timing = self._timed._timing = Timing()
        self._timed._local.pushed = pushed
        started, db_before = time.perf_counter(), database_seconds()
        fresh = batch.status in ("pending", "claimed")
        if turn is not None and not fresh:
            # A batch resumed mid-send may call the provider before anything is built (to settle it): it starts
            # once the last request is answered, and is never given back.
            turn.wait()
            timing.waited += time.perf_counter() - started
        self._timed._local.turn = turn if fresh else None
        given_back = False
        try:
            self._sender.resume(batch)
            return batch.status, timing
        except BatchTaken:
            return "taken", timing  # another worker has it (it took it over while this one was cut off)
        except GivenBack:
            given_back = True
            return "claimed", timing
        finally:
            if pushed is not None and not given_back:
                pushed.set()
            self._timed._local.pushed = self._timed._local.turn = None
            self._mailer.flush()
            timing.total = time.perf_counter() - started - timing.waited
            timing.db = database_seconds() - db_before


def deliver(engine: Engine, job: SendJob, batch: Batch, mailer: Mailer, me: str) -> tuple[str, Timing]:
    """Deliver what is left of one claimed batch (see Deliverer.deliver)."""
    return Deliverer(engine, job, mailer, me).deliver(batch)
