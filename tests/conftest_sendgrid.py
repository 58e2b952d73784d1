"""Pytest fixtures for the local SendGrid server (tests/sendgrid_server.py).

Loaded from tests/conftest.py with:  pytest_plugins = ["tests.conftest_sendgrid"]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sendgrid_server import SendGridServer

SENDGRID_TEST_KEY = "SG.test-key"


@pytest.fixture
def sendgrid_server() -> Iterator[SendGridServer]:
    """A fresh SendGrid server on a free loopback port that accepts only SENDGRID_TEST_KEY."""
    with SendGridServer(SENDGRID_TEST_KEY) as server:
        yield server


@pytest.fixture
def sendgrid_env(sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch) -> SendGridServer:
    """The server, with SENDGRID_API_HOST / SENDGRID_API_KEY pointing the application at it."""
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.url)
    monkeypatch.setenv("SENDGRID_API_KEY", SENDGRID_TEST_KEY)
    monkeypatch.setenv("NEWSLETTER_MAILER", "sendgrid")
    return sendgrid_server
