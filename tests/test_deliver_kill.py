"""kill -9 of a real sending process, twice, at the worst moments: still exactly one copy per subscriber."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Send
from tests.send_fixtures import make_world
from tests.sendgrid_server import Accepted, SendGridServer

ROOT = Path(__file__).parent.parent
N, BATCH = 1000, 100


def test_sigkill_halfway_then_restart_sends_each_subscriber_exactly_once(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    world = make_world(db_url, N)
    issue = world.new_issue(1)

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.send_worker", db_url, sendgrid_server.url,
                                 str(issue), str(BATCH)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # 1st run: killed by the provider side at the worst moment: the 5th batch is accepted, not yet answered.
    proc = start()

    def kill_on_fifth(accepted: Accepted) -> None:
        if len(sendgrid_server.accepted) == 5:
            os.kill(proc.pid, signal.SIGKILL)

    sendgrid_server.on_accept = kill_on_fifth
    assert proc.wait(30) == -signal.SIGKILL
    sendgrid_server.on_accept = None
    # (two requests in flight: the other one may have been accepted too)
    assert 5 * BATCH <= sendgrid_server.accepted_recipients <= 6 * BATCH

    # 2nd run: killed from outside at whatever point it has reached once past half of the audience.
    proc = start()
    deadline = time.monotonic() + 30
    while sendgrid_server.accepted_recipients < N * 0.6 and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert sendgrid_server.accepted_recipients < N

    # 3rd run: finishes.
    proc = start()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.split()[0] == b"done"

    counts = sendgrid_server.deliveries()
    assert len(counts) == N and set(counts.values()) == {1}
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == N
        assert s.scalar(select(Send.sent)) == N and s.scalar(select(Send.status)) == "done"
