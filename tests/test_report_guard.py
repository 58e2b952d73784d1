"""The guard: an issue whose complaint rate passes 0.3% holds the newsletter's next scheduled send until an editor
releases it; `newsletter schedule list` says why. Driven by a controlled clock as tests/test_schedule_cycle.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from newsletter.config import load_newsletter
from newsletter.report import guard
from newsletter.report.record import record_provider_event
from newsletter.schedule.cadence import next_fire_times
from newsletter.schedule.jobs import pending_sends, run_cycle
from newsletter.store.db import install_id, session_scope
from newsletter.store.models import SendGuard
from tests.schedule_support import PEOPLE, Paper, hours, make_paper


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


def _complaint(paper: Paper, issue_id: int, address: str, event_id: str) -> None:
    from newsletter.deliver.issue_mail import tracker

    with session_scope(paper.rt.engine) as session:
        assert record_provider_event(
            session, {"event": "spamreport", "email": address, "issue": str(issue_id), "newsletter": "paper",
                      "install": install_id(paper.rt.engine), "sg_event_id": event_id, "timestamp": 1_790_000_000},
            install=install_id(paper.rt.engine), signer=tracker(paper.rt.engine, paper.settings), dedupe=event_id,
            base_url=paper.settings.base_url)


def test_a_complaint_rate_over_the_line_holds_the_next_scheduled_send_until_released(paper: Paper, cli) -> None:  # noqa: ANN001
    paper.configure(send="weekly on monday at 08:00", timezone="UTC")
    path = paper.workdir / "schedules" / "paper.toml"
    path.write_text(path.read_text() + "\n[tracking]\nmin_delivered = 1\n")
    paper.rt.newsletters = {"paper": load_newsletter(path)}
    first, second = next_fire_times(paper.nl, datetime(2026, 11, 20, tzinfo=UTC), 2)
    paper.publish(first)
    assert run_cycle(paper.rt, "paper", now=first).outcome == "sent"
    issue = paper.issues()[0].id
    # Below the line nothing is held; one complaint among len(PEOPLE) readers is far over 0.3%.
    with session_scope(paper.rt.engine) as session:
        assert guard.check(session, paper.nl) is None
    _complaint(paper, issue, PEOPLE[0], "ev-1")

    paper.publish(second)
    held = run_cycle(paper.rt, "paper", now=second)
    assert held.outcome == "held-complaints" and "complaint rate" in held.detail and "0.30%" in held.detail
    assert paper.deliveries() == len(PEOPLE)  # nothing more went out
    assert pending_sends(paper.rt, second + hours(1)) == []  # and nothing retries it while held
    listing = cli("schedule", "list").output
    assert "HELD" in listing and "complaint" in listing

    assert cli("report", "paper", "--release").output.strip().endswith("scheduled sends go out again")
    with session_scope(paper.rt.engine) as session:
        assert session.query(SendGuard).one().released_by == "cli"
    assert pending_sends(paper.rt, second + hours(1)) == ["paper"]
    assert run_cycle(paper.rt, "paper", now=second + hours(1)).outcome == "sent"
    assert paper.deliveries() == 2 * len(PEOPLE) and paper.duplicates() == []


def test_the_hold_is_on_the_editor_home_page_and_a_bounce_rate_over_its_setting_holds_too(paper: Paper) -> None:
    import dataclasses

    import httpx

    from newsletter.web.app import create_app
    from tests.web_server import loopback_socket, serve_socket
    from tests.web_support import add_editor, sign_in

    paper.configure(send="weekly on monday at 08:00", timezone="UTC")
    path = paper.workdir / "schedules" / "paper.toml"
    path.write_text(path.read_text() + "\n[tracking]\nmin_delivered = 1\nhold_bounce_rate = 0.5\n")
    paper.rt.newsletters = {"paper": load_newsletter(path)}
    first = next_fire_times(paper.nl, datetime(2026, 11, 20, tzinfo=UTC), 1)[0]
    paper.publish(first)
    assert run_cycle(paper.rt, "paper", now=first).outcome == "sent"
    issue = paper.issues()[0].id
    from newsletter.deliver.issue_mail import tracker

    def bounce(address: str, event_id: str) -> None:
        with session_scope(paper.rt.engine) as session:
            record_provider_event(session, {"event": "bounce", "email": address, "issue": str(issue),
                                            "install": install_id(paper.rt.engine), "sg_event_id": event_id},
                                  install=install_id(paper.rt.engine), signer=tracker(paper.rt.engine, paper.settings),
                                  dedupe=event_id, base_url=paper.settings.base_url)

    bounce(PEOPLE[0], "b-1")  # 1 of 3: under the 50% line set above
    with session_scope(paper.rt.engine) as session:
        assert guard.check(session, paper.nl) is None
    bounce(PEOPLE[1], "b-2")  # 2 of 3
    with session_scope(paper.rt.engine) as session:
        reason = guard.check(session, paper.nl)
    assert reason is not None and "bounce rate 66.67%" in reason
    add_editor(paper.rt.engine)
    sock, url = loopback_socket()  # served on plain http here: the session cookie is not https-only
    app = create_app(dataclasses.replace(paper.settings, base_url=url), engine=paper.rt.engine)
    with serve_socket(app, sock), httpx.Client(base_url=url) as client:
        assert sign_in(client).status_code == 303
        home = client.get("/editor/").text
        assert "Scheduled sends are held" in home and "bounce rate 66.67%" in home
        report = client.get("/editor/reports/paper").text
        assert "Release the hold" in report
