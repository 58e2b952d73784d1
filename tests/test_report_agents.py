"""Who fetched a pixel or a tracked link: machines (Apple MPP, Gmail's prefetch, scanners) apart from readers."""

from __future__ import annotations

import pytest

from newsletter.report.agents import classify

GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.mark.parametrize(("ua", "ip", "method", "after", "name", "machine"), [
    ("Mozilla/5.0", "203.0.113.9", "GET", None, "apple-mpp", True),  # MPP's bare user agent
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", "17.58.1.2", "GET", None, "apple-mpp", True),
    (GMAIL, None, "GET", 5.0, "gmail-prefetch", True),  # fetched seconds after the copy went out
    (GMAIL, None, "GET", 3600.0, "gmail-proxy", False),  # an hour later: someone opened it
    ("Barracuda Sentinel (EE)", None, "GET", None, "scanner", True),
    ("python-requests/2.32", None, "GET", None, "scanner", True),
    ("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36", None, "HEAD", None, "scanner", True),
    ("", None, "GET", None, "scanner", True),
    ("Mozilla/5.0 (Linux; Android 14) Mobile Safari/537.36", "198.51.100.4", "GET", None, "mobile", False),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1", None, "GET", None,
     "mail-client", False),
    ("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36", "2001:db8::1", "GET", None, "browser", False),
])
def test_machines_are_told_apart_from_readers(ua: str, ip: str | None, method: str, after: float | None,
                                              name: str, machine: bool) -> None:
    agent = classify(ua, ip, method=method, seconds_after_send=after)
    assert (agent.name, agent.machine) == (name, machine)
