"""Fetching with limits: http(s), file:// URLs and plain paths, conditional GET, timeouts, a size cap.

Used for feeds and for article pages alike, so both obey the same limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from newsletter import __version__

USER_AGENT = f"newsletter/{__version__} (+https://github.com/newsletter-digest/newsletter)"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


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
    # Each redirect followed: (status, absolute location), in order; collect remembers permanent ones.
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


def make_client(limits: FetchLimits) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(limits.timeout, connect=min(limits.timeout, 10.0)),
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        limits=httpx.Limits(max_connections=limits.concurrency, max_keepalive_connections=limits.concurrency),
    )


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    limits: FetchLimits,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = "*/*",
) -> FetchResult:
    """Fetch one URL. Never raises: failures come back as ok=False with a readable error."""
    started = time.monotonic()
    if is_local(url):
        result = await asyncio.to_thread(_read_file, url, limits)
        result.elapsed = time.monotonic() - started
        return result
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
    except TooLarge as exc:
        result = FetchResult(url, False, error=str(exc))
    except httpx.TimeoutException:
        result = FetchResult(url, False, error=f"timed out after {limits.timeout:g}s")
    except httpx.TooManyRedirects:
        result = FetchResult(url, False, error="too many redirects")
    except httpx.HTTPError as exc:
        result = FetchResult(url, False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    result.elapsed = time.monotonic() - started
    return result


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str], limits: FetchLimits) -> FetchResult:
    async with client.stream("GET", url, headers=headers) as response:
        common = {
            "status": response.status_code,
            "final_url": str(response.url),
            "content_type": response.headers.get("content-type"),
            "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified"),
            "redirects": [(r.status_code, str(r.url.join(r.headers.get("location", "")))) for r in response.history],
        }
        if response.status_code == 304:
            return FetchResult(url, True, not_modified=True, **common)
        if response.status_code >= 400:
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
) -> list[FetchResult]:
    """Fetch (url, etag, last_modified) triples concurrently, capped overall and per host; keeps order."""
    overall = asyncio.Semaphore(limits.concurrency)
    per_host: dict[str, asyncio.Semaphore] = {}

    async with make_client(limits) as client:

        async def one(url: str, etag: str | None, last_modified: str | None) -> FetchResult:
            host = urlparse(url).netloc
            host_sem = per_host.setdefault(host, asyncio.Semaphore(limits.per_host))
            async with overall, host_sem:
                result = await fetch(client, url, limits, etag=etag, last_modified=last_modified, accept=accept)
            if on_done is not None:
                maybe = on_done(result)
                if asyncio.iscoroutine(maybe):
                    await maybe
            return result

        return list(await asyncio.gather(*(one(*r) for r in requests)))
