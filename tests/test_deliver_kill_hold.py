"""20 kill -9s of a real sending process without the Email Activity API: hold-and-cancel still ends with exactly
one copy per reader (counted at the SendGrid test server, after every hold has run out), and nobody is asked.

Each run is killed at a random moment: half of them the instant the server has accepted a request (its answer
not read yet: the lost-202 case), a quarter at a random time once it sends (between requests, inside one), a
quarter at a random time after start (often during start-up, before it could cancel what the last run left).
The next run starts ten minutes later on the server's clock, which the test moves on instead of waiting:
that is what lets the cancellations of earlier runs come free (SendGrid allows 10 at a time: with two requests in
flight a kill leaves up to two) with a 40-minute hold, whose cancel window (30 minutes) holds two such gaps, for
a run killed before it got to cancel what the one before left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Send, SendGridHold
from tests.send_fixtures import make_world
from tests.sendgrid_server import Accepted, SendGridServer

ROOT = Path(__file__).parent.parent
N, BATCH, KILLS = 8000, 50, 20
HOLD = 2400.0  # a cancel window of 30 minutes (SendGrid's line is 10 minutes before send_at)
RESTART_AFTER = 600.0  # server seconds between a kill and the next run: twice that still fits the window


def test_20_kills_without_activity_end_exactly_once_without_a_decision(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    server = sendgrid_server
    server.activity_api = False  # no Email Activity add-on: nobody can be asked what SendGrid took
    # Time inside each request, where a kill can land, and enough of it that a sender as fast as ours is still
    # mid-send when the random kills come (at 0.01 s, 8 of 20 runs had finished first).
    server.delay = 0.03
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    world = make_world(db_url, N)
    issue = world.new_issue(1)
    rng = random.Random(13)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tests.send_worker", db_url, server.url, str(issue),
                                 str(BATCH), str(HOLD)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    statuses: list[bytes] = []
    killed = 0
    for round_ in range(KILLS):
        proc = start()
        if round_ % 2 == 0:  # the instant SendGrid has taken the k-th request of this run
            target = len(server.accepted) + rng.randint(1, 6)
            fired = threading.Event()

            def kill_at(_accepted: Accepted, proc: subprocess.Popen[bytes] = proc, target: int = target,
                        fired: threading.Event = fired) -> None:
                if len(server.accepted) >= target and not fired.is_set():
                    fired.set()
                    os.kill(proc.pid, signal.SIGKILL)

            server.on_accept = kill_at
            try:
                proc.wait(30)
            finally:
                server.on_accept = None
        elif round_ % 4 == 3:  # at a random moment after start, often before it has done anything
            time.sleep(rng.uniform(0.3, 2.5))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        else:  # at a random moment once it sends: between requests, inside one, inside a cancel
            asked = server.calls["batch"]
            deadline = time.monotonic() + 30
            while server.calls["batch"] == asked and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:
            out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            statuses.append(out.split()[0])
        server.advance(RESTART_AFTER)
    assert killed >= KILLS * 3 // 4, f"only {killed} of {KILLS} runs were killed mid-send"

    proc = start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    statuses.append(out.split()[0])
    assert set(statuses) == {b"done"}, f"a run ended {statuses}: an operator would have been asked"

    server.advance(HOLD + 120)  # every scheduled request reaches its send_at: delivered, or discarded
    counts = server.deliveries()
    skipped = N - len(counts)
    twice = sum(c - 1 for c in counts.values() if c > 1)
    assert (skipped, twice) == (0, 0), f"{skipped} readers skipped, {twice} extra copies"
    assert server.discarded_recipients > 0  # some kills did leave a request SendGrid had taken: cancelled
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == N
        assert s.scalar(select(Send.sent)) == N and s.scalar(select(Send.status)) == "done"
        cancelled = s.scalar(select(func.count()).select_from(SendGridHold).where(SendGridHold.status != "scheduled"))
    assert cancelled and len(server.scheduled) <= 10
