"""SPF (RFC 7208) as far as the sender checks need it: does a domain's record authorise an address, how many DNS
look-ups does it cost, and which domains does it include.

Written here rather than taken from pyspf, which asks DNS through a process-wide resolver (the sender checks
and their tests point a resolver of their own at chosen servers) and has had no release since 2020. Covered:
ip4, ip6, a, mx, include, exists (without macros), ptr (counted, never matched: RFC 7208 5.5 says not to use
it), redirect, all; the 10-look-up limit of 4.6.4; "none" and "permerror" as 4.5 and 4.6 define them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from newsletter.deliver.dnslookup import DnsError, Lookup

LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: include, a, mx, ptr, exists and redirect count
MX_LIMIT = 10  # 4.6.4: at most ten MX hosts are looked at


@dataclass
class SpfResult:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    lookups: int = 0
    includes: list[str] = field(default_factory=list)  # every include:/redirect= domain met, in order
    record: str | None = None  # the domain's own record
    reason: str = ""
    notes: list[str] = field(default_factory=list)  # things worth a warning (ptr, macros)


class _PermError(Exception):
    pass


QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def spf_records(lookup: Lookup, domain: str) -> list[str]:
    return [r for r in lookup.txt(domain) if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


class _Check:
    def __init__(self, lookup: Lookup, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
        self.lookup, self.ip = lookup, ip
        self.out = SpfResult("none")

    def count(self, term: str) -> None:
        self.out.lookups += 1
        if self.out.lookups > LOOKUP_LIMIT:
            raise _PermError(f"more than {LOOKUP_LIMIT} DNS look-ups (at {term!r}; RFC 7208 4.6.4)")

    def _net_match(self, addresses: list[str], cidr4: int, cidr6: int) -> bool:
        if self.ip is None:
            return False
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version != self.ip.version:
                continue
            prefix = cidr4 if ip.version == 4 else cidr6
            if self.ip in ipaddress.ip_network(f"{ip}/{prefix}", strict=False):
                return True
        return False

    def host(self, domain: str, depth: int) -> str:
        """check_host() for one domain: pass, fail, softfail, neutral, none; raises _PermError."""
        if depth > LOOKUP_LIMIT:
            raise _PermError("include or redirect loop")
        records = spf_records(self.lookup, domain)
        if not records:
            return "none"
        if len(records) > 1:
            raise _PermError(f"{domain} has {len(records)} SPF records (RFC 7208 3.2 allows one)")
        if depth == 0:
            self.out.record = records[0]
        terms = records[0].split()[1:]
        redirect = None
        for term in terms:
            lower = term.lower()
            if lower.startswith("redirect="):
                redirect = term.split("=", 1)[1]
                continue
            if "=" in lower.split(":")[0]:
                continue  # exp= and unknown modifiers: ignored (RFC 7208 6)
            qualifier = "+"
            if lower[0] in QUALIFIERS:
                qualifier, lower, term = lower[0], lower[1:], term[1:]
            if self.mechanism(lower, term, domain, depth):
                return QUALIFIERS[qualifier]
        if redirect:
            self.count("redirect=" + redirect)
            self.out.includes.append(redirect.lower())
            result = self.host(redirect, depth + 1)
            if result == "none":
                raise _PermError(f"redirect={redirect}: no SPF record there")
            return result
        return "neutral"

    def mechanism(self, lower: str, term: str, domain: str, depth: int) -> bool:
        name, _, rest = lower.partition(":")
        name, _, cidr = name.partition("/")
        target, _, cidr_in_target = rest.partition("/")
        if name in ("a", "mx") and cidr_in_target:
            cidr = cidr_in_target
        if "%" in target:
            self.out.notes.append(f"{term}: macros are not checked here")
            if name in ("include", "exists", "a", "mx", "ptr"):
                self.count(term)
            return False
        cidr4, _, cidr6 = cidr.partition("//")
        v4, v6 = int(cidr4 or 32), int(cidr6 or 128)
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(rest, strict=False)
            except ValueError:
                raise _PermError(f"{term!r} is not an address or network") from None
            return self.ip is not None and self.ip.version == network.version and self.ip in network
        if name == "a":
            self.count(term)
            return self._net_match(self.lookup.addresses(target or domain), v4, v6)
        if name == "mx":
            self.count(term)
            hosts = self.lookup.mx(target or domain)[:MX_LIMIT]
            return any(self._net_match(self.lookup.addresses(h), v4, v6) for h in hosts)
        if name == "include":
            if not target:
                raise _PermError("include: without a domain")
            self.count(term)
            self.out.includes.append(target)
            result = self.host(target, depth + 1)
            if result == "none":
                raise _PermError(f"include:{target}: no SPF record there")
            return result == "pass"
        if name == "exists":
            self.count(term)
            return bool(self.lookup.addresses(target))
        if name == "ptr":
            self.count(term)
            self.out.notes.append(f"{term}: ptr is slow and deprecated (RFC 7208 5.5); many receivers skip it")
            return False
        raise _PermError(f"unknown mechanism {term!r}")


def check_host(lookup: Lookup, ip: str | None, domain: str) -> SpfResult:
    """SPF's verdict on mail from `ip` for `domain` (ip None: only walk the record, counting look-ups)."""
    check = _Check(lookup, ipaddress.ip_address(ip) if ip else None)
    try:
        check.out.result = check.host(domain, 0)
    except _PermError as exc:
        check.out.result, check.out.reason = "permerror", str(exc)
    except DnsError as exc:
        check.out.result, check.out.reason = "temperror", str(exc)
    return check.out


def with_term(record: str | None, term: str) -> str:
    """The record with `term` added before its `all` (or its redirect), or a new record that ends in -all."""
    if not record:
        return f"v=spf1 {term} -all"
    parts = record.split()
    for i, part in enumerate(parts):
        if part.lower().lstrip("+-~?") == "all" or part.lower().startswith("redirect="):
            return " ".join([*parts[:i], term, *parts[i:]])
    return " ".join([*parts, term])
