"""Subscribers from the command line: double opt-in, CSV export/import round trip, suppression that sticks."""

from __future__ import annotations

import csv
import email
import io
import re
from email import policy
from pathlib import Path

import httpx
from sqlalchemy import select

from newsletter.config import settings_from_env
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber, Subscription
from newsletter.subscribers.status import set_status
from newsletter.web.public import create_public_app
from tests.conftest import BOTH_DATABASES, schedule_toml
from tests.web_server import serve


def setup(workdir: Path) -> None:
    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", [("Desk", "https://x.example/feed")]))


def statuses(workdir: Path) -> dict[str, str]:
    engine = get_engine(settings_from_env().database_url)
    with session_scope(engine) as s:
        return dict(s.execute(select(Subscriber.email, Subscription.status)
                              .join(Subscription, Subscription.subscriber_id == Subscriber.id)).all())


def test_double_opt_in_end_to_end(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    out = cli("subscribers", "add", "ann@example.com", "-n", "city", "--opt-in", "--name", "Ann").output
    assert "pending" in out and "confirmation link" in out
    assert statuses(workdir) == {"ann@example.com": "pending"}
    [eml] = list((workdir / "outbox").rglob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"] == "Ann <ann@example.com>" and "Confirm" in msg["Subject"]
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", msg.get_body(("plain",)).get_content()).group(1)
    settings = settings_from_env()
    with serve(create_public_app(settings, get_engine(settings.database_url))) as url:
        tampered = link[:-3] + ("xyz" if not link.endswith("xyz") else "abc")
        assert httpx.get(url + tampered).status_code == 400
        assert statuses(workdir) == {"ann@example.com": "pending"}
        page = httpx.get(url + link)  # the page with the button: a GET changes nothing
        assert page.status_code == 200 and "Confirm my subscription" in page.text
        assert statuses(workdir) == {"ann@example.com": "pending"}
        assert httpx.post(url + link).status_code == 200
    assert statuses(workdir) == {"ann@example.com": "active"}
    again = cli("subscribers", "add", "ann@example.com", "-n", "city", "--opt-in").output
    # One confirmation email (not sent again) and, since the confirmation, one welcome email.
    assert "already subscribed" in again and len(list((workdir / "outbox").rglob("messages/*.eml"))) == 1
    assert [p.name for p in (workdir / "outbox").rglob("welcome/*.eml")] == ["ann@example.com.eml"]


def test_opt_in_never_mails_a_bounced_address(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    cli("subscribers", "add", "bob@example.com", "-n", "city")
    engine = get_engine(settings_from_env().database_url)
    with session_scope(engine) as s:
        set_status(s, s.scalar(select(Subscriber.id)), None, "bounced")
    out = cli("subscribers", "add", "bob@example.com", "-n", "city", "--opt-in").output
    assert "NOT subscribed" in out and not (workdir / "outbox").exists()


@BOTH_DATABASES
def test_import_report_export_round_trip_and_csv_injection(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    (workdir / "in.csv").write_text("email,name,city\nann@example.com,Ann,Paris\nnot-an-email,X,\n"
                                    "bob@example.com,=HYPERLINK(\"http://evil\"),Oslo\n")
    out = cli("subscribers", "import", "in.csv", "-n", "city").output
    assert "line 3" in out and "not-an-email" in out and "2 added" in out
    result = cli("subscribers", "export", "-n", "city", "-o", "out.csv")
    assert "2 subscribers written" in result.output
    rows = list(csv.DictReader(io.StringIO((workdir / "out.csv").read_text())))
    assert [(r["email"], r["status"], r["city"]) for r in rows] == [
        ("ann@example.com", "active", "Paris"), ("bob@example.com", "active", "Oslo")]
    assert rows[1]["name"].startswith("'=")  # a spreadsheet shows it as text instead of running it
    assert not (workdir / "out.csv.tmp").exists()
    # The export is importable as it is.
    assert "0 added, 2 already subscribed" in cli("subscribers", "import", "out.csv", "-n", "city").output


@BOTH_DATABASES
def test_unsubscribe_outlives_a_reimport(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    (workdir / "list.csv").write_text("email\nann@example.com\nbob@example.com\n")
    cli("subscribers", "import", "list.csv", "-n", "city")
    assert "unsubscribed" in cli("subscribers", "unsubscribe", "ann@example.com", "-n", "city").output
    assert "(already)" in cli("subscribers", "unsubscribe", "ann@example.com", "-n", "city").output
    out = cli("subscribers", "import", "list.csv", "-n", "city").output
    assert "1 suppressed" in out
    assert statuses(workdir) == {"ann@example.com": "unsubscribed", "bob@example.com": "active"}
    exported = cli("subscribers", "export", "-n", "city", "--status", "active").output
    assert "bob@example.com" in exported and "ann@example.com" not in exported
    # Confirming by hand is an explicit new consent: it lifts the unsubscribe.
    assert "active" in cli("subscribers", "confirm", "ann@example.com", "-n", "city").output
    assert statuses(workdir)["ann@example.com"] == "active"


@BOTH_DATABASES
def test_large_import_across_chunks_keeps_every_rule(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    cli("subscribers", "add", "p5@example.com", "-n", "city", "--name", "Kept Name")
    cli("subscribers", "add", "p1500@example.com", "-n", "city")
    cli("subscribers", "unsubscribe", "p1500@example.com", "-n", "city")
    lines = [f"p{i}@example.com,Person {i},{i % 3}" for i in range(2500)]
    lines[700] = "broken-address,X,1"
    lines.append("p42@example.com,Again,1")  # a duplicate row, after a chunk boundary
    (workdir / "big.csv").write_text("email,name,group\n" + "\n".join(lines) + "\n")
    out = " ".join(cli("subscribers", "import", "big.csv", "-n", "city").output.split())
    assert "line 702" in out and "line 2502" in out and "duplicate" in out
    assert "2497 added, 1 already subscribed, 1 suppressed, 2 rejected" in out
    states = statuses(workdir)
    assert len(states) == 2499 and states["p1500@example.com"] == "unsubscribed"
    engine = get_engine(settings_from_env().database_url)
    with session_scope(engine) as s:
        kept = s.scalar(select(Subscriber).where(Subscriber.email == "p5@example.com"))
        assert kept.name == "Kept Name" and kept.fields == {"group": "2"}


def test_public_subscribe_form_sends_one_confirmation_and_tells_nobody_anything(workdir: Path, cli) -> None:  # noqa: ANN001
    setup(workdir)
    cli("subscribers", "add", "member@example.com", "-n", "city")
    settings = settings_from_env()
    emails = lambda: sorted(p.name for p in (workdir / "outbox").rglob("*.eml"))  # noqa: E731
    with serve(create_public_app(settings, get_engine(settings.database_url))) as url:
        form = httpx.get(f"{url}/subscribe/city")
        assert form.status_code == 200 and "<form method=post>" in form.text
        assert httpx.get(f"{url}/subscribe/nope").status_code == 404
        answers = [httpx.post(f"{url}/subscribe/city", data={"email": address, "name": "Ann"})
                   for address in ("ann@example.com", "ann@example.com", "member@example.com")]
        assert {r.status_code for r in answers} == {200} and len({r.text for r in answers}) == 1
        assert emails() == ["ann@example.com.eml"]  # asked twice, mailed once; the member not at all
        bot = httpx.post(f"{url}/subscribe/city", data={"email": "victim@example.com", "website": "x"})
        assert bot.status_code == 200 and emails() == ["ann@example.com.eml"]
        bad = httpx.post(f"{url}/subscribe/city", data={"email": "not an address"})
        assert bad.status_code == 400 and "not an address" in bad.text
        # Another site's page posting the form for its visitors (CSRF) is refused; the site's own page is not.
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            forged = httpx.post(f"{url}/subscribe/city", data={"email": "victim@example.com"}, headers=headers)
            assert forged.status_code == 403, headers
        assert emails() == ["ann@example.com.eml"]
        own = httpx.post(f"{url}/subscribe/city", data={"email": "bo@example.com"},
                         headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 200 and emails() == ["ann@example.com.eml", "bo@example.com.eml"]
    assert statuses(workdir) == {"ann@example.com": "pending", "bo@example.com": "pending",
                                 "member@example.com": "active"}
