"""DKIM: `newsletter dkim keygen` writes a key and the record to publish; the outbox and SMTP messages carry a
signature that dkimpy's verifier accepts (RSA and Ed25519), with the public key served by a DNS server of the
test's own on loopback; a key that does not match the published record stops the send before anyone gets mail."""

from __future__ import annotations

import email
import json
import re
import stat
from collections.abc import Iterator
from email import policy
from pathlib import Path

import dkim
import dns.nameserver
import dns.resolver
import pytest

from newsletter.deliver.dkim import DkimError, DkimSigner, generate, parse_key
from newsletter.deliver.dnslookup import Lookup
from tests import smtp_server
from tests.dns_zone import Running, Zone, serve
from tests.smtp_server import Recorder
from tests.test_cli import setup_newsletter

DOMAIN = "example.com"  # the From domain of the test schedules (news@example.com)
SELECTOR = "nl2026"
NAME = f"{SELECTOR}._domainkey.{DOMAIN}"


def dnsfunc_for(running: Running):  # noqa: ANN201
    """dkimpy's DNS hook answered by the loopback server, through dnspython: the verifier sees what DNS says."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", running.port)]
        try:
            answer = resolver.resolve(name.decode().rstrip(".") + ".", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return b""
        return b"".join(answer[0].strings)

    return dnsfunc


def signature_tags(raw: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    value = re.sub(r"\s+", "", msg["DKIM-Signature"])
    return dict(part.split("=", 1) for part in value.split(";") if "=" in part)


@pytest.fixture
def dns_zone() -> Iterator[Running]:
    with serve(Zone()) as running:
        yield running


def keyed(workdir: Path, monkeypatch: pytest.MonkeyPatch, running: Running, algorithm: str,
          publish: bool = True) -> Path:
    pem, key = generate(algorithm)  # type: ignore[arg-type]
    path = workdir / "dkim.key"
    path.write_bytes(pem)
    if publish:
        running.zone.add(NAME, "TXT", key.record())
    monkeypatch.setenv("NEWSLETTER_DKIM_KEY_FILE", str(path))
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", SELECTOR)
    monkeypatch.setenv("NEWSLETTER_DNS_SERVERS", running.address)
    return path


def built(workdir: Path, feed_server, cli, subscribers: int = 2) -> None:  # noqa: ANN001
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    for i in range(subscribers):
        cli("subscribers", "add", f"reader{i}@example.org", "-n", "city")


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_prints_the_record(workdir, cli) -> None:
    out = cli("dkim", "keygen", "--domain", "example.org", "--selector", "s1", "--out", "k.pem").output
    key = workdir / "k.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (workdir / "k.pem.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    loaded = parse_key(key.read_bytes())
    assert loaded.algorithm == "rsa" and loaded.bits == 2048
    # The record, split in strings of at most 255 characters, as a zone file or a DNS console takes it.
    line = next(line for line in out.splitlines() if line.startswith("s1._domainkey.example.org. IN TXT"))
    strings = re.findall(r'"([^"]*)"', line)
    assert all(len(s) <= 255 for s in strings) and "".join(strings) == f"v=DKIM1; k=rsa; p={loaded.public}"
    assert "NEWSLETTER_DKIM_KEY_FILE=" in out and "NEWSLETTER_DKIM_SELECTOR=s1" in out

    again = cli("dkim", "keygen", "--domain", "example.org", "--out", "k.pem", ok=False)
    assert again.exit_code == 1 and "already exists" in again.output
    assert parse_key(key.read_bytes()) == loaded  # untouched

    out = cli("dkim", "keygen", "--domain", "example.org", "--type", "ed25519", "--out", "ed.pem").output
    ed = parse_key((workdir / "ed.pem").read_bytes())
    assert ed.algorithm == "ed25519" and f'"v=DKIM1; k=ed25519; p={ed.public}"' in out
    assert stat.S_IMODE((workdir / "ed.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_outbox_messages_are_signed_and_verify_against_the_published_key(
        workdir, feed_server, cli, monkeypatch, dns_zone: Running, algorithm: str) -> None:  # noqa: ANN001
    keyed(workdir, monkeypatch, dns_zone, algorithm)
    built(workdir, feed_server, cli)
    assert "2 now" in cli("send", "city").output
    assert dns_zone.zone.queries.count((NAME, "TXT")) == 1  # asked once for the send, not once per message
    files = sorted((workdir / "outbox" / "city").rglob("*.eml"))
    assert len(files) == 2
    for path in files:
        raw = path.read_bytes()
        assert dkim.verify(raw, dnsfunc=dnsfunc_for(dns_zone)), path
        sig = signature_tags(raw)
        assert sig["d"] == DOMAIN and sig["s"] == SELECTOR and sig["c"] == "relaxed/relaxed"
        assert sig["a"] == ("rsa-sha256" if algorithm == "rsa" else "ed25519-sha256")
        signed = sig["h"].lower().split(":")
        assert {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                "list-unsubscribe-post", "mime-version", "content-type"} <= set(signed)
        assert signed.count("from") == 2 and signed.count("list-unsubscribe") == 2  # oversigned
        # A changed unsubscribe link, or a second From added on the way, no longer verifies.
        tampered = re.sub(rb"List-Unsubscribe:\s*<[^>]+>", b"List-Unsubscribe: <https://evil.example/u/x>", raw)
        assert tampered != raw and not dkim.verify(tampered, dnsfunc=dnsfunc_for(dns_zone))
        added = raw.replace(b"\r\nSubject:", b"\r\nFrom: Boss <boss@example.com>\r\nSubject:", 1)
        assert not dkim.verify(added, dnsfunc=dnsfunc_for(dns_zone))


def test_smtp_messages_are_signed_as_they_reach_the_relay(
        workdir, feed_server, cli, monkeypatch, dns_zone: Running) -> None:  # noqa: ANN001
    recorder = Recorder()
    controller = smtp_server.start(recorder)
    try:
        monkeypatch.setenv("NEWSLETTER_MAILER", "smtp")
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        keyed(workdir, monkeypatch, dns_zone, "rsa")
        built(workdir, feed_server, cli, subscribers=3)
        assert "3 now" in cli("send", "city").output
    finally:
        controller.stop()
    assert len(recorder.received) == 3
    for received in recorder.received:
        assert dkim.verify(received.raw, dnsfunc=dnsfunc_for(dns_zone))


@pytest.mark.parametrize("published", ["other-key", "none", "wrong-type"])
def test_a_key_receivers_could_not_verify_stops_the_send_before_anyone_is_sent(
        workdir, feed_server, cli, monkeypatch, dns_zone: Running, published: str) -> None:  # noqa: ANN001
    keyed(workdir, monkeypatch, dns_zone, "rsa", publish=False)
    if published == "other-key":
        dns_zone.zone.add(NAME, "TXT", generate("rsa")[1].record())
    elif published == "wrong-type":
        dns_zone.zone.add(NAME, "TXT", generate("ed25519")[1].record())
    built(workdir, feed_server, cli)
    result = cli("send", "city", ok=False)
    assert result.exit_code == 1
    words = {"other-key": "does not match the record published at " + NAME,
             "none": "no DKIM record at " + NAME, "wrong-type": "for a ed25519 key"}[published]
    assert words in result.output, result.output
    assert f"publish: {NAME}. IN TXT" in result.output
    assert not (workdir / "outbox").exists() or not list((workdir / "outbox").rglob("*.eml"))
    issue = json.loads(cli("issue", "show", "1", "--format", "json").output)
    assert issue["status"] == "draft"  # not "sending": nothing was started
    # A test send is refused the same way.
    assert cli("send", "city", "--test-to", "me@example.org", ok=False).exit_code == 1


def test_an_unreadable_or_unusable_key_file_is_a_clear_error(workdir, feed_server, cli, monkeypatch) -> None:  # noqa: ANN001
    built(workdir, feed_server, cli, subscribers=1)
    monkeypatch.setenv("NEWSLETTER_DKIM_KEY_FILE", str(workdir / "missing.key"))
    from newsletter.cli import common

    common.settings.cache_clear()
    result = cli("send", "city", ok=False)
    assert "NEWSLETTER_DKIM_KEY_FILE" in result.output and "missing.key" in result.output
    (workdir / "bad.key").write_text("hello")
    monkeypatch.setenv("NEWSLETTER_DKIM_KEY_FILE", str(workdir / "bad.key"))
    common.settings.cache_clear()
    result = cli("send", "city", ok=False)
    assert "not a private key" in result.output
    assert not list((workdir / "outbox").rglob("*.eml"))


def test_each_signed_message_is_verified_before_it_is_handed_on(dns_zone: Running) -> None:
    _, key = generate("ed25519")
    dns_zone.zone.add(NAME, "TXT", key.record())
    signer = DkimSigner(key, SELECTOR, None, Lookup(dns_zone.servers))
    data = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    assert dkim.verify(signer.sign(data, "a@example.com"), dnsfunc=dnsfunc_for(dns_zone))
    # The record changes under a running send (a key rotated too early): the next message is refused.
    signer._records[DOMAIN] = generate("ed25519")[1].record().encode()
    with pytest.raises(DkimError, match="does not verify"):
        signer.sign(data, "a@example.com")


def test_a_scheduled_send_waits_on_a_key_receivers_could_not_verify(
        workdir, feed_server, cli, monkeypatch, dns_zone: Running) -> None:  # noqa: ANN001
    keyed(workdir, monkeypatch, dns_zone, "rsa", publish=False)
    dns_zone.zone.add(NAME, "TXT", generate("rsa")[1].record())  # another key is published
    setup_newsletter(workdir, feed_server)
    cli("subscribers", "add", "reader@example.org", "-n", "city")
    result = cli("schedule", "run", "city", "--now", ok=False)
    assert result.exit_code != 0
    assert "does not match the record published at " + NAME in result.output, result.output
    assert not (workdir / "outbox").exists() or not list((workdir / "outbox").rglob("*.eml"))
