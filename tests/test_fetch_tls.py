"""TLS through the guarded fetcher: the connection goes to the address the guard checked, and the certificate is
still verified against the URL's host name (not against the address, and never skipped)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsletter.collect import fetch as fetcher
from newsletter.collect.fetch import FetchLimits, FetchResult, fetch_all

FEED = b"<rss version='2.0'><channel><title>over TLS</title></channel></rss>"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name `localhost` only (no IP address in it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", str(len(FEED)))
        self.end_headers()
        self.wfile.write(FEED)


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    cert, key = make_cert(tmp_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "localhost,127.0.0.1")
    fetcher._ca_locations.cache_clear()  # the context is made once a process; these tests change what it trusts
    yield httpd.server_address[1], cert
    fetcher._ca_locations.cache_clear()
    httpd.shutdown()
    httpd.server_close()


def fetch(*urls: str) -> list[FetchResult]:
    return asyncio.run(fetch_all([(u, None, None) for u in urls], FetchLimits(timeout=10)))


def test_the_certificate_is_checked_against_the_urls_host_name(
    tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust this one certificate, as a CA bundle would
    by_name, by_address = fetch(f"https://localhost:{port}/feed", f"https://127.0.0.1:{port}/feed")
    assert by_name.ok and by_name.body == FEED, by_name.error
    # The same server, the same certificate, but the URL names an address the certificate does not cover.
    assert not by_address.ok and "certificate" in (by_address.error or "").lower(), by_address.error


def test_an_untrusted_certificate_is_refused(tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    port, _cert = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    [result] = fetch(f"https://localhost:{port}/feed")
    assert not result.ok and "certificate verify failed" in (result.error or ""), result.error
