"""One runner per send: a lease in the database that `newsletter send` (and `newsletter run`) holds while it sends.

Two processes working on the same send (a scheduled run and a hand-started resume) would each take the other's
in-flight batch for an interrupted one and "resolve" it while it is still in the air. A lease row named after the
send makes the second one stop with a clear message instead (SendError). It is renewed while the send runs; a
holder that died (kill -9) on this machine is noticed at once (`holder_gone`), one on another machine when the
lease expires. The scale-mode workers hold the same lease under one shared name (newsletter.scale.ledger).

Holder names are "host:pid:tag", so that whoever finds a lease can tell whether its process still exists.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta

from sqlalchemy import Engine, delete, update

from newsletter.deliver.errors import SendError
from newsletter.store.db import session_scope
from newsletter.store.models import Lease, utcnow

LEASE_SECONDS = 60.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_name(send_id: int) -> str:
    return f"send:{send_id}"


class SendLease:
    def __init__(self, engine: Engine, send_id: int, ttl: float = LEASE_SECONDS) -> None:
        self.engine, self.name, self.ttl = engine, lease_name(send_id), ttl
        self.holder = f"{worker_name()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        from sqlalchemy.exc import IntegrityError

        try:
            with session_scope(self.engine) as session:
                lease = session.get(Lease, self.name, with_for_update=True)
                now = utcnow()
                if lease is None:
                    session.add(Lease(name=self.name, holder=self.holder, expires_at=now + timedelta(seconds=self.ttl)))
                    session.flush()
                elif lease.expires_at < now or holder_gone(lease.holder):
                    lease.holder, lease.expires_at = self.holder, now + timedelta(seconds=self.ttl)
                else:
                    raise SendError(
                        f"this send is already running in {lease.holder.rsplit(':', 1)[0]} (until "
                        f"{lease.expires_at:%H:%M:%S} UTC unless renewed); let it finish, or stop it first"
                    )
        except IntegrityError:
            raise SendError("this send is already running: another process started it at the same moment; let "
                            "it finish") from None
        self._thread = threading.Thread(target=self._renew, name="send-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with session_scope(self.engine) as session:
                session.execute(update(Lease).where(Lease.name == self.name, Lease.holder == self.holder)
                                .values(expires_at=utcnow() + timedelta(seconds=self.ttl)))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with session_scope(self.engine) as session:
            session.execute(delete(Lease).where(Lease.name == self.name, Lease.holder == self.holder))


def holder_gone(holder: str) -> bool:
    """True when the holder is a process of this machine that no longer exists."""
    try:
        host, pid, _tag = holder.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or pid_number == os.getpid():
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
