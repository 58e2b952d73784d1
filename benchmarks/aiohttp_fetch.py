"""The collector's fetcher as it was before pycurl (aiohttp, the guard as its resolver and socket factory).

Kept only so benchmarks/collect.py can measure it beside the fetcher in use, in the same run: the choice of
HTTP client was made by these numbers and should stay checkable. Not used by the program.

How the guard sat in it:
- a host name is resolved by the connector's resolver, which is the guard (resolve once, check every address,
  hand back only checked addresses; aiohttp's DNS cache is off, so nothing is reused without the check). aiohttp
  connects to those addresses (happy eyeballs over that list only) and starts TLS with the URL's host name, so
  certificate checks are unchanged;
- a literal address never reaches a resolver in aiohttp, so each hop checks it here before the request;
- and every socket is made by `_GuardedConnector._socket`, which refuses an address the guard did not hand out:
  whatever path aiohttp takes, it cannot connect anywhere unchecked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlparse

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from newsletter.collect.fetch import (
    MAX_REDIRECTS,
    USER_AGENT,
    FetchLimits,
    FetchResult,
    TooLarge,
    _read_file,
    is_local,
)
from newsletter.collect.guard import Guard, IPAddress, Refused
from newsletter.urls import web_url

_REDIRECTS = (301, 302, 303, 307, 308)
_DRAIN_BYTES = 64 * 1024  # a body we do not keep is read (to keep the connection) only up to this size


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process: loading the CA bundle costs ~18 ms, too much to pay on every run."""
    return ssl.create_default_context()


def _looks_like_address(host: str) -> bool:
    """aiohttp's own test for a host it connects to without asking the resolver (helpers.is_ip_address)."""
    return ":" in host or host.replace(".", "").isdigit()


class _GuardResolver(AbstractResolver):
    """The connector's resolver: the guard's answer, every address checked, each one noted as approved."""

    def __init__(self, guard: Guard, approved: set[IPAddress]) -> None:
        self._guard = guard
        self._approved = approved

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        addresses = await self._guard.addresses(host, port)
        results: list[ResolveResult] = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            self._approved.add(ip)
            results.append({
                "hostname": host, "host": text, "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET, "proto": 0,
                # numeric: aiohttp must not look the address up again
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            })
        return results

    async def close(self) -> None:
        pass


class _GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector with the guard as its resolver and its socket factory, and a bound on idle hosts.

    aiohttp keeps every idle keep-alive connection until its timeout, whatever the number of hosts; a run over
    thousands of hosts would hold thousands of sockets. Hosts with idle connections are kept up to IDLE_HOSTS,
    the least recently used closed first (this reaches into the connector's pool, `_release` and `_conns`:
    aiohttp has no public hook for it; tests/test_fetch_connections.py fails loudly if that ever changes).
    """

    IDLE_HOSTS = 32

    def __init__(self, guard: Guard, limits: FetchLimits) -> None:
        self.guard = guard
        self.approved: set[IPAddress] = set()
        self._literals: set[str] = set()
        self._recent: OrderedDict[Any, None] = OrderedDict()
        super().__init__(
            resolver=_GuardResolver(guard, self.approved),
            use_dns_cache=False,  # every connection asks the guard; a cached answer would skip the check
            limit=limits.concurrency,
            limit_per_host=limits.per_host,
            ssl=_ssl_context(),
            socket_factory=self._socket,
        )

    def _socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, address = addr_info
        if ipaddress.ip_address(address[0]) not in self.approved:  # never happens unless aiohttp changes
            raise Refused(f"refused: {address[0]} was not checked by the guard")
        return socket.socket(family=family, type=type_, proto=proto)

    async def approve_literal(self, host: str, port: int) -> None:
        """Check an address written in the URL (aiohttp connects to it without a resolver).

        Once per address and run: an address is its own answer, and the allow-list does not change in a run."""
        if host in self._literals:
            return
        for text in await self.guard.addresses(host, port):
            self.approved.add(ipaddress.ip_address(text))
        self._literals.add(host)

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        self._recent.pop(key, None)
        self._recent[key] = None
        conns = self._conns
        while len(conns) > self.IDLE_HOSTS and self._recent:
            oldest, _ = self._recent.popitem(last=False)
            for idle, _since in conns.pop(oldest, ()):
                idle.close()


def make_client(limits: FetchLimits, guard: Guard | None = None) -> aiohttp.ClientSession:
    """A client whose every connection passes `guard` (by default: public addresses and NEWSLETTER_FETCH_ALLOW).

    Proxy settings from the environment are ignored on purpose (trust_env=False): through a proxy the guard
    would only ever see the proxy's address, never where the request really goes. Cookies are not kept: a
    feed's site has no session with us, and one site's cookie must not follow a redirect to another.
    """
    return aiohttp.ClientSession(
        connector=_GuardedConnector(guard or Guard(), limits),
        # Reads are bounded by fetch()'s timeout over the whole exchange; a timer per read on top would only cost.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(limits.timeout, 10.0)),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        auto_decompress=True,  # bounded: aiohttp inflates at most a read buffer's worth per step
    )


class _TooManyRedirects(Exception):
    pass


async def fetch(
    client: aiohttp.ClientSession,
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
    if local_files and is_local(url):
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
        # The timeout bounds the whole exchange, not only each socket read: a server that trickles bytes
        # forever must not hold a collect run hostage. (asyncio.timeout, not wait_for: no task per request.)
        async with asyncio.timeout(limits.timeout):
            result = await _get(client, url, headers, limits)
    except TimeoutError:  # aiohttp's own timeouts (ServerTimeoutError...) are TimeoutErrors too
        result = FetchResult(url, False, error=f"timed out after {limits.timeout:g}s")
    except (TooLarge, Refused) as exc:
        result = FetchResult(url, False, error=str(exc))
    except _TooManyRedirects:
        result = FetchResult(url, False, error=f"too many redirects (more than {MAX_REDIRECTS})")
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL yarl cannot take
        result = FetchResult(url, False, error=_describe(exc))
    result.elapsed = time.monotonic() - started
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):  # its message repeats the host; the cause says why
        cause = exc.os_error
        return f"{type(exc).__name__}: {exc.host}:{exc.port}: {cause.strerror or cause}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _get(client: aiohttp.ClientSession, url: str, headers: dict[str, str], limits: FetchLimits
               ) -> FetchResult:
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
    raise _TooManyRedirects


async def _hop(client: aiohttp.ClientSession, url: str, current: str, headers: dict[str, str],
               limits: FetchLimits, redirects: list[tuple[int, str]]) -> FetchResult | None:
    """One request: the result, or None after appending a redirect to follow to `redirects`."""
    target_url = URL(current)  # parsed once, by the parser aiohttp itself uses: the host checked is the one used
    host = target_url.raw_host or ""
    if _looks_like_address(host):
        connector = client.connector
        assert isinstance(connector, _GuardedConnector)
        # Checked as written (yarl rewrites ::ffff:127.0.0.1 as ::ffff:7f00:1; the message should show the
        # URL's spelling). Should the two parsers ever disagree on the host, the socket factory still refuses
        # an address this did not approve.
        await connector.approve_literal(urlparse(current).hostname or host, target_url.port or 0)
    async with client.get(target_url, headers=headers, allow_redirects=False) as response:
        location = response.headers.get("location")
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

    The connection goes back to the pool only once its response was read to the end; released earlier, it is
    closed, and the next request to the host pays a new connection (a TLS handshake on https).
    A large body is not worth reading: the connection is dropped instead.
    """
    declared = response.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _DRAIN_BYTES):
        return
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > _DRAIN_BYTES:
            return


async def _read(url: str, response: aiohttp.ClientResponse, limits: FetchLimits,
                redirects: list[tuple[int, str]]) -> FetchResult:
    common: dict[str, Any] = {
        "status": response.status,
        "final_url": str(response.url),
        "content_type": response.headers.get("content-type"),
        "etag": response.headers.get("etag"),
        "last_modified": response.headers.get("last-modified"),
        "redirects": redirects,
    }
    if response.status == 304:
        await _drain(response)
        return FetchResult(url, True, not_modified=True, **common)
    if response.status >= 400:
        await _drain(response)
        return FetchResult(url, False, error=f"HTTP {response.status}", **common)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge(f"too large: {declared} bytes (limit {limits.max_bytes})")
    chunks: list[bytes] = []
    size = 0
    # Decompressed bytes, counted as they arrive (aiohttp inflates a bounded amount per step, so a small
    # compressed bomb never becomes a large buffer before this check sees it).
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limits.max_bytes:
            raise TooLarge(f"too large: over {limits.max_bytes} bytes")
        chunks.append(chunk)
    return FetchResult(url, True, body=b"".join(chunks), **common)


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

    async with make_client(limits, guard) as client:

        async def one(url: str, etag: str | None, last_modified: str | None) -> FetchResult:
            host = urlparse(url).netloc
            host_sem = per_host.setdefault(host, asyncio.Semaphore(limits.per_host))
            # The host's turn first, then an overall slot: a request waiting for its host must not hold one
            # of the `concurrency` slots meanwhile (it did, and a run's first hosts kept the others waiting).
            async with host_sem, overall:
                result = await fetch(client, url, limits, etag=etag, last_modified=last_modified, accept=accept,
                                     local_files=local_files)
            if on_done is not None:
                maybe = on_done(result)
                if asyncio.iscoroutine(maybe):
                    await maybe
            return result

        return list(await asyncio.gather(*(one(*r) for r in requests)))
