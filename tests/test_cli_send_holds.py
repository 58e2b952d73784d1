"""`newsletter send` as an operator sees it (issue 13): two sends started together, a second digest within one
period, a skip reported as a skip and readers who left during the send counted, over real servers and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.config import settings_from_env
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber
from newsletter.subscribers.status import set_status
from tests import smtp_server
from tests.conftest import BOTH_DATABASES, rss
from tests.feedserver import Route
from tests.sendgrid_server import SendGridServer
from tests.smtp_server import Recorder
from tests.test_cli import setup_newsletter


@pytest.fixture
def smtp_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    monkeypatch.setenv("NEWSLETTER_MAILER", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    yield recorder
    controller.stop()


def subscribe(workdir: Path, cli, n: int) -> None:  # noqa: ANN001
    (workdir / "people.csv").write_text("email\n" + "".join(f"p{i}@example.com\n" for i in range(n)))
    cli("subscribers", "import", "people.csv", "-n", "city")


@BOTH_DATABASES
def test_the_loser_of_two_sends_started_together_says_already_running_in_one_line(
    workdir: Path, feed_server, cli, sendgrid_env: SendGridServer  # noqa: ANN001
) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    subscribe(workdir, cli, 100)
    sendgrid_env.delay = 0.2  # the winner is still sending when the loser looks
    command = [sys.executable, "-m", "newsletter", "send", "city", "--batch-size", "20"]
    procs = [subprocess.Popen(command, cwd=workdir, env=dict(os.environ), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    won = [r for r in results if r[0] == 0]
    lost = [r for r in results if r[0] != 0]
    assert len(won) == 1 and len(lost) == 1, results
    code, out, err = lost[0]
    assert "Traceback" not in out + err and "IntegrityError" not in out + err
    assert "already running" in err and len((out + err).strip().splitlines()) == 1, out + err
    assert "Sent issue #1 of city: 100 now" in won[0][1]
    counts = sendgrid_env.deliveries()
    assert len(counts) == 100 and set(counts.values()) == {1}


def test_a_hand_started_send_refuses_a_second_digest_within_the_period_unless_forced(
    workdir: Path, feed_server, cli, smtp_env: Recorder  # noqa: ANN001
) -> None:
    setup_newsletter(workdir, feed_server)
    subscribe(workdir, cli, 5)
    cli("schedule", "run", "city", "--now")  # the scheduler's issue for this period goes to everyone
    assert set(smtp_env.deliveries().values()) == {1} and len(smtp_env.deliveries()) == 5
    feed_server.routes["/a"] = Route(body=rss("City Desk", [
        {"guid": "a9", "title": "Tram line extended", "link": "https://city.example/tram",
         "body": "<p>The tram now runs to the harbour. Riders cheered.</p>", "hours_ago": 1},
    ]))
    cli("collect")
    since = f"{datetime.now(UTC) - timedelta(days=2):%Y-%m-%d}"
    built = cli("build", "city", "--no-enrich", "--since", since)  # an issue with no period, by hand
    assert "#2" in built.output, built.output
    refused = cli("send", "city", ok=False)
    assert refused.exit_code != 0, refused.output
    assert "second digest" in refused.output and "--force" in refused.output
    assert set(smtp_env.deliveries().values()) == {1}  # nobody got a second one
    forced = cli("send", "city", "--force")
    assert "Sent issue #2 of city: 5 now" in forced.output
    assert set(smtp_env.deliveries().values()) == {2}


def test_a_skip_is_reported_as_skipped_and_readers_who_left_are_counted(
    workdir: Path, feed_server, cli, smtp_env: Recorder  # noqa: ANN001
) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    subscribe(workdir, cli, 60)
    smtp_env.lose_answer.add("p3@example.com")  # its "250" is lost: p3 alone is uncertain
    engine = get_engine(settings_from_env().database_url)
    with session_scope(engine) as s:
        leaving = list(s.scalars(select(Subscriber.id).where(Subscriber.email.in_(
            [f"p{i}@example.com" for i in range(54, 60)]))))
    left = threading.Event()

    def unsubscribe_mid_send() -> None:
        deadline = time.monotonic() + 60
        while len(smtp_env.received) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        with session_scope(engine) as s:  # what the unsubscribe link does, while the send runs
            for sid in leaving:
                set_status(s, sid, None, "unsubscribed")
        left.set()

    def slow_data(real):  # noqa: ANN001, ANN202
        async def handle(server, session, envelope):  # noqa: ANN001, ANN202
            if len(smtp_env.received) >= 5 and not left.is_set():
                left.wait(30)  # the readers leave while batch 1 is being sent
            return await real(server, session, envelope)
        return handle

    smtp_env.handle_DATA = slow_data(smtp_env.handle_DATA)  # type: ignore[method-assign]
    helper = threading.Thread(target=unsubscribe_mid_send)
    helper.start()
    held = cli("send", "city", "--batch-size", "50", ok=False)
    helper.join(60)
    assert held.exit_code == 3
    out = " ".join(held.output.split())
    assert "Held: 1 recipients in batch(es) 1" in out and "6 unsubscribed during the send" in out

    skipped = " ".join(cli("send", "city", "--unknown", "skip").output.split())
    assert "Decided --unknown skip for held batch(es) 1 (1 recipients: not sent again" in skipped
    assert "Sent issue #1 of city: 0 now, 53 before, 1 skipped" in skipped
    assert "6 unsubscribed during the send, 60 in the audience" in skipped
    counts = smtp_env.deliveries()
    assert len(counts) == 54 and set(counts.values()) == {1}  # p3's copy arrived once; nobody who left got one
