"""The schedule and approval commands as an operator and an editor use them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.schedule.lease import acquire
from newsletter.store.models import utcnow
from tests.schedule_support import PEOPLE, Paper, make_paper


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


def status(cli, issue_id: int) -> str:  # noqa: ANN001
    return json.loads(cli("issue", "show", str(issue_id), "--format", "json").output)["status"]


def test_approve_hold_reopen_commands(paper: Paper, cli) -> None:  # noqa: ANN001
    paper.publish(datetime.now(UTC))
    cli("collect", "paper")
    assert "Built issue #1" in cli("build", "paper", "--no-enrich").output
    out = cli("issue", "approve", "1", "--by", "ann@example.com").output
    assert "Approved issue #1 of paper" in out and "ann@example.com" in out
    assert status(cli, 1) == "approved"
    assert "Held issue #1" in cli("issue", "hold", "1").output and status(cli, 1) == "held"
    assert "Reopened issue #1" in cli("issue", "reopen", "1").output and status(cli, 1) == "draft"
    missing = cli("issue", "approve", "99", "--by", "ann@example.com", ok=False)
    assert missing.exit_code == 1 and "no issue 99" in missing.output
    assert "Example" in cli("issue", "approve", "--help").output


def test_schedule_list_and_run_now(paper: Paper, cli) -> None:  # noqa: ANN001
    paper.configure(send="weekly on monday at 08:00", timezone="Europe/Paris")
    listing = cli("schedule", "list").output
    assert "weekly on monday at 08:00 (Europe/Paris)" in listing and "never" in listing
    assert "Mon " in listing and " UTC)" in listing and ("CET" in listing or "CEST" in listing)
    assert "No `newsletter run` is running" in listing

    refused = cli("schedule", "run", "paper", ok=False)
    assert refused.exit_code == 1 and "--now" in refused.output

    paper.publish(datetime.now(UTC))
    out = cli("schedule", "run", "paper", "--now").output
    assert "collect: ok" in out and "send: sent" in out and f"{len(PEOPLE)} sent now" in out
    assert paper.deliveries() == len(PEOPLE)
    again = cli("schedule", "run", "paper", "--now").output
    assert "already-sent" in again and paper.deliveries() == len(PEOPLE)
    listing = cli("schedule", "list").output
    assert "already-sent" in listing and "never" not in listing

    acquire(paper.rt.engine, "ops-box:4242", now=utcnow(), ttl=timedelta(minutes=5))
    busy = cli("schedule", "run", "paper", "--now", ok=False)
    assert busy.exit_code == 1 and "ops-box:4242" in busy.output
    assert "`newsletter run` is running (ops-box:4242)" in cli("schedule", "list").output


def test_schedule_list_says_a_send_missed_beyond_its_grace(paper: Paper, cli) -> None:  # noqa: ANN001
    """A runner last ran this daily newsletter four days ago and then stopped: the sends since then that are
    past their grace are said, although no `newsletter run` is up to notice them."""
    from newsletter.schedule.jobs import record

    paper.configure(send="daily at 07:00", timezone="Europe/Paris")
    four_days_ago = datetime.now(UTC) - timedelta(days=4)
    record(paper.rt.engine, "paper", "seen", four_days_ago, "first-seen")
    record(paper.rt.engine, "paper", "cycle", four_days_ago, "sent", "an earlier issue")
    listing = " ".join(cli("schedule", "list").output.split())  # the table wraps long cells
    assert "missed" in listing and "grace" in listing, listing
    assert "No `newsletter run` is running" in listing
