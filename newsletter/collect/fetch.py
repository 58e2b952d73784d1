"""The one fetcher for every outbound request: http(s) with limits, conditional GET, timeouts, a size cap.

Used for feeds and for article pages alike, so both obey the same limits and the same guard
(newsletter.collect.guard): every connection, including each hop of a redirect, goes only to an address the
guard checked. Redirects are followed here, hop by hop (at most MAX_REDIRECTS), each target passing the http(s)
URL check first; the result keeps the chain. file:// URLs and plain paths are read only when the caller says
so (`local_files`, for the sources a schedule file lists: the operator's own disk), never for a link from a feed.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import httpcore
import httpx

from newsletter import __version__
from newsletter.collect.guard import Guard, GuardedBackend, Refused
from newsletter.urls import web_url

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


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process: loading the CA bundle costs ~18 ms, too much to pay on every run."""
    return httpx.create_ssl_context(trust_env=False)


Origin = tuple[bytes, bytes, int]  # (scheme, host, port), as httpx's request URL gives them


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that tells the transport when it is closed, so the host's pool is known to be idle."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._release is not None:
                release, self._release = self._release, None
                release()


class _GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, one connection pool per host, each pool's network layer the guard's.

    A pool per host rather than one for all: httpcore's pool looks at every connection it holds on each
    request and on each response closed, which with 64 connections costs more than reconnecting; a host's
    pool holds at most `per_host`. Pools of hosts with nothing in flight are kept (their connections alive)
    up to IDLE_HOSTS, the least recently used closed first, so a run over thousands of hosts keeps a bounded
    number of sockets open.
    """

    IDLE_HOSTS = 32

    def __init__(self, guard: Guard, limits: FetchLimits) -> None:
        self._backend = GuardedBackend(guard)
        self._limits = limits
        self._pools: dict[Origin, httpx.AsyncHTTPTransport] = {}
        self._active: dict[Origin, int] = {}
        self._idle: OrderedDict[Origin, None] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _pool(self, origin: Origin) -> httpx.AsyncHTTPTransport:
        pool = self._pools.get(origin)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=_ssl_context(), trust_env=False)
            # httpx builds its pool without a way to pass a network backend: build the same pool with ours.
            pool._pool = httpcore.AsyncConnectionPool(
                ssl_context=_ssl_context(),
                max_connections=self._limits.per_host,
                max_keepalive_connections=self._limits.per_host,
                network_backend=self._backend,
            )
            self._pools[origin] = pool
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.raw_scheme, request.url.raw_host, request.url.port or 0)
        pool = self._pool(origin)
        self._idle.pop(origin, None)
        self._active[origin] = self._active.get(origin, 0) + 1
        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            self._release(origin)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, lambda: self._release(origin))
        return response

    def _release(self, origin: Origin) -> None:
        self._active[origin] -= 1
        if self._active[origin]:
            return
        del self._active[origin]
        self._idle[origin] = None
        while len(self._idle) > self.IDLE_HOSTS:
            oldest, _ = self._idle.popitem(last=False)
            task = asyncio.get_running_loop().create_task(self._pools.pop(oldest).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        self._idle.clear()
        for pool in pools:
            await pool.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def make_client(limits: FetchLimits, guard: Guard | None = None) -> httpx.AsyncClient:
    """A client whose every connection passes `guard` (by default: public addresses and NEWSLETTER_FETCH_ALLOW).

    Proxy settings from the environment are ignored on purpose: through a proxy the guard would only ever
    see the proxy's address, never where the request really goes.
    """
    return httpx.AsyncClient(
        transport=_GuardedTransport(guard or Guard(), limits),
        timeout=httpx.Timeout(limits.timeout, connect=min(limits.timeout, 10.0)),
        follow_redirects=False,  # followed in _get, each hop checked
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
    )


async def fetch(
    client: httpx.AsyncClient,
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
    except (TooLarge, Refused) as exc:
        result = FetchResult(url, False, error=str(exc))
    except httpx.TimeoutException:
        result = FetchResult(url, False, error=f"timed out after {limits.timeout:g}s")
    except httpx.TooManyRedirects:
        result = FetchResult(url, False, error=f"too many redirects (more than {MAX_REDIRECTS})")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        result = FetchResult(url, False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    result.elapsed = time.monotonic() - started
    return result


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str], limits: FetchLimits) -> FetchResult:
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
    raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


async def _hop(client: httpx.AsyncClient, url: str, current: str, headers: dict[str, str], limits: FetchLimits,
               redirects: list[tuple[int, str]]) -> FetchResult | None:
    """One request: the result, or None after appending a redirect to follow to `redirects`."""
    request = client.build_request("GET", current, headers=headers)
    try:
        response = await client.send(request, stream=True)
    except httpx.InvalidURL:  # httpx parses a redirect's Location even when not following it
        return FetchResult(url, False, final_url=current, redirects=redirects,
                           error="redirect to a non-http(s) URL")
    try:
        location = response.headers.get("location")
        if response.status_code in _REDIRECTS and location:
            await _drain(response)
            target = urljoin(str(response.url), location.strip())
            if web_url(target) is None:
                return FetchResult(url, False, status=response.status_code, final_url=current,
                                   redirects=redirects,
                                   error=f"HTTP {response.status_code} redirect to a non-http(s) URL")
            redirects.append((response.status_code, target))
            return None
        return await _read(url, response, limits, redirects)
    finally:
        await response.aclose()


async def _drain(response: httpx.Response) -> None:
    """Read a body we do not keep (a 304's, a redirect's, an error page's) when it is small.

    The connection goes back to the pool only once its response was read to the end; closed earlier, it is
    dropped, and the next request to the host pays a new connection (a TLS handshake on https).
    A large body is not worth reading: the connection is dropped instead.
    """
    declared = response.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _DRAIN_BYTES):
        return
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > _DRAIN_BYTES:
            return


async def _read(url: str, response: httpx.Response, limits: FetchLimits,
                redirects: list[tuple[int, str]]) -> FetchResult:
    common = {
        "status": response.status_code,
        "final_url": str(response.url),
        "content_type": response.headers.get("content-type"),
        "etag": response.headers.get("etag"),
        "last_modified": response.headers.get("last-modified"),
        "redirects": redirects,
    }
    if response.status_code == 304:
        await _drain(response)
        return FetchResult(url, True, not_modified=True, **common)
    if response.status_code >= 400:
        await _drain(response)
        return FetchResult(url, False, error=f"HTTP {response.status_code}", **common)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge(f"too large: {declared} bytes (limit {limits.max_bytes})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
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
            async with overall, host_sem:
                result = await fetch(client, url, limits, etag=etag, last_modified=last_modified, accept=accept,
                                     local_files=local_files)
            if on_done is not None:
                maybe = on_done(result)
                if asyncio.iscoroutine(maybe):
                    await maybe
            return result

        return list(await asyncio.gather(*(one(*r) for r in requests)))
