"""Who fetched a tracked link or the open pixel: a reader's mail client or browser, or a machine.

Machines are counted apart and never as readers: Apple Mail Privacy Protection fetches every image of every
message through Apple's proxies whether or not it is read (its user agent is the bare "Mozilla/5.0", from Apple's
17.0.0.0/8); Gmail's image proxy fetches on open, but also prefetches on arrival, which shows as a fetch within the
first minute after the send; link scanners (mail security gateways, Outlook Safe Links, bots, HTTP libraries)
follow links before anyone clicks them, and announce themselves in the user agent or use HEAD.
This is a classification of what is known, not a guarantee: the report says "machine" only for these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
GMAIL_PREFETCH_SECONDS = 60.0

_SCANNERS = ("bot", "spider", "crawl", "scan", "python", "curl", "wget", "go-http", "java/", "okhttp", "libwww",
             "httpclient", "barracuda", "mimecast", "proofpoint", "symantec", "messagelabs", "trendmicro",
             "forcepoint", "sophos", "fortinet", "cisco", "ironport", "safelinks", "office existence discovery",
             "headless", "phantomjs", "preview", "validator", "monitor", "checker", "facebookexternalhit",
             "slackbot", "discordbot", "whatsapp", "telegrambot")
_MAIL_CLIENTS = ("outlook", "thunderbird", "microsoft office",
                 "airmail", "spark", "superhuman", "mailspring", "k-9", "fairemail", "yahoomailproxy")


@dataclass(frozen=True)
class Agent:
    name: str  # apple-mpp, gmail-proxy, gmail-prefetch, scanner, mobile, mail-client, browser, unknown
    machine: bool


def classify(user_agent: str | None, ip: str | None = None, *, method: str = "GET",
             seconds_after_send: float | None = None) -> Agent:
    ua = (user_agent or "").strip()
    low = ua.lower()
    if method.upper() == "HEAD":
        return Agent("scanner", True)
    if not ua:
        return Agent("scanner", True)  # mail clients and browsers always say who they are
    if ua == "Mozilla/5.0" or _in_apple(ip):
        return Agent("apple-mpp", True)
    if "googleimageproxy" in low:
        if seconds_after_send is not None and 0 <= seconds_after_send < GMAIL_PREFETCH_SECONDS:
            return Agent("gmail-prefetch", True)
        return Agent("gmail-proxy", False)
    if any(word in low for word in _SCANNERS):
        return Agent("scanner", True)
    if any(word in low for word in ("iphone", "ipad", "android", "mobile")):
        return Agent("mobile", False)
    if any(word in low for word in _MAIL_CLIENTS):
        return Agent("mail-client", False)
    if low.startswith("mozilla/"):
        return Agent("browser", False)
    return Agent("unknown", False)


def _in_apple(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address.version == 4 and address in APPLE_NETWORK
