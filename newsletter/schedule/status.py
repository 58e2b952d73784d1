"""What `newsletter schedule list` says about one newsletter at a given moment: its next collect, send and draft
(always after that moment, also inside the repeated hour when the clocks go back), its last run, and sends
missed by more than their grace (said even when no runner was up to notice them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.schedule.cadence import approval_policy, next_fire_times
from newsletter.schedule.jobs import last_cycle, missed_beyond_grace, naive
from newsletter.store.models import ScheduleRun

RECENT = timedelta(days=7)  # a missed send is mentioned this long after it was noticed, whatever ran since


@dataclass(frozen=True)
class Status:
    next_send: datetime | None
    next_collect: datetime | None
    next_draft: datetime | None  # None too when the send builds its own issue (approval "auto")
    last_at: datetime | None  # naive UTC, as stored
    last_outcome: str | None
    last_detail: str
    missed: str  # sends missed beyond their grace, in words, or ""

    @property
    def outcome(self) -> str:
        """The outcome column: the last run's outcome, and any send missed beyond its grace."""
        last = "—" if self.last_outcome is None else (
            f"{self.last_outcome}: {self.last_detail}" if self.last_detail else self.last_outcome)
        if not self.missed or self.missed == last:
            return last
        return self.missed if self.last_outcome is None else f"{last}; {self.missed}"


def schedule_status(session: Session | None, nl: Newsletter, now: datetime) -> Status:
    """`session` is None before the first run (no database yet): the schedule still shows."""
    send = next_fire_times(nl, now, 1)
    collect = next_fire_times(nl, now, 1, job="collect")
    draft = next_fire_times(nl, now, 1, job="build") if approval_policy(nl).mode != "auto" else []
    last = last_cycle(session, nl.slug) if session is not None else None
    missed = ""
    if session is not None:
        live = missed_beyond_grace(session, nl, now)  # no runner has said it yet (none is up, perhaps)
        if live is not None:
            missed = f"missed: {live.period}: {live.detail(nl)}"
        else:
            noticed = session.scalar(select(ScheduleRun).where(
                ScheduleRun.newsletter_slug == nl.slug, ScheduleRun.job == "cycle", ScheduleRun.outcome == "missed",
                ScheduleRun.finished_at >= naive(now) - RECENT).order_by(ScheduleRun.started_at.desc()).limit(1))
            if noticed is not None:
                missed = f"missed: {noticed.detail}"
    return Status(
        next_send=send[0] if send else None, next_collect=collect[0] if collect else None,
        next_draft=draft[0] if draft else None,
        last_at=last.started_at if last else None, last_outcome=last.outcome if last else None,
        last_detail=(last.detail or "") if last else "", missed=missed,
    )
