"""Where outbound requests may go: only to public addresses, unless the operator's allow-list says otherwise.

A feed author controls every link in a feed, and a page we fetch controls its redirects, so any of them could
point at the machine itself (127.0.0.1, ::1, `2130706433`, `0x7f.0.0.1`), the private network, or a cloud
metadata service (169.254.169.254). The guard works on the *resolved* addresses, never on how the host was
spelled: a name is resolved once, every address it gave is checked, and the connection goes to a checked
address, so a name that answers a public address to the check and 127.0.0.1 to the connect (DNS rebinding)
cannot get through. It sits in the connection layer of the one fetcher (newsletter.collect.fetch: the HTTP
client's resolver and socket factory), so every hop of a redirect chain passes it too.

NEWSLETTER_FETCH_ALLOW (comma-separated host names and CIDR networks, empty by default) is the operator's
exception list, e.g. `NEWSLETTER_FETCH_ALLOW=intranet.example,10.1.0.0/16` to poll an intranet feed. It is read
from the environment only (parsed by newsletter.config.Allow): nothing in a feed or a schedule file can widen it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from newsletter.config import ALLOW_ENV, Allow, normal_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as strings; raises OSError when it does not resolve.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


class Refused(Exception):
    """The request would go to an address outbound requests may not reach; the message says which and why."""


class Unresolvable(OSError):
    """The host has no address (an OSError, as a resolver's failure is to the HTTP client)."""


def _same_address(name: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(name) == ip
    except ValueError:
        return False


def _plain_address(name: str) -> bool:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return isinstance(ip, ipaddress.IPv6Address) or str(ip) == name


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or int(ip) >> 32 == 0:  # 64:ff9b::a.b.c.d, and ::a.b.c.d (deprecated "compatible")
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("loopback address", "private address"...), or None when it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_ipv4(ip)
        if inner is not None and ip != ipaddress.IPv6Address("::1") and not ip.is_unspecified:
            kind = address_kind(inner)
            return f"{kind} ({inner} inside an IPv6 address)" if kind else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("unique-local", isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7")),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    )
    return next((f"{name} address" for name, hit in checks if hit), None)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (getaddrinfo: /etc/hosts, then DNS), as it would be used to connect."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# The resolver a Guard uses when it is given none. Tests point it at a DNS server of their own on loopback.
default_resolver: Resolver = system_resolver


class Guard:
    """Resolves a host once and returns the addresses that may be connected to, or raises Refused."""

    def __init__(self, allow: Allow | None = None, resolver: Resolver | None = None) -> None:
        self.allow = Allow.from_env() if allow is None else allow
        self._resolver = resolver

    def answer_now(self, host: str, port: int) -> list[str] | None:
        """The checked answer for a host that needs no lookup (an address written out in its usual form), as
        addresses() gives it, without a coroutine or a task; None for a host to resolve. Raises Refused."""
        name = normal_host(host)
        return self._checked(name, [name]) if _plain_address(name) else None

    async def addresses(self, host: str, port: int) -> list[str]:
        name = normal_host(host)
        if _plain_address(name):
            # An address written out in its usual form is its own answer: no lookup (one costs a thread hop).
            # Other spellings (2130706433, 0x7f.1) go to the resolver, which reads them as the OS would.
            return self._checked(name, [name])
        resolver = self._resolver or default_resolver
        try:
            found = await resolver(name, port)
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"cannot resolve {name}: {getattr(exc, 'strerror', None) or exc}") from None
        if not found:
            raise Unresolvable(f"cannot resolve {name}: no addresses")
        return self._checked(name, found)

    def _checked(self, name: str, found: list[str]) -> list[str]:
        """`found`, when every address in it may be connected to (or the operator allows the host), else Refused."""
        if self.allow.allows_host(name):
            return found
        for text in found:
            ip = ipaddress.ip_address(text)
            kind = address_kind(ip)
            if kind and not self.allow.allows_address(ip):
                shown = name if _same_address(name, ip) else f"{name} ({ip})"
                article = "an" if kind[0] in "aeiou" else "a"
                raise Refused(
                    f"refused: {shown} is {article} {kind}; outbound requests go to public addresses "
                    f"only (an operator can allow a host or network with {ALLOW_ENV})"
                )
        return found
