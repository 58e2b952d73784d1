"""The one fetcher for every outbound request: http(s) with limits, conditional GET, timeouts, a size cap.

Used for feeds and for article pages alike, so both obey the same limits and the same guard
(newsletter.collect.guard): every connection, including each hop of a redirect, goes only to an address the
guard checked. Redirects are followed here, hop by hop (at most MAX_REDIRECTS), each target passing the http(s)
URL check first; the result keeps the chain. file:// URLs and plain paths are read only when the caller says
so (`local_files`, for the sources a schedule file lists: the operator's own disk), never for a link from a feed.

The client is aiohttp, chosen by measurement (benchmarks/collect.py): a quarter of httpx's CPU per request.
Connections are kept across 304s, redirects and error pages, so a site polled for many feeds sees at most
`per_host` connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from newsletter import __version__
from newsletter.collect.guard import Guard, Refused, Unresolvable
from newsletter.collect.urls import web_url

USER_AGENT = f"newsletter/{__version__} (+https://github.com/newsletter-digest/newsletter)"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_DRAIN_BYTES = 64 * 1024  # a body we do not keep is read (to keep the connection) only up to this size


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = DEFAULT_TIMEOUT  # seconds, for the whole response
    max_bytes: int = DEFAULT_MAX_BYTES
    concurrency: int = 64
    per_host: int = 6  # be polite: no site gets more than this many requests at once


@dataclass
class FetchResult:
    url: str
    ok: bool
    status: int | None = None  # HTTP status; 200 for files
    body: bytes = b""
    final_url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    error: str | None = None
    elapsed: float = 0.0
    # Each redirect followed, in order: (status, absolute target URL); final_url is the last target.
    redirects: list[tuple[int, str]] = field(default_factory=list)


class TooLarge(Exception):
    pass


class TooManyRedirects(Exception):
    pass


def is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/"))


def local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(url)


def _read_file(url: str, limits: FetchLimits) -> FetchResult:
    path = local_path(url)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            return FetchResult(url, False, error=f"too large: {size} bytes (limit {limits.max_bytes})")
        return FetchResult(url, True, status=200, body=path.read_bytes(), final_url=url)
    except OSError as exc:
        return FetchResult(url, False, error=f"cannot read {path}: {exc.strerror or exc}")


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class _CheckedResolver(AbstractResolver):
    """aiohttp's resolver that answers only with addresses the guard checked, so connections are pinned to them.

    Every hop's host is checked (`check`) before aiohttp is asked for it, literal addresses included: aiohttp
    does not ask a resolver for a host it takes for an address, so the check cannot live in the resolver alone.
    A host is resolved once per run; aiohttp's own DNS cache is off, so it always asks here.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._checked: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    async def check(self, host: str, port: int, spelled: str | None = None) -> list[str]:
        """Check `host` (as aiohttp will connect to it); `spelled` is the URL's own spelling of the same address
        (yarl writes ::ffff:127.0.0.1 as ::ffff:7f00:1), used in the message only when it is the same address."""
        key = (host, port)
        found = self._checked.get(key)
        if found is None:  # one lookup even when many requests to a new host start at once
            name = spelled if spelled and _same_ip(spelled, host) else host
            found = self._checked[key] = asyncio.ensure_future(self.guard.addresses(name, port))
        return await asyncio.shield(found)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = self._checked.get((host, port))
        if found is None or not found.done() or found.exception() is not None:
            # Fail closed: a host aiohttp spells differently from the URL's was never checked.
            raise Refused(f"refused: {host} was not checked before connecting")
        return [
            {"hostname": host, "host": address, "port": port,
             "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            for address in found.result()
        ]

    async def close(self) -> None:
        for found in self._checked.values():
            found.cancel()


@dataclass
class _Client:
    session: aiohttp.ClientSession
    resolver: _CheckedResolver


def _make_client(limits: FetchLimits, guard: Guard | None = None) -> _Client:
    """A session whose every connection goes to an address `guard` checked (by default: public addresses and
    NEWSLETTER_FETCH_ALLOW).

    Proxy settings from the environment are ignored on purpose (trust_env=False): through a proxy the guard would
    only ever see the proxy's address, never where the request really goes. TLS is aiohttp's default: the
    certificate is checked against the URL's host name (also sent for SNI), whatever address was connected to.
    """
    resolver = _CheckedResolver(guard or Guard())
    connector = aiohttp.TCPConnector(
        resolver=resolver, use_dns_cache=False, limit=limits.concurrency, limit_per_host=limits.per_host,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(limits.timeout, 10.0)),
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
    )
    return _Client(session, resolver)


async def fetch(
    client: _Client,
    url: str,
    limits: FetchLimits,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = "*/*",
    local_files: bool = False,
) -> FetchResult:
    """Fetch one URL. Never raises: failures come back as ok=False with a readable error.

    `local_files`: read file:// URLs and paths too (only for sources listed in a schedule file)."""
    started = time.monotonic()
    if is_local(url) and local_files:
        result = await asyncio.to_thread(_read_file, url, limits)
        result.elapsed = time.monotonic() - started
        return result
    if web_url(url) is None:
        return FetchResult(url, False, error="not an http(s) URL")
    headers = {"Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # wait_for bounds the whole exchange, not only each socket read: a server that trickles bytes
        # forever must not hold a collect run hostage.
        result = await asyncio.wait_for(_get(client, url, headers, limits), timeout=limits.timeout)
    except TimeoutError:
        result = FetchResult(url, False, error=f"timed out after {limits.timeout:g}s")
    except (TooLarge, Refused, Unresolvable) as exc:
        result = FetchResult(url, False, error=str(exc))
    except TooManyRedirects:
        result = FetchResult(url, False, error=f"too many redirects (more than {MAX_REDIRECTS})")
    except (aiohttp.ClientError, ValueError) as exc:
        result = FetchResult(url, False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    result.elapsed = time.monotonic() - started
    return result


async def _get(client: _Client, url: str, headers: dict[str, str], limits: FetchLimits) -> FetchResult:
    current = url
    redirects: list[tuple[int, str]] = []
    for _ in range(MAX_REDIRECTS + 1):
        try:
            result = await _hop(client, url, current, headers, limits, redirects)
        except Refused as exc:  # this hop's address: say so with the chain that led there
            return FetchResult(url, False, final_url=current, redirects=redirects, error=str(exc))
        if result is not None:
            return result
        current = redirects[-1][1]
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


async def _hop(client: _Client, url: str, current: str, headers: dict[str, str], limits: FetchLimits,
               redirects: list[tuple[int, str]]) -> FetchResult | None:
    """One request: the result, or None after appending a redirect to follow to `redirects`."""
    try:
        target_url = yarl.URL(current)
    except ValueError:
        return FetchResult(url, False, final_url=current, redirects=redirects, error="not an http(s) URL")
    if target_url.raw_host is None or target_url.scheme not in ("http", "https"):
        return FetchResult(url, False, final_url=current, redirects=redirects, error="not an http(s) URL")
    await client.resolver.check(target_url.raw_host, target_url.port or 0, urlparse(current).hostname)
    async with client.session.get(target_url, headers=headers, allow_redirects=False) as response:
        location = response.headers.get("Location")
        if response.status in _REDIRECTS and location:
            await _drain(response)
            target = urljoin(str(response.url), location.strip())
            if web_url(target) is None:
                return FetchResult(url, False, status=response.status, final_url=current,
                                   redirects=redirects,
                                   error=f"HTTP {response.status} redirect to a non-http(s) URL")
            redirects.append((response.status, target))
            return None
        return await _read(url, response, limits, redirects)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read a body we do not keep (a 304's, a redirect's, an error page's) when it is small.

    The connection goes back to the pool only once its response was read to the end; closed earlier, it is
    dropped, and the next request to the host pays a new connection (a TLS handshake on https).
    A large body is not worth reading: the connection is dropped instead.
    """
    declared = response.headers.get("Content-Length")
    if declared is not None and (not declared.isdigit() or int(declared) > _DRAIN_BYTES):
        return
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > _DRAIN_BYTES:
            return


async def _read(url: str, response: aiohttp.ClientResponse, limits: FetchLimits,
                redirects: list[tuple[int, str]]) -> FetchResult:
    common = {
        "status": response.status,
        "final_url": str(response.url),
        "content_type": response.headers.get("Content-Type"),
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
        "redirects": redirects,
    }
    if response.status == 304:
        await _drain(response)
        return FetchResult(url, True, not_modified=True, **common)  # type: ignore[arg-type]
    if response.status >= 400:
        await _drain(response)
        return FetchResult(url, False, error=f"HTTP {response.status}", **common)  # type: ignore[arg-type]
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge(f"too large: {declared} bytes (limit {limits.max_bytes})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():  # decoded (gzip, deflate): the cap is on what we keep
        size += len(chunk)
        if size > limits.max_bytes:
            raise TooLarge(f"too large: over {limits.max_bytes} bytes")
        chunks.append(chunk)
    return FetchResult(url, True, body=b"".join(chunks), **common)  # type: ignore[arg-type]


async def fetch_all(
    requests: Sequence[tuple[str, str | None, str | None]],
    limits: FetchLimits,
    *,
    accept: str = "*/*",
    on_done: Callable[[FetchResult], Awaitable[None] | None] | None = None,
    local_files: bool = False,
    guard: Guard | None = None,
) -> list[FetchResult]:
    """Fetch (url, etag, last_modified) triples concurrently, capped overall and per host; keeps order.

    `local_files` lets file paths through (a schedule's own sources); `guard` defaults to Guard()."""
    overall = asyncio.Semaphore(limits.concurrency)
    per_host: dict[str, asyncio.Semaphore] = {}

    client = _make_client(limits, guard)
    async with client.session:

        async def one(url: str, etag: str | None, last_modified: str | None) -> FetchResult:
            host = urlparse(url).netloc
            host_sem = per_host.setdefault(host, asyncio.Semaphore(limits.per_host))
            async with overall, host_sem:
                result = await fetch(client, url, limits, etag=etag, last_modified=last_modified, accept=accept,
                                     local_files=local_files)
            if on_done is not None:
                maybe = on_done(result)
                if asyncio.iscoroutine(maybe):
                    await maybe
            return result

        return list(await asyncio.gather(*(one(*r) for r in requests)))
