"""`newsletter send` with NEWSLETTER_MAILER=sendgrid against the local SendGrid server, as an operator runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sendgrid_server import SendGridServer, check_request
from tests.test_cli import setup_newsletter


def test_send_via_sendgrid_401_then_fixed_then_test_to(workdir: Path, feed_server, cli, sendgrid_env: SendGridServer,
                                                      monkeypatch) -> None:  # noqa: ANN001
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    (workdir / "people.csv").write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob & Co\n")
    cli("subscribers", "import", "people.csv", "-n", "city")

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    from newsletter.cli import common

    common.settings.cache_clear()
    failed = cli("send", "city", ok=False)
    assert failed.exit_code == 1
    said = " ".join(failed.output.split())
    assert "401" in said and "Check SENDGRID_API_KEY. Nothing is lost" in said and "run the same command again" in said
    assert sendgrid_env.accepted == []

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    common.settings.cache_clear()
    out = cli("send", "city").output
    assert "2 now" in out and "via sendgrid" in out
    [request] = sendgrid_env.accepted
    assert check_request(request.body) == []
    assert sendgrid_env.deliveries() == {"ann@example.com": 1, "bob@example.com": 1}
    html = next(c["value"] for c in request.body["content"] if c["type"] == "text/html")
    assert "Bridge plan approved" in html and "%%unsubscribe_url" in html
    ann = sendgrid_env.message_for("ann@example.com")["text/html"]  # as SendGrid fills it in for her
    assert "%%" not in ann and "/u/" in ann
    assert request.body["custom_args"]["newsletter"] == "city" and request.body["custom_args"]["batch"]
    assert "already sent" in cli("send", "city").output

    assert "Sent a test" in cli("send", "city", "--test-to", "editor@example.com").output
    assert sendgrid_env.deliveries()["editor@example.com"] == 1 and len(sendgrid_env.accepted) == 2
    assert sendgrid_env.accepted[-1].body["subject"].startswith("[TEST]")


def test_send_without_the_activity_api_holds_each_request_for_cancelling(
        workdir: Path, feed_server, cli, sendgrid_env: SendGridServer, monkeypatch) -> None:  # noqa: ANN001
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    (workdir / "people.csv").write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob\n")
    cli("subscribers", "import", "people.csv", "-n", "city")
    sendgrid_env.activity_api = False  # no Email Activity add-on: `auto` holds and cancels
    monkeypatch.setenv("SENDGRID_HOLD_SECONDS", "900")
    out = cli("send", "city").output
    assert "2 now" in out
    [request] = sendgrid_env.accepted
    assert check_request(request.body) == []
    assert request.batch_id in sendgrid_env.batch_ids
    assert request.body["send_at"] - request.at == pytest.approx(900, abs=5)
    assert request.body["custom_args"]["install"]  # this database's id, beside send and batch
    assert sendgrid_env.deliveries() == {"ann@example.com": 1, "bob@example.com": 1}
