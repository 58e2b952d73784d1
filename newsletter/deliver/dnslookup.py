"""DNS look-ups for the sender's records (SPF, DKIM, DMARC, BIMI) through dnspython.

One small interface, `Lookup`: TXT strings and addresses of a name, with "no such record" (None / empty) kept
apart from "could not ask" (DnsError), because a missing record is a finding and a dead resolver is not.
NEWSLETTER_DNS_SERVERS points it at given servers (tests: a server of their own on loopback); unset, it asks
the system's resolvers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.nameserver
import dns.resolver

TIMEOUT = 5.0  # seconds for one question, all servers and retries included


class DnsError(Exception):
    """The question could not be answered (timeout, SERVFAIL, refused): nothing is known about the record."""


@dataclass
class Lookup:
    servers: Sequence[tuple[str, int]] = ()
    timeout: float = TIMEOUT
    queries: int = 0  # questions asked, for the SPF look-up limit and for tests
    _resolver: dns.resolver.Resolver = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self.servers]
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = self.timeout
        resolver.timeout = min(2.0, self.timeout)
        self._resolver = resolver

    def _answer(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        self.queries += 1
        try:
            return self._resolver.resolve(name.rstrip(".") + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.NoNameservers as exc:
            raise DnsError(f"no DNS server answered for {name} {rdtype} ({exc})") from None
        except dns.exception.Timeout:
            raise DnsError(f"DNS timed out asking for {name} {rdtype}") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"DNS question {name} {rdtype} failed: {exc}") from None

    def txt(self, name: str) -> list[str]:
        """Each TXT record of `name`, its strings joined (as RFC 7208 3.3 and RFC 6376 3.6.2.2 say); [] if none."""
        answer = self._answer(name, "TXT")
        if answer is None:
            return []
        return [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]

    def addresses(self, name: str) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = self._answer(name, rdtype)
            if answer is not None:
                out += [rr.to_text() for rr in answer]
        return out

    def mx(self, name: str) -> list[str]:
        answer = self._answer(name, "MX")
        if answer is None:
            return []
        return [rr.exchange.to_text().rstrip(".") for rr in answer]


def tags(record: str) -> dict[str, str]:
    """A tag=value; list (DKIM, DMARC, BIMI records), names lowercased, values stripped."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), "".join(value.split()) if name.strip().lower() == "p"
                           else value.strip())
    return out
