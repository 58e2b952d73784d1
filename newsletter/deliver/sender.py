"""The sender checks (`newsletter check SLUG --sender`, and the preflight with NEWSLETTER_PREFLIGHT_SENDER=1):
will Gmail, Yahoo and Outlook.com take mail from this From address, sent the way the settings say?

Since 2024 they ask bulk senders for SPF and DKIM that pass, and a DMARC record that one of them aligns with;
each check here reads the From domain's records through DNS (newsletter.deliver.dnslookup) and says, for every
problem, what to publish, in the record's own syntax:

- SPF: the From domain's record (the envelope sender is the From address for SMTP and the outbox) authorises
  the SMTP relay's public address, or includes sendgrid.net for SendGrid; the 10-look-up limit (spf.py).
- DKIM: the record at SELECTOR._domainkey.DOMAIN matches NEWSLETTER_DKIM_KEY_FILE (or, for SendGrid, its
  domain-authentication records s1/s2 are there).
- DMARC: a record at _dmarc.DOMAIN or at the organisational domain's (RFC 7489 6.6.3, from the Public Suffix
  List bundled with `publicsuffixlist`, never fetched), its policy, and whether DKIM's d= or the SPF domain
  aligns with From (relaxed: same organisational domain; strict: the same name).
- BIMI, when published: worth nothing until DMARC enforces (quarantine or reject at pct=100).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlparse

from publicsuffixlist import PublicSuffixList

from newsletter.config import Newsletter, Settings
from newsletter.deliver.dkim import (
    DkimKeyError,
    domain_of,
    load_key,
    published_key_problem,
    record_name,
    zone_line,
)
from newsletter.deliver.dnslookup import DnsError, Lookup, tags
from newsletter.deliver.spf import LOOKUP_LIMIT, check_host, spf_records, with_term
from newsletter.render.report import Level, Report

SENDGRID_INCLUDE = "sendgrid.net"
ENFORCING = ("quarantine", "reject")


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organisational_domain(domain: str) -> str:
    """The registrable domain (news.example.co.uk -> example.co.uk), as DMARC's alignment uses it."""
    return _psl().privatesuffix(domain.lower().rstrip(".")) or domain.lower().rstrip(".")


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else organisational_domain(a) == organisational_domain(b)


@dataclass
class Dmarc:
    name: str  # where it was found
    record: str
    policy: str  # the one that applies to the From domain (sp= for a subdomain when set)
    adkim: str
    aspf: str
    pct: int


def _txt(name: str, value: str) -> str:
    return zone_line(name, value)


def relay_addresses(settings: Settings, lookup: Lookup) -> tuple[str | None, list[str]]:
    """The SMTP relay's host and its addresses (an IP literal is its own address)."""
    host = urlparse(settings.smtp_url or "").hostname
    if not host:
        return None, []
    try:
        return host, [str(ipaddress.ip_address(host))]
    except ValueError:
        return host, lookup.addresses(host)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global


def check_spf(report: Report, settings: Settings, domain: str, lookup: Lookup) -> str | None:
    """The SPF verdict for the relay ("pass" when authorised); findings added to the report."""
    try:
        records = spf_records(lookup, domain)
    except DnsError as exc:
        report.add("fail", "spf", f"cannot look up {domain}'s SPF record: {exc}")
        return None
    current = records[0] if len(records) == 1 else None
    if settings.mailer == "sendgrid":
        walk = check_host(lookup, None, domain)
        wanted = f"include:{SENDGRID_INCLUDE}"
        if not records:
            report.add("fail", "spf", f"no SPF record at {domain}: receivers cannot tell SendGrid may send for it; "
                                      f"publish: {_txt(domain, with_term(None, wanted).replace('-all', '~all'))}")
        elif walk.result == "permerror":
            report.add("fail", "spf", f"{domain}'s SPF record is broken ({walk.reason}): receivers treat it as "
                                      f"a failure; publish one record, e.g.: {_txt(domain, with_term(None, wanted))}")
        elif SENDGRID_INCLUDE not in [i.lower().rstrip(".") for i in walk.includes]:
            found = ", ".join(f"include:{i}" for i in walk.includes) or "no include"
            report.add("fail", "spf", f"{domain}'s SPF record ({current}) does not include {SENDGRID_INCLUDE} "
                                      f"({found}): SendGrid's servers are not authorised; publish: "
                                      f"{_txt(domain, with_term(current, wanted))}")
        else:
            report.add("ok", "spf", f"{domain}'s SPF record includes {SENDGRID_INCLUDE} ({walk.lookups} of "
                                    f"{LOOKUP_LIMIT} DNS look-ups)")
            _spf_notes(report, walk.notes, walk.record)
            return "pass"
        return None

    host: str | None = None
    addresses: list[str] = []
    if settings.mailer == "smtp":
        try:
            host, addresses = relay_addresses(settings, lookup)
        except DnsError as exc:
            report.add("fail", "spf", f"cannot look up the SMTP relay's address: {exc}")
            return None
    public = [a for a in addresses if _public(a)]
    if not records:
        term = " ".join(f"ip{ipaddress.ip_address(a).version}:{a}" for a in public) or "ip4:YOUR.RELAY.ADDRESS"
        report.add("fail", "spf", f"no SPF record at {domain}: Gmail, Yahoo and Outlook.com reject bulk mail without "
                                  f"SPF; publish: {_txt(domain, with_term(None, term))}")
        return None
    walk = check_host(lookup, None, domain)
    if walk.result == "permerror":
        report.add("fail", "spf", f"{domain}'s SPF record is broken ({walk.reason}): receivers treat it as a "
                                  f"failure; publish a single record within {LOOKUP_LIMIT} look-ups (replace "
                                  "includes by the ip4:/ip6: ranges they list)")
        return None
    if settings.mailer != "smtp":
        report.add("ok", "spf", f"{domain} has an SPF record ({walk.lookups} of {LOOKUP_LIMIT} look-ups); with the "
                                f"{settings.mailer} mailer no relay is checked against it")
        _spf_notes(report, walk.notes, walk.record)
        return None
    if addresses and not public:
        report.add("warn", "spf", f"the SMTP relay {host} is at a private address ({', '.join(addresses)}): it "
                                  "hands the mail on from another, public address, which SPF must authorise; "
                                  "check that address against " + (current or "the record"))
        _spf_notes(report, walk.notes, walk.record)
        return None
    if not addresses:
        report.add("fail", "spf", f"the SMTP relay {host} has no address in DNS: cannot check SPF against it")
        return None
    verdicts = {a: check_host(lookup, a, domain) for a in public}
    bad = {a: v for a, v in verdicts.items() if v.result != "pass"}
    if bad:
        terms = " ".join(f"ip{ipaddress.ip_address(a).version}:{a}" for a in bad)
        said = ", ".join(f"{a}: {v.result}" for a, v in bad.items())
        report.add("fail", "spf", f"{domain}'s SPF record does not authorise the relay {host} ({said}): receivers "
                                  f"see forged mail; publish: {_txt(domain, with_term(current, terms))}")
        return None
    report.add("ok", "spf", f"{domain}'s SPF record authorises the relay {host} ({', '.join(public)}; "
                            f"{walk.lookups} of {LOOKUP_LIMIT} look-ups)")
    _spf_notes(report, walk.notes, walk.record)
    return "pass"


def _spf_notes(report: Report, notes: list[str], record: str | None) -> None:
    for note in notes:
        report.add("warn", "spf", note)
    last = (record or "").split()[-1:] or [""]
    if last[0].lower() in ("+all", "all"):
        report.add("fail", "spf", f"the SPF record ends in {last[0]}: it authorises every server on the internet; "
                                  "end it in ~all or -all")


def check_dkim_record(report: Report, settings: Settings, from_domain: str, lookup: Lookup) -> str | None:
    """The DKIM signing domain (d=) when receivers will be able to verify our signatures."""
    if settings.mailer == "sendgrid" and settings.dkim_key_file is None:
        names = [record_name(s, from_domain) for s in ("s1", "s2")]
        try:
            found = [n for n in names if lookup.txt(n)]
        except DnsError as exc:
            report.add("fail", "dkim", f"cannot look up SendGrid's DKIM records: {exc}")
            return None
        if len(found) == len(names):
            report.add("ok", "dkim", f"SendGrid signs for {from_domain} ({', '.join(names)} are published)")
            return from_domain
        report.add("fail", "dkim", f"no SendGrid DKIM records at {' and '.join(names)}: SendGrid signs as "
                                   f"sendgrid.net, which does not align with {from_domain}; set up domain "
                                   "authentication (Settings > Sender Authentication) and publish the CNAME "
                                   f"records it gives, e.g. {names[0]}. IN CNAME "
                                   "s1.domainkey.uNNNN.wlNNN.sendgrid.net.")
        return None
    domain = settings.dkim_domain or from_domain
    if settings.dkim_key_file is None:
        level: Level = "fail" if settings.mailer == "smtp" else "warn"
        report.add(level, "dkim", "messages go out unsigned (no NEWSLETTER_DKIM_KEY_FILE): Gmail, Yahoo and "
                                  "Outlook.com require DKIM of bulk senders; run `newsletter dkim keygen --domain "
                                  f"{domain}` and publish the record it prints")
        return None
    try:
        key = load_key(settings.dkim_key_file)
    except DkimKeyError as exc:
        report.add("fail", "dkim", f"NEWSLETTER_DKIM_KEY_FILE: {exc}")
        return None
    try:
        mode = settings.dkim_key_file.stat().st_mode
    except OSError:
        mode = 0
    if mode & 0o077:
        report.add("warn", "dkim", f"{settings.dkim_key_file} can be read by other users (mode {mode & 0o777:o}): "
                                   "anyone who reads it can sign mail as you; `chmod 600` it")
    name = record_name(settings.dkim_selector, domain)
    try:
        records = lookup.txt(name)
    except DnsError as exc:
        report.add("fail", "dkim", f"cannot look up {name}: {exc}")
        return None
    problem = published_key_problem(key, records, settings.dkim_selector, domain)
    if problem:
        report.add("fail", "dkim", problem)
        return None
    report.add("ok", "dkim", f"the DKIM record at {name} matches the signing key ({key.algorithm}"
                             f"{f', {key.bits} bits' if key.bits else ''})")
    if key.algorithm == "ed25519":
        report.add("warn", "dkim", "an Ed25519 key alone: some receivers do not verify Ed25519 signatures yet "
                                   "(RFC 8463); an RSA key (`newsletter dkim keygen --type rsa`) works everywhere")
    return domain


def find_dmarc(lookup: Lookup, domain: str) -> tuple[Dmarc | None, str | None]:
    """The DMARC record that applies to `domain`, or why there is none usable."""
    org = organisational_domain(domain)
    for at in dict.fromkeys([domain, org]):
        name = f"_dmarc.{at}"
        records = [r for r in lookup.txt(name) if r.replace(" ", "").upper().startswith("V=DMARC1")]
        if not records:
            continue
        if len(records) > 1:
            return None, f"{name} has {len(records)} DMARC records: receivers ignore them all (RFC 7489 6.6.3)"
        found = tags(records[0])
        policy = found.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            return None, f"{name} has no valid p= (found {policy or 'none'!r}): receivers ignore the record"
        applied = policy if at == domain else (found.get("sp", "").lower() or policy)
        try:
            pct = int(found.get("pct", "100"))
        except ValueError:
            pct = 100
        return Dmarc(name, records[0], applied, found.get("adkim", "r").lower()[:1] or "r",
                     found.get("aspf", "r").lower()[:1] or "r", pct), None
    return None, None


def check_dmarc(report: Report, settings: Settings, from_domain: str, dkim_domain: str | None,
                spf_passed: bool, lookup: Lookup) -> Dmarc | None:
    org = organisational_domain(from_domain)
    suggestion = _txt(f"_dmarc.{org}", f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{org}")
    try:
        dmarc, problem = find_dmarc(lookup, from_domain)
    except DnsError as exc:
        report.add("fail", "dmarc", f"cannot look up the DMARC record: {exc}")
        return None
    if problem:
        report.add("fail", "dmarc", f"{problem}; publish one: {suggestion}")
        return None
    if dmarc is None:
        report.add("fail", "dmarc", f"no DMARC record at _dmarc.{from_domain}" +
                   (f" nor _dmarc.{org}" if org != from_domain else "") +
                   f": Gmail and Yahoo reject bulk mail without one; publish: {suggestion}")
        return None
    if dmarc.policy == "none":
        enforce = dmarc.record.replace("p=none", "p=quarantine") if "p=none" in dmarc.record else \
            f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{org}"
        report.add("warn", "dmarc", f"{dmarc.name}: p=none: receivers only report, spoofed mail from "
                                    f"{from_domain} is still delivered and BIMI is not shown; once the reports show "
                                    f"your mail passing, publish: {_txt(dmarc.name, enforce)}")
    else:
        pct = f", pct={dmarc.pct}" if dmarc.pct != 100 else ""
        report.add("ok", "dmarc", f"{dmarc.name}: p={dmarc.policy}{pct}")
    if dmarc.policy != "none" and dmarc.pct < 100:
        report.add("warn", "dmarc", f"{dmarc.name}: pct={dmarc.pct}: the policy applies to part of the mail only")

    # Alignment: what DMARC compares with From. SPF's domain is the envelope sender's: the From address for SMTP
    # and the outbox; SendGrid's own bounce domain unless domain authentication gives it a subdomain of ours.
    dkim_ok = dkim_domain is not None and aligned(dkim_domain, from_domain, dmarc.adkim)
    spf_domain = from_domain if settings.mailer != "sendgrid" else None
    spf_ok = spf_passed and spf_domain is not None and aligned(spf_domain, from_domain, dmarc.aspf)
    mode = {"r": "relaxed", "s": "strict"}
    if dkim_ok or spf_ok:
        how = " and ".join(
            ([f"DKIM d={dkim_domain} ({mode[dmarc.adkim]})"] if dkim_ok else [])
            + ([f"SPF {spf_domain} ({mode[dmarc.aspf]})"] if spf_ok else []))
        report.add("ok", "dmarc-alignment", f"DMARC passes for From {from_domain}: {how} aligned")
    else:
        why = []
        if dkim_domain is None:
            why.append("no verifiable DKIM signature")
        elif not aligned(dkim_domain, from_domain, dmarc.adkim):
            why.append(f"DKIM d={dkim_domain} is not aligned with {from_domain} (adkim={dmarc.adkim}: "
                       + ("must be the same name" if dmarc.adkim == "s" else "must share the organisational "
                          f"domain {org}") + ")")
        if not spf_passed:
            why.append("SPF does not pass")
        elif spf_domain is None:
            why.append("SendGrid's envelope sender is its own domain")
        elif not aligned(spf_domain, from_domain, dmarc.aspf):
            why.append(f"SPF domain {spf_domain} is not aligned")
        fix = (f"sign as {from_domain} (NEWSLETTER_DKIM_DOMAIN={from_domain}, and its record)"
               if dkim_domain and dmarc.adkim == "s" else
               f"sign with a key under {org} (NEWSLETTER_DKIM_DOMAIN)")
        if dkim_domain and dmarc.adkim == "s" and organisational_domain(dkim_domain) == org:
            fix += f", or relax alignment: {_txt(dmarc.name, dmarc.record.replace('adkim=s', 'adkim=r'))}"
        report.add("fail", "dmarc-alignment", f"DMARC would fail for From {from_domain}: {'; '.join(why)}; {fix}")
    return dmarc


def check_bimi(report: Report, from_domain: str, dmarc: Dmarc | None, lookup: Lookup) -> None:
    org = organisational_domain(from_domain)
    try:
        found = None
        for at in dict.fromkeys([from_domain, org]):
            records = [r for r in lookup.txt(f"default._bimi.{at}") if r.replace(" ", "").upper().startswith("V=BIMI1")]
            if records:
                found = (f"default._bimi.{at}", records[0])
                break
    except DnsError as exc:
        report.add("warn", "bimi", f"cannot look up the BIMI record: {exc}")
        return
    if found is None:
        return  # optional: nothing to say
    name, record = found
    logo = tags(record).get("l", "")
    if not logo.startswith("https://"):
        report.add("warn", "bimi", f"{name}: l= must be an https URL of an SVG Tiny PS logo (found {logo!r})")
    if dmarc is None or dmarc.policy not in ENFORCING or dmarc.pct < 100:
        policy = "no DMARC record" if dmarc is None else f"p={dmarc.policy}, pct={dmarc.pct}"
        enforce = f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{org}"
        report.add("warn", "bimi", f"{name} is published but DMARC does not enforce ({policy}): mailbox providers "
                                   f"show no logo until it does; publish: {_txt(f'_dmarc.{org}', enforce)}")
    else:
        report.add("ok", "bimi", f"{name}: logo {logo}, DMARC enforces (p={dmarc.policy})")


def check_sender(nl: Newsletter, settings: Settings, lookup: Lookup | None = None) -> Report:
    """SPF, DKIM, DMARC and BIMI for the newsletter's From domain, sent the way the settings say."""
    lookup = lookup or Lookup(settings.dns_servers)
    report = Report(name="sender checks")
    from_domain = domain_of(nl.from_address)
    spf = check_spf(report, settings, from_domain, lookup)
    dkim_domain = check_dkim_record(report, settings, from_domain, lookup)
    dmarc = check_dmarc(report, settings, from_domain, dkim_domain, spf == "pass", lookup)
    check_bimi(report, from_domain, dmarc, lookup)
    return report
