"""A real DNS server of the tests' own on loopback (dnslib, UDP and TCP, a random port) serving a small zone:
TXT, A, AAAA, MX and CNAME records given as a dict. The code under test asks it through dnspython, pointed at
it by NEWSLETTER_DNS_SERVERS; nothing asks the network.

    zone = Zone({"example.org": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"], "MX": ["mail.example.org"]}})
    with serve(zone) as dns: ... dns.address  ->  "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, MX, QTYPE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

Records = dict[str, dict[str, list[str]]]  # name -> type -> values


def _txt(value: str) -> TXT:
    # One TXT record in strings of at most 255 bytes (an RSA DKIM key is longer than one string may be).
    data = value.encode()
    return TXT([data[i:i + 255] for i in range(0, len(data), 255)] or [b""])


_RDATA = {"A": A, "AAAA": AAAA, "MX": MX, "CNAME": CNAME, "TXT": _txt}


@dataclass
class Zone(BaseResolver):
    records: Records = field(default_factory=dict)
    queries: list[tuple[str, str]] = field(default_factory=list)  # (name, type) asked, in order

    def add(self, name: str, rtype: str, value: str) -> Zone:
        self.records.setdefault(name.lower().rstrip("."), {}).setdefault(rtype, []).append(value)
        return self

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        node = self.records.get(name)
        if node is None:
            reply.header.rcode = 3  # NXDOMAIN
            return reply
        for target in node.get("CNAME", []):
            reply.add_answer(RR(request.q.qname, QTYPE.CNAME, rdata=CNAME(target), ttl=60))
            name, node = target.lower().rstrip("."), self.records.get(target.lower().rstrip("."), {})
        for value in node.get(qtype, []):
            rdata = _RDATA[qtype](value)
            reply.add_answer(RR(name + ".", getattr(QTYPE, qtype), rdata=rdata, ttl=60))
        return reply


@dataclass
class Running:
    zone: Zone
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        return (("127.0.0.1", self.port),)


@contextlib.contextmanager
def serve(zone: Zone) -> Iterator[Running]:
    logger = DNSLogger(logf=lambda _line: None)
    for _ in range(50):
        udp = DNSServer(zone, port=0, address="127.0.0.1", logger=logger)
        port = udp.server.server_address[1]
        # TCP on the same port: a reply too big for UDP (an RSA key and more) is asked again there. The port
        # is free for UDP, not necessarily for TCP: then try another.
        try:
            tcp = DNSServer(zone, port=port, address="127.0.0.1", tcp=True, logger=logger)
            break
        except OSError:
            udp.server.server_close()
    else:
        raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
    udp.start_thread()
    tcp.start_thread()
    try:
        yield Running(zone, port)
    finally:
        for server in (udp, tcp):
            server.stop()
            server.server.server_close()
