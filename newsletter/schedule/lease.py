"""A lease row in the database: the one `newsletter run` holds it, renews it, and a second one is refused.

The lease expires when its holder stops renewing it (a crash, a lost machine), so a replacement can start
without anyone cleaning up by hand. Acquiring is a single conditional UPDATE or an INSERT, so two processes
racing for it cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.store.db import session_scope
from newsletter.store.models import Lease, utcnow

RUNNER_LEASE = "runner"
DEFAULT_TTL = timedelta(seconds=60)


class LeaseHeld(Exception):
    """Someone else holds the lease."""

    def __init__(self, name: str, holder: str, expires_at: datetime) -> None:
        self.name, self.holder, self.expires_at = name, holder, expires_at
        super().__init__(
            f"another `newsletter run` is already running against this database ({holder}; its lease "
            f"'{name}' runs until {expires_at:%Y-%m-%d %H:%M:%S} UTC and is renewed while it lives). "
            "Stop it first, or wait for its lease to expire if it died."
        )


def new_holder() -> str:
    """This process, readable in the error a second process shows, and unique even for the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def acquire(engine: Engine, holder: str, *, name: str = RUNNER_LEASE, ttl: timedelta = DEFAULT_TTL,
            now: datetime | None = None) -> None:
    """Take the lease, or renew our own. Raises LeaseHeld when another live holder has it."""
    now = now or utcnow()
    with session_scope(engine) as session:
        taken = cast(CursorResult[Any], session.execute(  # an UPDATE's result is a CursorResult
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at <= now))
            .values(holder=holder, expires_at=now + ttl)
        )).rowcount
        if taken:
            return
        if session.get(Lease, name) is None:
            try:
                with session.begin_nested():
                    session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
                return
            except IntegrityError:
                pass  # someone inserted it between our two statements: theirs stands
        row = session.scalar(select(Lease).where(Lease.name == name))
        if row is not None:
            raise LeaseHeld(name, row.holder, row.expires_at)
    # Its holder released it between our statements: it is free now.
    acquire(engine, holder, name=name, ttl=ttl, now=now)


def renew(engine: Engine, holder: str, *, name: str = RUNNER_LEASE, ttl: timedelta = DEFAULT_TTL,
          now: datetime | None = None) -> bool:
    """Extend our lease; False when it is no longer ours (we stalled past its expiry and another took it)."""
    now = now or utcnow()
    with session_scope(engine) as session:
        return bool(cast(CursorResult[Any], session.execute(
            update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=now + ttl)
        )).rowcount)


def release(engine: Engine, holder: str, *, name: str = RUNNER_LEASE) -> None:
    with session_scope(engine) as session:
        session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def current(engine: Engine, *, name: str = RUNNER_LEASE) -> Lease | None:
    with session_scope(engine) as session:
        return session.get(Lease, name)
