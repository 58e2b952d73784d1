"""The collector's fetcher as it was before aiohttp (httpx over httpcore, the guard as httpcore's network layer).

Kept only so benchmarks/collect.py can measure it beside the fetcher in use, in the same run: the choice of
HTTP client was made by these numbers and should stay checkable. Not used by the program.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from urllib.parse import urljoin, urlparse

import httpcore
import httpx

from newsletter.collect.fetch import (
    MAX_REDIRECTS,
    USER_AGENT,
    FetchLimits,
    FetchResult,
    TooLarge,
    _read_file,
    is_local,
)
from newsletter.collect.guard import Guard, Refused, Unresolvable
from newsletter.urls import web_url

_REDIRECTS = (301, 302, 303, 307, 308)
_DRAIN_BYTES = 64 * 1024
# True: httpcore's network layer is AsyncioBackend below instead of its anyio one (the pool's locks stay anyio's).
PLAIN_ASYNCIO = False
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

class AsyncioStream(httpcore.AsyncNetworkStream):
    """httpcore's network stream on asyncio's own streams, without anyio in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout() from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            try:
                self._writer.write(buffer)
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
            except TimeoutError:
                raise httpcore.WriteTimeout() from None
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        return self

    def get_extra_info(self, info: str) -> object:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "is_readable":
            return self._reader.at_eof() or bool(self._reader._buffer)  # type: ignore[attr-defined]
        return self._writer.get_extra_info(info)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[SocketOption] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout() from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the guard in front: it connects to the address that was checked.

    TLS is unchanged: httpcore starts it on this connection with the URL's host name for SNI and for the
    certificate check, so verification is exactly what it would be without the guard.
    """

    def __init__(self, guard: Guard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or (AsyncioBackend() if PLAIN_ASYNCIO else httpcore.AnyIOBackend())

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        try:
            addresses = await self.guard.addresses(host, port)
        except Unresolvable as exc:
            raise httpcore.ConnectError(str(exc)) from None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # addresses() never returns an empty list
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("refused: outbound requests never use local sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


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
            async with overall, host_sem:  # as main had it (fetch.py now takes the host's turn first)
                result = await fetch(client, url, limits, etag=etag, last_modified=last_modified, accept=accept,
                                     local_files=local_files)
            if on_done is not None:
                maybe = on_done(result)
                if asyncio.iscoroutine(maybe):
                    await maybe
            return result

        return list(await asyncio.gather(*(one(*r) for r in requests)))
