"""Setting and showing a subscriber's choices from the CLI and the API, and importing them from CSV columns."""

from __future__ import annotations

from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import PreferenceChange, Subscriber, Subscription
from newsletter.web.auth import issue_api_token
from tests.web_support import EDITOR, SCHEDULE

pytest_plugins = ["tests.web_fixtures"]

SECTIONED = SCHEDULE.replace('url = "https://city.example/feed"\n',
                             'url = "https://city.example/feed"\nsection = "Town"\n') \
    .replace('url = "https://harbour.example/feed"\n', 'url = "https://harbour.example/feed"\nsection = "Harbour"\n') \
    + '\n[schedule]\nsend = "weekly on monday at 08:00"\n\n[[cadences]]\nname = "daily"\nsend = "daily at 07:00"\n'


def _sub(engine, email: str = "ann@example.com") -> Subscription:  # noqa: ANN001
    with session_scope(engine) as session:
        sub = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == email))
        assert sub is not None
        session.expunge(sub)
        return sub


def test_the_api_shows_and_changes_a_subscribers_choices(site, client) -> None:  # noqa: ANN001
    (site.settings.schedules_dir / "city.toml").write_text(SECTIONED)
    with session_scope(site.engine) as session:
        token = issue_api_token(session, EDITOR)
    auth = {"Authorization": f"Bearer {token}"}
    url = "/api/newsletters/city/subscribers/ann@example.com/preferences"
    r = client.get(url, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"email": "ann@example.com", "status": "active", "sections_off": [], "frequency": None,
                        "timezone": None, "format": "html", "paused_until": None, "changed_at": None}
    r = client.patch(url, headers=auth, json={"sections_off": ["Harbour"], "frequency": "daily",
                                              "timezone": "America/New_York", "format": "text", "pause_weeks": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sections_off"] == ["Harbour"] and body["frequency"] == "daily" and body["format"] == "text"
    assert body["timezone"] == "America/New_York" and body["paused_until"] and body["changed_at"]
    for bad, status in (({"sections_off": ["Gardening"]}, 422), ({"frequency": "hourly"}, 422),
                        ({"timezone": "Mars/Olympus"}, 422), ({"format": "pdf"}, 422), ({"colour": "red"}, 400),
                        ({"pause_weeks": "two"}, 400), ({"pause_weeks": 99}, 422)):
        assert client.patch(url, headers=auth, json=bad).status_code == status, bad
    assert client.get("/api/newsletters/city/subscribers/nobody@example.com/preferences",
                      headers=auth).status_code == 404
    assert client.get(url).status_code == 401
    with session_scope(site.engine) as session:
        assert {c.origin for c in session.scalars(select(PreferenceChange))} == {"api"}


def test_the_cli_shows_and_sets_choices_and_imports_them(site, tmp_path, monkeypatch, cli) -> None:  # noqa: ANN001
    (site.settings.schedules_dir / "city.toml").write_text(SECTIONED)
    for key, value in {"NEWSLETTER_DATABASE_URL": site.settings.database_url,
                       "NEWSLETTER_SCHEDULES_DIR": str(site.settings.schedules_dir),
                       "NEWSLETTER_OUTBOX_DIR": str(site.settings.outbox_dir)}.items():
        monkeypatch.setenv(key, value)
    out = cli("subscribers", "preferences", "ann@example.com", "-n", "city").output
    assert "sections: Town, Harbour" in out and "frequency: weekly" in out and "not paused" in out
    out = cli("subscribers", "preferences", "ann@example.com", "-n", "city", "--sections", "Town",
              "--frequency", "daily", "--tz", "Europe/Paris", "--history").output
    assert "changed: sections_off, frequency, timezone" in out and "(off: Harbour)" in out
    assert "cli: frequency None -> 'daily'" in out
    sub = _sub(site.engine)
    assert sub.sections_off == ["Harbour"] and sub.frequency == "daily" and sub.timezone == "Europe/Paris"
    failed = cli("subscribers", "preferences", "ann@example.com", "-n", "city", "--tz", "Nowhere/Land", ok=False)
    assert failed.exit_code != 0 and "timezone: unknown time zone" in failed.output
    assert _sub(site.engine).timezone == "Europe/Paris"

    people = tmp_path / "people.csv"
    people.write_text("email,name,sections,frequency,tz\n"
                      "kim@example.com,Kim,Harbour,daily,Asia/Tokyo\n"
                      "lou@example.com,Lou,,,\n"
                      "max@example.com,Max,Gardening,weekly,\n")
    out = cli("subscribers", "import", str(people), "-n", "city").output
    assert "3 added" in out
    assert "line 4" in out and "Gardening" in out  # reported, and Max imported without that choice
    kim, lou, max_ = _sub(site.engine, "kim@example.com"), _sub(site.engine, "lou@example.com"), \
        _sub(site.engine, "max@example.com")
    assert kim.sections_off == ["Town"] and kim.frequency == "daily" and kim.timezone == "Asia/Tokyo"
    assert lou.sections_off is None and lou.frequency is None and lou.timezone is None
    assert max_.status == "active" and max_.sections_off is None
    with session_scope(site.engine) as session:
        person = session.scalar(select(Subscriber).where(Subscriber.email == "kim@example.com"))
        assert "tz" not in (person.fields or {}) and "sections" not in (person.fields or {})
