"""Shared fixtures: an isolated working directory per test, real loopback servers, and the CLI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

# Wide enough that Rich never wraps a line the tests look for (the console reads this once, at import).
os.environ["COLUMNS"] = "200"

from typer.testing import CliRunner  # noqa: E402

from tests.feedserver import FeedServer  # noqa: E402
from tests.postgres import fresh_schema  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"

pytest_plugins = ["tests.conftest_sendgrid"]


def rss(title: str, items: list[dict], *, now: datetime | None = None) -> bytes:
    """A small RSS 2.0 document; each item dict has guid, title, link, body and hours_ago."""
    now = now or datetime.now(UTC)
    parts = []
    for item in items:
        when = format_datetime(now - timedelta(hours=item.get("hours_ago", 1)))
        guid = f"<guid>{item['guid']}</guid>" if item.get("guid") else ""
        link = f"<link>{item['link']}</link>" if item.get("link") else ""
        parts.append(
            f"<item><title>{item['title']}</title>{link}{guid}<pubDate>{when}</pubDate>"
            f"<description><![CDATA[{item.get('body', '')}]]></description></item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>https://example.com/</link><description>test</description>{''.join(parts)}</channel></rss>"
    ).encode()


def schedule_toml(slug: str, sources: list[tuple[str, str]], extra: str = "") -> str:
    src = "".join(f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\n' for name, url in sources)
    return (f'name = "{slug.title()} Weekly"\nfrom_address = "{slug.title()} <news@example.com>"\n'
            f'postal_address = "1 Test Street"\n{src}\n{extra}')


PG_ENV = "NEWSLETTER_TEST_DATABASE_URL"
# The test servers (feeds, article pages, model endpoint) listen on loopback, which the fetcher's guard refuses
# unless the operator allows it: every test opts in here, as an operator would; tests/test_security_fetch.py
# unsets it to test the guard itself.
FETCH_ALLOW_LOOPBACK = "127.0.0.1/32,::1/128"


@pytest.fixture(autouse=True)
def _fetch_allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", FETCH_ALLOW_LOOPBACK)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL for a fresh, empty PostgreSQL schema of its own (dropped afterwards); skips when none is configured."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests need a server (.ci/run sets it)")
    with fresh_schema(base) as url:
        yield url


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database a test runs on: SQLite by default; parametrize with "postgres" to run on both."""
    if request.param == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'newsletter.db'}"


BOTH_DATABASES = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                         indirect=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    """A fresh project folder as a user has it: schedules/, its own database and outbox."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith(("NEWSLETTER_", "SENDGRID_")) and key not in (PG_ENV, "NEWSLETTER_FETCH_ALLOW"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", db_url)
    monkeypatch.setenv("NEWSLETTER_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.com")
    (tmp_path / "schedules").mkdir()
    from newsletter.cli import common

    _clear_settings(common)
    yield tmp_path
    _clear_settings(common)


def _clear_settings(common) -> None:  # noqa: ANN001
    common.settings.cache_clear()
    # Scale mode's workers keep their own (newsletter.scale.tasks): clear it too where a test loaded it, or the
    # next test's worker writes to the last test's outbox.
    tasks = sys.modules.get("newsletter.scale.tasks")
    if tasks is not None:
        tasks.settings.cache_clear()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


@pytest.fixture
def cli():  # noqa: ANN201
    from newsletter.cli.main import app

    runner = CliRunner()

    def run(*args: str, ok: bool = True):  # noqa: ANN202
        result = runner.invoke(app, list(args), catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"newsletter {' '.join(args)} exited {result.exit_code}:\n{result.output}")
        return result

    return run
