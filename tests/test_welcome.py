"""The welcome email: sent once on confirmation (web link, or the CLI), through its ledger, with the latest sent
issue linked and its stories listed; the template can be overridden."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

import httpx
from sqlalchemy import func, select

from newsletter.config import load_newsletter
from newsletter.deliver.optin import request_opt_in
from newsletter.deliver.outbox import OutboxMailer
from newsletter.deliver.welcome import send_welcome
from newsletter.store.db import ensure_newsletter, secret_key, session_scope
from newsletter.store.models import Subscriber, Welcome
from tests.web_server import serve
from tests.web_support import make_site


def _eml(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def _text(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return part.get_content()


def test_confirming_by_link_sends_the_welcome_once_with_the_latest_issue(tmp_path: Path) -> None:
    from newsletter.web.app import create_app

    site = make_site(tmp_path)
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    mailer = OutboxMailer(site.settings.outbox_dir)
    with session_scope(site.engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        request_opt_in(session, row, nl, "zoe@example.com", mailer, base_url=site.settings.base_url,
                       secret=secret_key(session, site.settings.secret_key), origin="web")
    confirmation = _text(_eml(site.settings.outbox_dir / "city" / "messages" / "zoe@example.com.eml"))
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", confirmation)
    assert link
    with serve(create_app(site.settings, engine=site.engine)) as url:
        assert httpx.get(url + link.group(1)).status_code == 200  # GET: a button, nothing sent
        assert not (site.settings.outbox_dir / "city" / "welcome").exists()
        r = httpx.post(url + link.group(1))
        assert r.status_code == 200 and "You are subscribed" in r.text
        assert httpx.post(url + link.group(1)).status_code == 410  # the link works once

    welcome = _eml(site.settings.outbox_dir / "city" / "welcome" / "zoe@example.com.eml")
    assert welcome["Subject"] == "Welcome to City Weekly"
    text = _text(welcome)
    html = welcome.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "https://news.example.com/archive/city/1" in text
    assert 'href="https://news.example.com/archive/city/1"' in html
    for title in ("Old market reopens", "Harbour dredging ends"):  # issue #1's stories, the latest sent
        assert title in text and title in html
    assert "https://news.example.com/m/" in text and "https://news.example.com/m/" in html
    assert welcome["List-Unsubscribe"].strip().startswith("<https://news.example.com/u/")
    first_id = welcome["Message-ID"]

    # Confirming again by hand, or a second call, welcomes nobody twice.
    with session_scope(site.engine) as session:
        zoe = session.scalar(select(Subscriber.id).where(Subscriber.email == "zoe@example.com"))
    assert send_welcome(site.engine, nl, zoe, mailer, site.settings).status == "already"
    assert _eml(site.settings.outbox_dir / "city" / "welcome" / "zoe@example.com.eml")["Message-ID"] == first_id
    with session_scope(site.engine) as session:
        assert session.scalar(select(func.count()).select_from(Welcome)) == 1
        assert session.scalar(select(Welcome.status)) == "sent"


def test_the_welcome_template_can_be_overridden_and_feed_text_forms_no_token(tmp_path: Path) -> None:
    from newsletter.store.models import IssueItem

    site = make_site(tmp_path)
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    site.settings.templates_dir.mkdir(parents=True, exist_ok=True)
    (site.settings.templates_dir / "welcome.txt.j2").write_text(
        "Hello from the {{ newsletter.name }} desk. Latest: {{ issue.subject }}\n"
        "{% for t in issue.titles %}* {{ t }}\n{% endfor %}Leave: {{ unsubscribe_url }}\n")
    with session_scope(site.engine) as session:
        story = session.scalars(select(IssueItem).where(IssueItem.issue_id == site.sent_issue_id)).first()
        story.title = "Win big %%unsubscribe_url%% today"
        ann = session.scalar(select(Subscriber.id).where(Subscriber.email == "ann@example.com"))
    result = send_welcome(site.engine, nl, ann, OutboxMailer(site.settings.outbox_dir), site.settings)
    assert result.status == "sent" and result.issue_number == 1
    text = _text(_eml(site.settings.outbox_dir / "city" / "welcome" / "ann@example.com.eml"))
    assert text.startswith("Hello from the City Weekly desk. Latest:")
    assert "Win big %%\u2060unsubscribe_url%% today" in text  # defused: not the reader's link
    assert text.count("https://news.example.com/u/") == 1


def test_the_cli_confirm_welcomes_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from newsletter.cli.main import app

    site = make_site(tmp_path)
    monkeypatch.chdir(tmp_path)
    for key, value in {"NEWSLETTER_DATABASE_URL": site.settings.database_url, "NEWSLETTER_MAILER": "outbox",
                       "NEWSLETTER_OUTBOX_DIR": str(site.settings.outbox_dir),
                       "NEWSLETTER_SCHEDULES_DIR": str(site.settings.schedules_dir),
                       "NEWSLETTER_BASE_URL": site.settings.base_url,
                       "NEWSLETTER_SECRET_KEY": site.settings.secret_key or ""}.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    r = runner.invoke(app, ["subscribers", "add", "max@example.com", "-n", "city", "--opt-in"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["subscribers", "confirm", "max@example.com", "-n", "city"])
    assert r.exit_code == 0 and "welcome email sent" in r.output, r.output
    r = runner.invoke(app, ["subscribers", "confirm", "max@example.com", "-n", "city"])
    assert r.exit_code == 0 and "welcomed before" in r.output, r.output
    assert (site.settings.outbox_dir / "city" / "welcome" / "max@example.com.eml").is_file()
