"""The SendGrid backend over HTTPS, as the real API is: kept-alive connections verify the server's certificate
(the system's trust store, as urllib's default does), and a certificate nobody trusts stops the send before a
byte of the request goes out."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.deliver.mailer import TemporaryDeliveryError
from newsletter.deliver.sendgrid import SendGridMailer
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.sendgrid_server import SendGridServer
from tests.test_deliver_sendgrid import MESSAGE, people
from tests.test_fetch_tls import make_cert


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[SendGridServer, Path]]:
    cert, key = make_cert(tmp_path)  # for `localhost`, self-signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SendGridServer(SENDGRID_TEST_KEY, tls=context).start()
    yield server, cert
    server.stop()


def test_kept_alive_https_verifies_the_certificate_it_is_given_to_trust(
    tls_server: tuple[SendGridServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the trust store OpenSSL reads, as an operator sets it
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5)
    for start in range(0, 30, 10):
        mailer.push(MESSAGE, people(10, start))
    assert server.url.startswith("https://") and server.connections == 1  # one TLS handshake for three sends
    assert len(server.deliveries()) == 30 and set(server.deliveries().values()) == {1}
    mailer.close()


def test_a_certificate_nobody_trusts_is_refused_before_the_request_goes_out(
    tls_server: tuple[SendGridServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _cert = tls_server
    (tmp_path / "other").mkdir()
    other, _key = make_cert(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other))  # trusts another certificate for the same name
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5)
    with pytest.raises(TemporaryDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        mailer.push(MESSAGE, people(3))
    assert server.deliveries() == {} and server.calls["mail"] == 0
