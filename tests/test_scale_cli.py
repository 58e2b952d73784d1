"""Scale mode asked for where it cannot work says so, naming the setting, instead of falling back silently."""

from __future__ import annotations

from pathlib import Path


def test_scale_mode_on_sqlite_is_a_clear_error(workdir: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    for args in (["worker"], ["scale", "send", "city"], ["scale", "collect"], ["db", "upgrade", "--scale"]):
        result = cli(*args, ok=False)
        assert result.exit_code == 1, args
        assert "PostgreSQL" in result.output and "sqlite:///" in result.output, (args, result.output)
    monkeypatch.setenv("NEWSLETTER_SCALE", "1")
    result = cli("db", "upgrade", ok=False)
    assert result.exit_code == 1 and "NEWSLETTER_SCALE=1" in result.output
    monkeypatch.setenv("NEWSLETTER_SCALE", "0")
    assert "up to date" in cli("db", "upgrade").output or "Upgraded" in cli("db", "upgrade").output


def test_send_retries_back_off_and_never_come_sooner_than_the_provider_asked() -> None:
    from datetime import UTC, datetime

    from procrastinate.jobs import Job

    from newsletter.deliver.mailer import PermanentDeliveryError, TemporaryDeliveryError
    from newsletter.scale.tasks import SEND_RETRY

    job = Job(id=1, queue="send", lock=None, queueing_lock=None, task_name="send_batch", attempts=2)
    start = datetime.now(UTC)
    plain = SEND_RETRY.get_retry_decision(exception=TemporaryDeliveryError("503"), job=job)
    assert 7 <= (plain.retry_at - start).total_seconds() <= 10  # exponential: 2 ** (2 + 1) seconds
    limited = SEND_RETRY.get_retry_decision(exception=TemporaryDeliveryError("429", retry_after=120), job=job)
    assert (limited.retry_at - start).total_seconds() >= 120
    assert SEND_RETRY.get_retry_decision(exception=PermanentDeliveryError("401"), job=job) is None


def test_the_database_url_becomes_a_libpq_uri_with_its_options() -> None:
    from newsletter.scale.app import libpq_dsn

    assert libpq_dsn("postgresql+psycopg://news:p%40ss@db.internal:5433/newsletter?sslmode=require") == (
        "postgresql://news:p%40ss@db.internal:5433/newsletter?sslmode=require")
    assert libpq_dsn("postgresql://db/news?options=-csearch_path%3Dt1") == "postgresql://db/news?options=-csearch_path%3Dt1"
