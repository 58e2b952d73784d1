"""The sender checks against zones served by a DNS server of the test's own on loopback: each zone is a way a
real setup goes wrong (or right), and the findings say so, with the record to publish in its own syntax.

The relay's address below is only compared with SPF records, never connected to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from newsletter.config import Newsletter, Settings
from newsletter.deliver.dkim import generate
from newsletter.deliver.sender import check_sender, organisational_domain
from newsletter.render.check import Report
from tests.dns_zone import Running, Zone, serve

RELAY_IP = "93.184.215.14"
RELAY = "relay.mail-host.example"
SELECTOR = "nl"


@dataclass
class Case:
    zone: Zone = field(default_factory=Zone)
    mailer: str = "smtp"
    from_address: str = "news@example.org"
    dkim_domain: str | None = None
    publish_key: bool = True  # our key at nl._domainkey.<signing domain>
    smtp_url: str = f"smtp://{RELAY}:587"

    def spf(self, name: str, record: str) -> Case:
        self.zone.add(name, "TXT", record)
        return self


@pytest.fixture
def dns_server() -> Iterator[Running]:
    with serve(Zone()) as running:
        yield running


def run(case: Case, running: Running, tmp_path: Path) -> Report:
    running.zone.records.clear()
    running.zone.records.update(case.zone.records)
    running.zone.add(RELAY, "A", RELAY_IP)
    pem, key = generate("rsa")
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "k.pem").chmod(0o600)
    domain = case.dkim_domain or case.from_address.rpartition("@")[2]
    if case.publish_key:
        running.zone.add(f"{SELECTOR}._domainkey.{domain}", "TXT", key.record())
    settings = Settings(mailer=case.mailer, smtp_url=case.smtp_url if case.mailer == "smtp" else None,
                        dkim_key_file=None if case.mailer == "sendgrid" else tmp_path / "k.pem",
                        dkim_selector=SELECTOR, dkim_domain=case.dkim_domain, dns_servers=running.servers)
    nl = Newsletter(name="Test", slug="test", from_address=f"Test <{case.from_address}>",
                    sources=[{"url": "https://example.org/feed"}])
    return check_sender(nl, settings)


def by_code(report: Report, code: str) -> list[str]:
    return [f"{f.level} {f.message}" for f in report.findings if f.code == code]


GOOD_SPF = f"v=spf1 ip4:{RELAY_IP} -all"
ENFORCED = "v=DMARC1; p=reject; rua=mailto:d@example.org"


def good() -> Case:
    return Case().spf("example.org", GOOD_SPF).spf("_dmarc.example.org", ENFORCED)


def test_a_good_setup_passes_every_check(dns_server: Running, tmp_path: Path) -> None:
    report = run(good(), dns_server, tmp_path)
    assert not report.failed and not report.by_level("warn"), report.to_text()
    assert {"spf", "dkim", "dmarc", "dmarc-alignment"} <= report.codes("ok")
    assert f"authorises the relay {RELAY} ({RELAY_IP}" in report.to_text()
    assert "matches the signing key (rsa, 2048 bits)" in report.to_text()


def test_a_key_file_others_can_read_is_a_warning(dns_server: Running, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    real_chmod = Path.chmod
    monkeypatch.setattr(Path, "chmod", lambda self, mode: real_chmod(self, 0o644))
    lines = by_code(run(good(), dns_server, tmp_path), "dkim")
    assert any(line.startswith("warn ") and "can be read by other users (mode 644)" in line for line in lines)


def test_no_spf_record_says_which_record_to_publish(dns_server: Running, tmp_path: Path) -> None:
    case = Case().spf("_dmarc.example.org", ENFORCED)
    report = run(case, dns_server, tmp_path)
    (line,) = by_code(report, "spf")
    assert line.startswith("fail no SPF record at example.org")
    assert f'publish: example.org. IN TXT "v=spf1 ip4:{RELAY_IP} -all"' in line
    # DKIM still aligns: DMARC passes on it alone.
    assert "DKIM d=example.org (relaxed) aligned" in report.to_text()


def test_spf_that_leaves_the_relay_out_keeps_the_record_and_adds_its_address(dns_server: Running,
                                                                              tmp_path: Path) -> None:
    case = good()
    case.zone.records["example.org"]["TXT"] = ["v=spf1 ip4:192.0.2.0/24 include:_spf.example.net ~all"]
    case.spf("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all")
    (line,) = by_code(run(case, dns_server, tmp_path), "spf")
    assert line.startswith(f"fail example.org's SPF record does not authorise the relay {RELAY} ({RELAY_IP}: softfail)")
    assert (f'publish: example.org. IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net ip4:{RELAY_IP} ~all"'
            in line)


def test_spf_authorising_the_relay_through_includes_and_mx_passes(dns_server: Running, tmp_path: Path) -> None:
    case = good()
    case.zone.records["example.org"]["TXT"] = ["v=spf1 mx include:_spf.example.net -all"]
    case.zone.add("example.org", "MX", "mx.example.org").add("mx.example.org", "A", "192.0.2.25")
    case.spf("_spf.example.net", "v=spf1 include:_spf2.example.net -all")
    case.spf("_spf2.example.net", "v=spf1 ip4:93.184.215.0/24 -all")
    report = run(case, dns_server, tmp_path)
    assert not report.failed, report.to_text()
    assert "3 of 10 look-ups" in by_code(report, "spf")[0]


def test_spf_over_ten_lookups_is_broken(dns_server: Running, tmp_path: Path) -> None:
    case = good()
    case.zone.records["example.org"]["TXT"] = ["v=spf1 include:s0.example.net -all"]
    for i in range(11):
        case.spf(f"s{i}.example.net", f"v=spf1 include:s{i + 1}.example.net -all" if i < 10 else GOOD_SPF)
    (line,) = by_code(run(case, dns_server, tmp_path), "spf")
    assert line.startswith("fail example.org's SPF record is broken (more than 10 DNS look-ups")


def test_two_spf_records_are_broken(dns_server: Running, tmp_path: Path) -> None:
    case = good().spf("example.org", "v=spf1 include:sendgrid.net ~all")
    (line,) = by_code(run(case, dns_server, tmp_path), "spf")
    assert "has 2 SPF records" in line and line.startswith("fail")


def test_sendgrid_with_the_wrong_include_says_to_include_sendgrid(dns_server: Running, tmp_path: Path) -> None:
    case = Case(mailer="sendgrid", publish_key=False).spf("example.org", "v=spf1 include:mailgun.org ~all")
    case.spf("mailgun.org", "v=spf1 ip4:198.51.100.0/24 ~all").spf("_dmarc.example.org", ENFORCED)
    report = run(case, dns_server, tmp_path)
    (line,) = by_code(report, "spf")
    assert "does not include sendgrid.net (include:mailgun.org)" in line
    assert 'publish: example.org. IN TXT "v=spf1 include:mailgun.org include:sendgrid.net ~all"' in line
    (dkim_line,) = by_code(report, "dkim")
    assert dkim_line.startswith("fail no SendGrid DKIM records at s1._domainkey.example.org")
    assert "DMARC would fail" in by_code(report, "dmarc-alignment")[0]


def test_sendgrid_with_domain_authentication_passes(dns_server: Running, tmp_path: Path) -> None:
    case = Case(mailer="sendgrid", publish_key=False).spf("example.org", "v=spf1 include:sendgrid.net ~all")
    case.spf("sendgrid.net", "v=spf1 ip4:167.89.0.0/17 ~all").spf("_dmarc.example.org", ENFORCED)
    for s in ("s1", "s2"):
        case.zone.add(f"{s}._domainkey.example.org", "CNAME", f"{s}.domainkey.u1.wl1.sendgrid.net")
        case.spf(f"{s}.domainkey.u1.wl1.sendgrid.net", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GN")
    report = run(case, dns_server, tmp_path)
    assert not report.failed, report.to_text()


def test_a_key_that_does_not_match_the_published_record_is_reported(dns_server: Running, tmp_path: Path) -> None:
    case = good()
    case.publish_key = False
    case.spf(f"{SELECTOR}._domainkey.example.org", generate("rsa")[1].record())
    report = run(case, dns_server, tmp_path)
    (line,) = by_code(report, "dkim")
    assert "does not match the record published at nl._domainkey.example.org" in line
    assert "publish: nl._domainkey.example.org. IN TXT (" in line
    # SPF is aligned with From (the envelope sender is the From address), so DMARC still passes, on SPF alone.
    assert "SPF example.org (relaxed) aligned" in report.to_text()


def test_no_dkim_record_is_reported_with_the_record(dns_server: Running, tmp_path: Path) -> None:
    case = good()
    case.publish_key = False
    (line,) = by_code(run(case, dns_server, tmp_path), "dkim")
    assert line.startswith("fail no DKIM record at nl._domainkey.example.org") and '"v=DKIM1; k=rsa; p=' in line


def test_no_dmarc_record_fails_with_a_record_to_start_from(dns_server: Running, tmp_path: Path) -> None:
    case = Case().spf("example.org", GOOD_SPF)
    (line,) = by_code(run(case, dns_server, tmp_path), "dmarc")
    assert line.startswith("fail no DMARC record at _dmarc.example.org")
    assert 'publish: _dmarc.example.org. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org"' in line


def test_dmarc_p_none_warns_and_says_what_enforcing_looks_like(dns_server: Running, tmp_path: Path) -> None:
    case = Case().spf("example.org", GOOD_SPF).spf("_dmarc.example.org", "v=DMARC1; p=none; rua=mailto:r@example.org")
    report = run(case, dns_server, tmp_path)
    assert not report.failed
    (line,) = by_code(report, "dmarc")
    assert line.startswith("warn _dmarc.example.org: p=none")
    assert 'publish: _dmarc.example.org. IN TXT "v=DMARC1; p=quarantine; rua=mailto:r@example.org"' in line


def test_a_subdomain_signed_under_another_subdomain_is_misaligned_under_strict_dmarc(
        dns_server: Running, tmp_path: Path) -> None:
    # From news.example.org, signed d=mail.example.org, no SPF for news.example.org; the organisational domain's
    # record (found by the Public Suffix List, no record at _dmarc.news.example.org) asks strict alignment.
    case = Case(from_address="letters@news.example.org", dkim_domain="mail.example.org")
    case.spf("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=s")
    case.spf("news.example.org", "v=spf1 ip4:192.0.2.1 -all")
    report = run(case, dns_server, tmp_path)
    assert by_code(report, "dmarc") == ["ok _dmarc.example.org: p=quarantine"]  # sp= applies to a subdomain
    (line,) = by_code(report, "dmarc-alignment")
    assert line.startswith("fail DMARC would fail for From news.example.org")
    assert "DKIM d=mail.example.org is not aligned with news.example.org (adkim=s: must be the same name)" in line
    assert "SPF does not pass" in line
    assert 'relax alignment: _dmarc.example.org. IN TXT "v=DMARC1; p=reject; sp=quarantine; adkim=r; aspf=s"' in line

    relaxed = Case(from_address="letters@news.example.org", dkim_domain="mail.example.org")
    relaxed.spf("_dmarc.example.org", "v=DMARC1; p=reject").spf("news.example.org", GOOD_SPF)
    report = run(relaxed, dns_server, tmp_path)
    assert not report.failed, report.to_text()


def test_a_signature_of_another_organisation_never_aligns(dns_server: Running, tmp_path: Path) -> None:
    case = Case(dkim_domain="mailer.example.net")
    case.spf("_dmarc.example.org", ENFORCED)  # no SPF: DKIM is all there is
    (line,) = by_code(run(case, dns_server, tmp_path), "dmarc-alignment")
    assert "must share the organisational domain example.org" in line


def test_the_organisational_domain_comes_from_the_public_suffix_list(dns_server: Running, tmp_path: Path) -> None:
    assert organisational_domain("news.mail.example.co.uk") == "example.co.uk"
    assert organisational_domain("someone.github.io") == "someone.github.io"
    case = Case(from_address="news@mail.example.co.uk")
    case.spf("mail.example.co.uk", GOOD_SPF).spf("_dmarc.example.co.uk", ENFORCED)
    case.spf("_dmarc.co.uk", "v=DMARC1; p=none")  # a public suffix's record is never the one used
    report = run(case, dns_server, tmp_path)
    assert by_code(report, "dmarc") == ["ok _dmarc.example.co.uk: p=reject"], report.to_text()
    assert ("_dmarc.co.uk", "TXT") not in dns_server.zone.queries


def test_bimi_without_dmarc_enforcement_warns(dns_server: Running, tmp_path: Path) -> None:
    case = Case().spf("example.org", GOOD_SPF).spf("_dmarc.example.org", "v=DMARC1; p=none")
    case.spf("default._bimi.example.org", "v=BIMI1; l=https://example.org/logo.svg")
    (line,) = by_code(run(case, dns_server, tmp_path), "bimi")
    assert line.startswith("warn default._bimi.example.org is published but DMARC does not enforce (p=none")
    assert 'publish: _dmarc.example.org. IN TXT "v=DMARC1; p=quarantine' in line

    enforced = good().spf("default._bimi.example.org", "v=BIMI1; l=https://example.org/logo.svg")
    assert by_code(run(enforced, dns_server, tmp_path), "bimi")[0].startswith("ok")
    assert not by_code(run(good(), dns_server, tmp_path), "bimi")  # none published: nothing to say


def test_a_relay_on_a_private_address_is_a_warning_not_a_guess(dns_server: Running, tmp_path: Path) -> None:
    case = good()
    case.smtp_url = "smtp://127.0.0.1:25"
    (line,) = by_code(run(case, dns_server, tmp_path), "spf")
    assert line.startswith("warn the SMTP relay 127.0.0.1 is at a private address")


def test_check_sender_on_the_command_line(workdir, cli, monkeypatch, dns_server: Running) -> None:  # noqa: ANN001
    from tests.conftest import schedule_toml

    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", [("A", "https://example.com/feed")]))
    monkeypatch.setenv("NEWSLETTER_DNS_SERVERS", dns_server.address)
    dns_server.zone.add("example.com", "TXT", "v=spf1 -all")
    result = cli("check", "city", "--sender", ok=False)  # no issue needed: DNS comes before the first issue
    assert result.exit_code == 1
    assert "no DMARC record at _dmarc.example.com" in result.output
    assert "newsletter dkim keygen --domain example.com" in result.output
    assert "sender checks FAILED:" in result.output


def test_the_preflight_holds_a_send_on_the_sender_checks_when_asked(workdir, feed_server, cli, monkeypatch,  # noqa: ANN001
                                                                   dns_server: Running) -> None:
    from tests.test_cli import setup_newsletter

    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    cli("subscribers", "add", "ann@example.org", "-n", "city")
    monkeypatch.setenv("NEWSLETTER_DNS_SERVERS", dns_server.address)
    from newsletter.cli import common

    assert cli("check", "city").exit_code == 0  # the message itself is fine
    monkeypatch.setenv("NEWSLETTER_PREFLIGHT_SENDER", "1")
    common.settings.cache_clear()
    checked = cli("check", "city", ok=False)
    assert checked.exit_code == 1 and "no SPF record at example.com" in checked.output
    result = cli("send", "city", ok=False)
    assert "preflight failed: the send is held" in result.output
    assert not list((workdir / "outbox").rglob("*.eml"))
