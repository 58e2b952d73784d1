"""Ctrl-C on a real `newsletter send` process: it finishes the batches in flight, says how to resume, and the
resumed send gives everyone exactly one copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from newsletter.config import settings_from_env
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import SendBatch
from tests.sendgrid_server import SendGridServer
from tests.test_cli import setup_newsletter

N = 200


def test_ctrl_c_stops_after_the_batch_in_flight_and_resume_completes(
    workdir: Path, feed_server, cli, sendgrid_env: SendGridServer  # noqa: ANN001
) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    (workdir / "people.csv").write_text("email\n" + "".join(f"p{i}@example.com\n" for i in range(N)))
    cli("subscribers", "import", "people.csv", "-n", "city")

    sendgrid_env.delay = 0.2  # a slow API, so the send is still running when Ctrl-C comes
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "city", "--batch-size", "20"],
                            cwd=workdir, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 30
    while len(sendgrid_env.accepted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "Stopped" in out and "again to resume" in " ".join(out.split())
    stopped_at = sendgrid_env.accepted_recipients
    assert 0 < stopped_at < N
    with session_scope(get_engine(settings_from_env().database_url)) as s:
        assert set(s.scalars(select(SendBatch.status))) == {"sent"}  # nothing left half-done

    sendgrid_env.delay = 0
    out = cli("send", "city").output
    assert f"{N - stopped_at} now, {stopped_at} before" in out
    counts = sendgrid_env.deliveries()
    assert len(counts) == N and set(counts.values()) == {1}
