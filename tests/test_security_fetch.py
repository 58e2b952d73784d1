"""Issue 12, hole 1 (SSRF): a feed's links, and any redirect, never make the fetcher reach inside.

The guard is tested with NEWSLETTER_FETCH_ALLOW unset (or allowing only 127.0.0.2, the stand-in for "the public
internet"); "inside" is a server on 127.0.0.1 and ::1 whose page would make a fine summary if it were ever read.
Names are resolved by a real DNS server of the test's own (tests/security_servers.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from newsletter.collect import guard
from newsletter.collect.fetch import FetchLimits, FetchResult, fetch_all
from newsletter.config import Allow, AllowListError, ConfigError, settings_from_env
from tests.conftest import rss, schedule_toml
from tests.security_servers import LoopbackDNS, Page, PageServer

SECRET = "SECRETMARKER"
SECRET_PAGE = (
    "<html><head><title>Internal admin</title></head><body><article><h1>Internal admin</h1>"
    + "".join(
        f"<p>The {SECRET} database password for the internal cluster number {i} is hunter{i} and the operators "
        "keep it in this page so that the monitoring scripts can read it every few minutes of the day.</p>"
        for i in range(6)
    )
    + "</article></body></html>"
).encode()
PUBLIC_PAGE = (
    "<html><body><article>"
    + "".join(
        f"<p>Public story paragraph {i}: the harbour council met on Tuesday and agreed to rebuild the old "
        "bridge in timber, after three years of argument among residents about the cost of steel.</p>"
        for i in range(6)
    )
    + "</article></body></html>"
).encode()
LIMITS = FetchLimits(timeout=5.0)


@pytest.fixture(autouse=True)
def _guard_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_FETCH_ALLOW", raising=False)


@pytest.fixture
def inside() -> Iterator[PageServer]:
    server = PageServer("127.0.0.1", pages={"/secret": Page(SECRET_PAGE), "/feed": Page(rss("Inside", [
        {"guid": "s1", "title": f"{SECRET} feed item", "link": "https://inside.example/s1", "body": SECRET}
    ]), content_type="application/rss+xml")}).start()
    yield server
    server.stop()


@pytest.fixture
def inside6() -> Iterator[PageServer]:
    server = PageServer("::1", pages={"/secret": Page(SECRET_PAGE)}).start()
    yield server
    server.stop()


@pytest.fixture
def public(inside: PageServer) -> Iterator[PageServer]:
    """'The internet' on 127.0.0.2, on the same port as `inside` so one name can point at either."""
    server = PageServer("127.0.0.2", inside.port, pages={"/page": Page(PUBLIC_PAGE)}).start()
    yield server
    server.stop()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackDNS]:
    server = LoopbackDNS({
        "news.public.example": ["127.0.0.2"],
        "inside.public.example": ["127.0.0.1"],
        "rebind.public.example": ["127.0.0.2", "127.0.0.1"],
    }).start()
    monkeypatch.setattr(guard, "default_resolver", server.resolver(guard.system_resolver))
    yield server
    server.stop()


def fetch(*urls: str) -> list[FetchResult]:
    return asyncio.run(fetch_all([(u, None, None) for u in urls], LIMITS))


def internal_urls(inside: PageServer, inside6: PageServer) -> list[str]:
    p = inside.port
    return [
        f"http://127.0.0.1:{p}/secret",
        f"http://[::1]:{inside6.port}/secret",
        f"http://localhost:{p}/secret",
        "http://169.254.169.254/latest/meta-data/",
        f"http://2130706433:{p}/secret",
        f"http://0x7f.0.0.1:{p}/secret",
        f"http://017700000001:{p}/secret",
        f"http://127.1:{p}/secret",
        f"http://[::ffff:127.0.0.1]:{p}/secret",
        f"http://0.0.0.0:{p}/secret",
        f"http://inside.public.example:{p}/secret",  # a public-looking name that resolves inside
        "http://10.0.0.1/", "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
        "http://[fd00::1]/", "http://[fe80::1]/", "http://224.0.0.1/", "http://240.0.0.1/",
    ]


def test_fetcher_refuses_every_internal_address(inside: PageServer, inside6: PageServer, dns: LoopbackDNS) -> None:
    urls = internal_urls(inside, inside6)
    results = fetch(*urls)
    for url, result in zip(urls, results, strict=True):
        assert not result.ok and result.error and result.error.startswith("refused: "), (url, result.error)
        assert "NEWSLETTER_FETCH_ALLOW" in result.error
    assert inside.hits == [] and inside6.hits == []
    by_url = dict(zip(urls, results, strict=True))
    assert "is a loopback address" in (by_url[f"http://2130706433:{inside.port}/secret"].error or "")
    assert "169.254.169.254 is a link-local address" in (by_url["http://169.254.169.254/latest/meta-data/"].error
                                                         or "")
    assert "inside.public.example (127.0.0.1) is a loopback" in (
        by_url[f"http://inside.public.example:{inside.port}/secret"].error or "")
    assert "carrier-grade NAT" in (by_url["http://100.64.0.1/"].error or "")
    assert by_url[f"http://[::ffff:127.0.0.1]:{inside.port}/secret"].error.startswith(
        "refused: ::ffff:127.0.0.1 is a loopback address (127.0.0.1 inside an IPv6 address)")


def test_an_address_in_the_url_is_answered_at_once_with_the_check_a_lookup_would_get() -> None:
    async def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError(f"looked up {host}")

    allowed = guard.Guard(Allow.parse("127.0.0.2/32"), resolver=no_lookup)
    assert allowed.answer_now("127.0.0.2", 80) == ["127.0.0.2"] == asyncio.run(allowed.addresses("127.0.0.2", 80))
    assert allowed.answer_now("news.public.example", 80) is None  # a name: resolved, by addresses()
    assert allowed.answer_now("2130706433", 80) is None  # another spelling: read by the resolver as the OS would
    for host in ("127.0.0.1", "::1", "169.254.169.254"):
        with pytest.raises(guard.Refused) as now:
            allowed.answer_now(host, 80)
        with pytest.raises(guard.Refused) as later:
            asyncio.run(allowed.addresses(host, 80))
        assert str(now.value) == str(later.value) and str(now.value).startswith(f"refused: {host} is a")


def test_a_redirect_to_inside_is_refused_at_that_hop(
    monkeypatch: pytest.MonkeyPatch, inside: PageServer, public: PageServer, dns: LoopbackDNS
) -> None:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.2/32")
    p = inside.port
    targets = [f"http://127.0.0.1:{p}/secret", f"http://localhost:{p}/secret", f"http://2130706433:{p}/secret",
               f"http://inside.public.example:{p}/secret", "http://169.254.169.254/latest/meta-data/"]
    for i, target in enumerate(targets):
        public.pages[f"/go{i}"] = Page(b"", 302, location=target)
    results = fetch(*(f"http://news.public.example:{p}/go{i}" for i in range(len(targets))))
    for target, result in zip(targets, results, strict=True):
        assert not result.ok and (result.error or "").startswith("refused: "), (target, result.error)
        assert result.redirects == [(302, target)]
    assert inside.hits == []


def test_a_name_that_rebinds_to_loopback_is_never_connected_to_loopback(
    monkeypatch: pytest.MonkeyPatch, inside: PageServer, public: PageServer, dns: LoopbackDNS
) -> None:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.2/32")
    inside.pages["/page"] = Page(SECRET_PAGE)
    url = f"http://rebind.public.example:{inside.port}/page"
    # First answer 127.0.0.2 (allowed): the check and the connection use that one answer.
    [first] = fetch(url)
    assert first.ok and first.body == PUBLIC_PAGE
    assert dns.queries.count("rebind.public.example") == 1  # resolved once: no second lookup to rebind
    # Every later answer is 127.0.0.1: refused, never connected.
    [second] = fetch(url)
    assert not second.ok and (second.error or "").startswith("refused: rebind.public.example (127.0.0.1)")
    assert inside.hits == [] and public.hits == ["/page"]


def test_redirects_are_followed_by_hand_recorded_and_capped(
    monkeypatch: pytest.MonkeyPatch, public: PageServer, dns: LoopbackDNS
) -> None:
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.2/32")
    base = f"http://news.public.example:{public.port}"
    public.pages["/old"] = Page(b"", 301, location="/middle")
    public.pages["/middle"] = Page(b"", 308, location=f"{base}/page")
    for i in range(7):
        public.pages[f"/loop{i}"] = Page(b"", 302, location=f"/loop{i + 1}")
    public.pages["/js"] = Page(b"", 302, location="javascript:alert(1)")
    public.pages["/data"] = Page(b"", 307, location="data:text/html,hello")
    public.pages["/file"] = Page(b"", 302, location="file:///etc/passwd")
    moved, looping, script, data, file = fetch(*(f"{base}{p}" for p in ("/old", "/loop0", "/js", "/data", "/file")))
    assert moved.ok and moved.body == PUBLIC_PAGE
    assert moved.redirects == [(301, f"{base}/middle"), (308, f"{base}/page")]
    assert moved.final_url == f"{base}/page" and moved.url == f"{base}/old"
    assert not looping.ok and looping.error == "too many redirects (more than 5)"
    for refused in (script, data, file):  # httpx cannot even parse some of these; either way, not followed
        assert not refused.ok and (refused.error or "").endswith("redirect to a non-http(s) URL")
    assert file.error == "HTTP 302 redirect to a non-http(s) URL"


def test_the_operator_allow_list_opens_exactly_what_it_names(
    monkeypatch: pytest.MonkeyPatch, inside: PageServer
) -> None:
    url = f"http://localhost:{inside.port}/secret"
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "localhost")
    [by_name] = fetch(url)
    assert by_name.ok and by_name.body == SECRET_PAGE
    [other_spelling] = fetch(f"http://127.0.0.1:{inside.port}/secret")  # a host entry is that name only
    assert not other_spelling.ok and (other_spelling.error or "").startswith("refused: ")
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", " 10.0.0.0/8 , 127.0.0.1/32")
    [by_network] = fetch(f"http://127.0.0.1:{inside.port}/secret")
    assert by_network.ok
    with pytest.raises(AllowListError, match=r"NEWSLETTER_FETCH_ALLOW: 'not a host!' is neither"):
        Allow.parse("intranet.example, not a host!")
    with pytest.raises(ConfigError, match="NEWSLETTER_FETCH_ALLOW"):  # checked when the program starts, too
        settings_from_env({"NEWSLETTER_FETCH_ALLOW": "http://intranet.example/"})
    assert settings_from_env({}).fetch_allow == Allow()  # nothing is allowed unless the operator says so


def test_local_files_are_read_only_for_a_schedules_own_sources(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    [as_link] = fetch(secret.as_uri())
    assert not as_link.ok and as_link.error == "not an http(s) URL"
    [as_source] = asyncio.run(fetch_all([(secret.as_uri(), None, None)], LIMITS, local_files=True))
    assert as_source.ok and as_source.body == SECRET.encode()


def test_collect_and_build_never_bring_an_inside_page_into_the_issue(
    workdir, cli, monkeypatch: pytest.MonkeyPatch, inside: PageServer, inside6: PageServer, public: PageServer,
    dns: LoopbackDNS,
) -> None:
    """The attack as it worked: short feed items whose links point inside; build fetches links for text."""
    monkeypatch.setenv("NEWSLETTER_FETCH_ALLOW", "127.0.0.2/32")
    p = inside.port
    public.pages["/go"] = Page(b"", 302, location=f"http://127.0.0.1:{p}/secret")
    public.pages["/feed-moved"] = Page(b"", 302, location=f"http://127.0.0.1:{p}/feed")
    links = internal_urls(inside, inside6)[:11] + [f"http://news.public.example:{p}/go"]
    feed = workdir / "attack.xml"
    feed.write_bytes(rss("Attack", [
        {"guid": f"a{i}", "title": f"Story {i}", "link": link, "body": "<p>Short teaser.</p>", "hours_ago": 1 + i}
        for i, link in enumerate(links)
    ]))
    (workdir / "schedules" / "town.toml").write_text(schedule_toml(
        "town",
        [("Attack", str(feed)), ("Moved", f"http://news.public.example:{p}/feed-moved")],
        "[digest]\nfetch_articles_under_words = 150\nmax_items = 20\nmax_per_source = 20\n",
    ))
    out = cli("collect", ok=False).output
    assert f"{len(links)} new items from 2 sources; 1 failed" in out
    assert "refused: 127.0.0.1 is a loopback" in " ".join(out.split()).replace("│ ", "")  # the moved feed
    built = cli("build", "town").output
    assert "Built issue #1" in built
    issue = cli("issue", "show", "1", "--format", "json").output
    assert SECRET not in issue and "hunter" not in issue
    assert inside.hits == [] and inside6.hits == []
    assert len(json.loads(issue)["items"]) == len(links)
    assert " ".join(built.split()).count("article: fetch failed: refused: ") == len(links), built
    assert socket.gethostbyname("localhost") == "127.0.0.1"  # the localhost case above meant loopback
