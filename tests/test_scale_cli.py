"""Scale mode asked for where it cannot work says so, naming the setting, instead of falling back silently."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_scale_mode_on_sqlite_is_a_clear_error(workdir: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    for args in (["worker"], ["scale", "send", "city"], ["scale", "collect"], ["db", "upgrade", "--scale"],
                 ["run", "--scale"]):
        result = cli(*args, ok=False)
        assert result.exit_code == 1, args
        assert "PostgreSQL" in result.output and "sqlite:///" in result.output, (args, result.output)
    monkeypatch.setenv("NEWSLETTER_SCALE", "1")
    result = cli("db", "upgrade", ok=False)
    assert result.exit_code == 1 and "NEWSLETTER_SCALE=1" in result.output
    monkeypatch.setenv("NEWSLETTER_SCALE", "0")
    out = cli("db", "upgrade").output  # the refused upgrades above touched nothing: this one creates it
    assert "Upgraded" in out and "from empty" in out


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
    from newsletter.scale.mode import libpq_dsn

    assert libpq_dsn("postgresql+psycopg://news:p%40ss@db.internal:5433/newsletter?sslmode=require") == (
        "postgresql://news:p%40ss@db.internal:5433/newsletter?sslmode=require")
    assert libpq_dsn("postgresql://db/news?options=-csearch_path%3Dt1") == "postgresql://db/news?options=-csearch_path%3Dt1"


@pytest.mark.postgres
def test_newsletter_run_in_scale_mode_keeps_the_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import sqlalchemy as sa

    from tests.conftest import postgres_schema

    with postgres_schema() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
        env.update(NEWSLETTER_DATABASE_URL=url, NEWSLETTER_SCALE="1", NEWSLETTER_SCHEDULES_DIR=str(tmp_path))
        run = subprocess.Popen([sys.executable, "-m", "newsletter", "run"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        engine = sa.create_engine(url)
        try:
            deadline = time.monotonic() + 20
            queues = None
            # The periodic jobs are deferred one after the other: wait for the one checked below, not the first.
            while time.monotonic() < deadline and not any(n.endswith("retry_stalled") for n in queues or []):
                time.sleep(0.2)
                with engine.connect() as conn:
                    if conn.execute(sa.text("SELECT to_regclass('procrastinate_periodic_defers')")).scalar():
                        # it defers the periodic jobs (the minute tick, the stalled-job check) and takes them
                        queues = conn.execute(sa.text(
                            "SELECT DISTINCT task_name FROM procrastinate_periodic_defers")).scalars().all()
            assert any(name.endswith("retry_stalled") for name in queues or []), queues
        finally:
            run.send_signal(signal.SIGTERM)
            output = run.communicate(timeout=20)[0]
            engine.dispose()
        assert run.returncode == 0, output
        assert "deferring scheduled collects and sends to the workers" in output
