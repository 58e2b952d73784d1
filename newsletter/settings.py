"""Machine choices and secrets, from the environment (never from schedule files): `Settings`.

Kept apart from the schedule files' models (newsletter.config, which needs pydantic) and re-exported there, so a
command that needs only these (`newsletter issue list`) reads them without importing pydantic.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A schedule file or setting is wrong; the message says where."""


# -- NEWSLETTER_FETCH_ALLOW: the outbound guard's exceptions (newsletter.collect.guard) --------------------

ALLOW_ENV = "NEWSLETTER_FETCH_ALLOW"
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def normal_host(host: str) -> str:
    """A host as the allow-list compares it: no brackets, no trailing dot, lowercase."""
    return host.strip().strip("[]").rstrip(".").lower()


class AllowListError(ConfigError):
    """NEWSLETTER_FETCH_ALLOW holds something that is neither a host name nor a network."""


@dataclass(frozen=True)
class Allow:
    """The operator's exceptions: host names (exact, case-insensitive) and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str, *, where: str = ALLOW_ENV) -> Allow:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.rstrip(".")
            if not _HOST.match(name):
                raise AllowListError(
                    f"{where}: {raw.strip()!r} is neither a host name nor a network "
                    "(use e.g. intranet.example,10.1.0.0/16,127.0.0.1/32)"
                )
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Allow:
        return cls.parse((os.environ if env is None else env).get(ALLOW_ENV, ""))

    def allows_host(self, host: str) -> bool:
        return normal_host(host) in self.hosts

    def allows_address(self, ip: _IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass(frozen=True)
class Settings:
    """Machine choices and secrets: from the environment, never from schedule files."""

    database_url: str = "sqlite:///newsletter.db"
    mailer: str = "outbox"
    outbox_dir: Path = Path("outbox")
    schedules_dir: Path = Path("schedules")
    templates_dir: Path = Path("templates")
    base_url: str = "http://localhost:8000"
    max_body: int = 5 * 1024 * 1024  # bytes: the largest request body `serve` reads (NEWSLETTER_MAX_BODY)
    secret_key: str | None = None
    sendgrid_api_key: str | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    smtp_url: str | None = None
    send_rate: float | None = None
    fetch_allow: Allow = field(default_factory=Allow)  # NEWSLETTER_FETCH_ALLOW
    event_retention_days: int = 180  # raw click/open/provider events (NEWSLETTER_EVENT_RETENTION_DAYS)
    # DKIM (newsletter.deliver.dkim): the private key (RSA or Ed25519, PEM), its selector, and the signing domain
    # (d=; unset: each message's From domain).
    dkim_key_file: Path | None = None
    dkim_selector: str = "newsletter"
    dkim_domain: str | None = None
    # The DNS servers the sender checks and the DKIM self-check ask ("IP" or "IP:PORT", comma-separated; unset:
    # the system's resolvers).
    dns_servers: tuple[tuple[str, int], ...] = ()
    preflight_sender: bool = False  # NEWSLETTER_PREFLIGHT_SENDER=1: the preflight checks SPF/DKIM/DMARC too

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return f"Settings(database_url={_redact_url(self.database_url)!r}, mailer={self.mailer!r})"


def _redact_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


redact_url = _redact_url


def _byte_size(name: str, raw: str) -> int:
    match = re.fullmatch(r"\s*(\d{1,12})\s*([KkMm]?)[Bb]?\s*", raw)
    if not match:
        raise ConfigError(f"{name}: {raw!r} is not a size (bytes, or a number with K or M, e.g. 5M)")
    size = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    if size < 1024:
        raise ConfigError(f"{name}: {raw!r} is too small (at least 1K: the editors' forms need it)")
    return size


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    mailer = env.get("NEWSLETTER_MAILER", "outbox")
    if mailer not in ("outbox", "smtp", "sendgrid"):
        raise ConfigError(f"NEWSLETTER_MAILER: {mailer!r} is not one of outbox, smtp, sendgrid")
    rate = env.get("NEWSLETTER_SEND_RATE")
    try:
        send_rate = float(rate) if rate else None
    except ValueError:
        raise ConfigError(f"NEWSLETTER_SEND_RATE: {rate!r} is not a number (messages per second)") from None
    max_body = _byte_size("NEWSLETTER_MAX_BODY", env.get("NEWSLETTER_MAX_BODY") or "5M")
    retention = env.get("NEWSLETTER_EVENT_RETENTION_DAYS") or "180"
    if not retention.strip().isdigit() or not 1 <= int(retention) <= 36500:
        raise ConfigError(f"NEWSLETTER_EVENT_RETENTION_DAYS: {retention!r} is not a number of days (1 to 36500)")
    return Settings(
        database_url=env.get("NEWSLETTER_DATABASE_URL", "sqlite:///newsletter.db"),
        mailer=mailer,
        outbox_dir=Path(env.get("NEWSLETTER_OUTBOX_DIR", "outbox")),
        schedules_dir=Path(env.get("NEWSLETTER_SCHEDULES_DIR", "schedules")),
        templates_dir=Path(env.get("NEWSLETTER_TEMPLATES_DIR", "templates")),
        # Unset: where `newsletter serve` listens by default, on NEWSLETTER_PORT if that is set.
        base_url=(env.get("NEWSLETTER_BASE_URL")
                  or f"http://localhost:{env.get('NEWSLETTER_PORT') or 8000}").rstrip("/"),
        max_body=max_body,
        secret_key=env.get("NEWSLETTER_SECRET_KEY") or None,
        sendgrid_api_key=env.get("SENDGRID_API_KEY") or None,
        sendgrid_api_host=env.get("SENDGRID_API_HOST", "https://api.sendgrid.com").rstrip("/"),
        smtp_url=env.get("NEWSLETTER_SMTP_URL") or None,
        send_rate=send_rate,
        fetch_allow=Allow.from_env(env),  # checked here too, so a typo stops the program at start
        event_retention_days=int(retention),
        dkim_key_file=Path(env["NEWSLETTER_DKIM_KEY_FILE"]) if env.get("NEWSLETTER_DKIM_KEY_FILE") else None,
        dkim_selector=_dns_label("NEWSLETTER_DKIM_SELECTOR", env.get("NEWSLETTER_DKIM_SELECTOR") or "newsletter"),
        dkim_domain=(_dns_label("NEWSLETTER_DKIM_DOMAIN", env["NEWSLETTER_DKIM_DOMAIN"].strip().rstrip(".").lower())
                     if env.get("NEWSLETTER_DKIM_DOMAIN") else None),
        dns_servers=_dns_servers(env.get("NEWSLETTER_DNS_SERVERS", "")),
        preflight_sender=_flag("NEWSLETTER_PREFLIGHT_SENDER", env.get("NEWSLETTER_PREFLIGHT_SENDER", "")),
    )


_DNS_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$", re.I)


def _dns_label(name: str, value: str) -> str:
    if not _DNS_NAME.match(value):
        raise ConfigError(f"{name}: {value!r} is not a DNS name (letters, digits, dashes, dots; e.g. nl2026)")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: {raw!r} is not 1 or 0")


def _dns_servers(raw: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, port = entry, 53
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?|([0-9a-fA-F:]+)", entry)
        if match:
            host = match.group(1) or match.group(3) or match.group(5)
            port = int(match.group(2) or match.group(4) or 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"NEWSLETTER_DNS_SERVERS: {entry!r} is not an address (use 192.0.2.53, "
                              "192.0.2.53:5353 or [2001:db8::53]:53)") from None
        if not 0 < port < 65536:
            raise ConfigError(f"NEWSLETTER_DNS_SERVERS: {entry!r}: port out of range")
        servers.append((host, port))
    return tuple(servers)
