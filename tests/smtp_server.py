"""A real SMTP server on loopback (aiosmtpd) that records what it accepted and fails on cue."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    session: int
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes = b""  # the bytes as they came (a DKIM signature is checked over these)


@dataclass
class Recorder:
    received: list[Received] = field(default_factory=list)
    # Replies given instead of accepting, per SMTP stage, one at a time: fail["DATA"] = ["451 ..."]
    fail: dict[str, list[str]] = field(default_factory=lambda: {"MAIL": [], "RCPT": [], "DATA": []})
    sessions: int = 0
    defer: dict[str, str] = field(default_factory=dict)  # address -> reply to DATA, once
    # Addresses whose message is accepted (recorded) but whose answer to DATA never comes: the server hangs up
    # instead, once each. The client cannot tell a lost "250" from a lost message.
    lose_answer: set[str] = field(default_factory=set)
    # A relay that takes at most this many messages per connection, then answers MAIL with 421 and hangs up.
    per_session: int | None = None
    _session_counts: dict[int, int] = field(default_factory=dict)

    def _session(self, session: Any) -> int:
        if not hasattr(session, "recorder_id"):
            self.sessions += 1
            session.recorder_id = self.sessions
        return session.recorder_id

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201, N802
        number = self._session(session)
        if self.fail["MAIL"]:
            return self.fail["MAIL"].pop(0)
        if self.per_session is not None and self._session_counts.get(number, 0) >= self.per_session:
            server.transport.close()
            return "421 4.7.0 too many messages on this connection, closing"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201, N802
        if self.fail["RCPT"]:
            return self.fail["RCPT"].pop(0)
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        if self.fail["DATA"]:
            return self.fail["DATA"].pop(0)
        for addr in envelope.rcpt_tos:
            if addr in self.defer:
                return self.defer.pop(addr)
        msg = message_from_bytes(envelope.content, policy=policy.default)
        number = self._session(session)
        self.received.append(Received(number, envelope.mail_from, list(envelope.rcpt_tos), msg,
                                      envelope.content))
        self._session_counts[number] = self._session_counts.get(number, 0) + 1
        lost = self.lose_answer.intersection(envelope.rcpt_tos)
        if lost:
            self.lose_answer -= lost
            server.transport.close()  # accepted, and the "250" is never sent
        return "250 2.0.0 Message accepted for delivery"

    def deliveries(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.received:
            for addr in r.rcpt_tos:
                counts[addr] = counts.get(addr, 0) + 1
        return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def password_checker(user: str, password: str):  # noqa: ANN201
    def check(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself

    return check


def start(recorder: Recorder, **kwargs: Any) -> Controller:
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
