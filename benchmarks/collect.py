"""Collect 200 feeds of 50 items each from local HTTP servers with 50 ms latency per request.

Compared in the same run with what a user would otherwise write: a sequential `feedparser.parse(url)` loop.
A second `newsletter` run, where every feed answers 304 Not Modified, shows what conditional GET saves.
Both runs are made with the fetcher in use (pycurl) and with the two it replaced (aiohttp,
benchmarks/aiohttp_fetch.py, and httpx, benchmarks/httpx_fetch.py), and the client CPU per 304 is measured for
each beside bare aiohttp and no HTTP library at all.

    python benchmarks/collect.py [--feeds 200] [--items 50] [--latency 0.05] [--hosts 10]

The feeds are spread over several loopback addresses (127.0.0.1, 127.0.0.2, ...) because real feeds live on
many hosts and the collector limits itself per host.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The pages and feeds are served from loopback, which the fetcher refuses unless the operator allows it.
os.environ.setdefault("NEWSLETTER_FETCH_ALLOW", "127.0.0.0/8")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_feed(n: int, items: int) -> bytes:
    now = datetime.now(UTC)
    parts = []
    for i in range(items):
        when = format_datetime(now - timedelta(hours=i))
        parts.append(
            f"<item><title>Feed {n} story {i}: a headline of usual length</title>"
            f"<link>https://site{n}.example/story/{i}</link><guid>https://site{n}.example/story/{i}</guid>"
            f"<pubDate>{when}</pubDate><author>desk@site{n}.example (News Desk)</author>"
            f"<description><![CDATA[<p>The first paragraph of story {i} in feed {n}, with <b>some</b> markup and "
            f"<a href=\"https://site{n}.example/x\">a link</a>. “This is a quote from someone,” said a "
            f"spokesperson.</p><p>A second paragraph with more detail about what happened and why it "
            f"matters to readers of this feed.</p>]]></description></item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {n}</title>'
        f"<link>https://site{n}.example/</link><description>d</description>{''.join(parts)}</channel></rss>"
    ).encode()


def serve(host: str, feeds: dict[str, bytes], latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            time.sleep(latency)
            body = feeds.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = f'"{hash(body)}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        # The backlog is fixed when the socket starts listening, inside the constructor: set on the instance
        # afterwards it is ignored (backlog 5), and above 6 connections at once the client pays 1 s SYN retries.
        request_queue_size = 256
        daemon_threads = True

    server = Server((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve_all(feeds: int, items: int, hosts: int, latency: float, ready: multiprocessing.Queue) -> None:
    urls = []
    per_host = -(-feeds // hosts)
    for h in range(hosts):
        docs = {f"/feed/{n}.xml": make_feed(n, items) for n in range(h * per_host, min((h + 1) * per_host, feeds))}
        server = serve(f"127.0.0.{h + 1}", docs, latency)
        urls += [f"http://127.0.0.{h + 1}:{server.server_address[1]}{path}" for path in docs]
    ready.put(urls)
    threading.Event().wait()


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (collect's parse workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def latency_floor(urls: list[str], latency: float, per_host: int) -> float:
    """The least time the requests can take: each host's share, per_host at a time, one latency per round."""
    from collections import Counter
    from urllib.parse import urlparse

    counts = Counter(urlparse(u).netloc for u in urls)
    return max(-(-n // per_host) for n in counts.values()) * latency


def conditional_get_cpu(urls: list[str], passes: int, fetch_all: Any, run: Any = None) -> tuple[float, dict[str, str]]:
    """Client CPU seconds per request over `passes` runs of `fetch_all` on `urls`, every one answered 304.

    Each pass is a run of its own (a new client), as `newsletter collect` is; also returns the ETags. `run` runs
    the coroutine (asyncio.run by default; collect's own runner, run_fetches, for our fetcher)."""
    import asyncio

    from newsletter.collect.fetch import FetchLimits

    run = run or asyncio.run
    limits = FetchLimits()
    first = run(fetch_all([(u, None, None) for u in urls], limits))
    requests = [(r.url, r.etag, None) for r in first]
    started = time.process_time()
    for _ in range(passes):
        results = run(fetch_all(requests, limits))
        assert all(r.not_modified for r in results), [r.error or r.status for r in results if not r.not_modified]
    return (time.process_time() - started) / (passes * len(urls)), {r.url: r.etag or "" for r in first}


async def _raw_304s(urls: list[str], etags: dict[str, str], per_host: int) -> None:
    """The same conditional GETs with no HTTP library: asyncio streams, keep-alive, per_host connections a host."""
    import asyncio
    from urllib.parse import urlparse

    by_host: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for u in urls:
        parsed = urlparse(u)
        by_host.setdefault((parsed.hostname or "", parsed.port or 80), []).append((parsed.path, etags[u]))

    async def worker(host: str, port: int, queue: list[tuple[str, str]]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while queue:
            path, etag = queue.pop()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nIf-None-Match: {etag}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 304"), head[:40]
        writer.close()

    await asyncio.gather(*(worker(h, p, q) for (h, p), q in by_host.items() for _ in range(per_host)))


def raw_conditional_get_cpu(urls: list[str], etags: dict[str, str], passes: int, per_host: int,
                            run: Any = None) -> float:
    import asyncio

    run = run or asyncio.run
    started = time.process_time()
    for _ in range(passes):
        run(_raw_304s(urls, etags, per_host))
    return (time.process_time() - started) / (passes * len(urls))


def aiohttp_conditional_get_cpu(urls: list[str], etags: dict[str, str], passes: int, per_host: int,
                                run: Any = None) -> float:
    """The same conditional GETs through bare aiohttp: no guard, no redirect handling, no size checks."""
    import asyncio

    import aiohttp

    async def session_run() -> None:
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=per_host)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(url: str) -> None:
                async with session.get(url, headers={"If-None-Match": etags[url]}, allow_redirects=False) as r:
                    await r.read()
                    assert r.status == 304, r.status

            await asyncio.gather(*(one(u) for u in urls))

    runner = run or asyncio.run
    started = time.process_time()
    for _ in range(passes):
        runner(session_run())
    return (time.process_time() - started) / (passes * len(urls))


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--cpu-passes", type=int, default=10, help="passes of 304s for the CPU-per-request row")
    args = parser.parse_args()

    import feedparser

    from newsletter.collect.fetch import FetchLimits
    from newsletter.collect.run import collect
    from newsletter.config import Newsletter
    from newsletter.store.db import get_engine

    # The servers run in another process so that their threads do not compete with the client for the GIL.
    ready: multiprocessing.Queue = multiprocessing.Queue()
    server_process = multiprocessing.Process(
        target=serve_all, args=(args.feeds, args.items, args.hosts, args.latency, ready), daemon=True
    )
    server_process.start()
    urls = ready.get(timeout=60)

    started, cpu = time.perf_counter(), _cpu()
    baseline_items = sum(len(feedparser.parse(url).entries) for url in urls)
    baseline, baseline_cpu = time.perf_counter() - started, _cpu() - cpu

    nl = Newsletter(name="Bench", slug="bench", from_address="b@example.com",
                    sources=[{"url": u, "name": f"feed {i}"} for i, u in enumerate(urls)])

    cpu_of: dict[str, float] = {}

    def collect_twice(fetch_all: Any, name: str) -> tuple[float, float, Any, Any]:
        """A first collect and a second (every feed 304) into a new database, with this fetcher."""
        import newsletter.collect.run as run

        saved, run.fetch_all = run.fetch_all, fetch_all
        try:
            with tempfile.TemporaryDirectory() as tmp:
                engine = get_engine(f"sqlite:///{tmp}/bench.db")
                started, cpu = time.perf_counter(), _cpu()
                first = collect(engine, [nl])
                full, cpu_of[name] = time.perf_counter() - started, _cpu() - cpu
                started, cpu = time.perf_counter(), _cpu()
                second = collect(engine, [nl])
                again, cpu_of[f"{name} 304"] = time.perf_counter() - started, _cpu() - cpu
                engine.dispose()
        finally:
            run.fetch_all = saved
        return full, again, first, second

    from benchmarks import aiohttp_fetch, httpx_fetch
    from newsletter.collect import fetch as ours_fetch

    ours, ours_304, first, second = collect_twice(ours_fetch.fetch_all, "ours")
    was_aiohttp, was_aiohttp_304, aiohttp_first, aiohttp_second = collect_twice(aiohttp_fetch.fetch_all, "aiohttp")
    was, was_304, was_first, was_second = collect_twice(httpx_fetch.fetch_all, "httpx")
    cpu_304, etags = conditional_get_cpu(urls, args.cpu_passes, ours_fetch.fetch_all, ours_fetch.run_fetches)
    cpu_304_asyncio, _ = conditional_get_cpu(urls, args.cpu_passes, ours_fetch.fetch_all)
    cpu_aiohttp_fetcher, _ = conditional_get_cpu(urls, args.cpu_passes, aiohttp_fetch.fetch_all,
                                                 ours_fetch.run_fetches)
    cpu_httpx, _ = conditional_get_cpu(urls, args.cpu_passes, httpx_fetch.fetch_all)
    httpx_fetch.PLAIN_ASYNCIO = True  # the same httpx fetcher, httpcore's network layer on asyncio streams
    try:
        cpu_httpx_asyncio, _ = conditional_get_cpu(urls, args.cpu_passes, httpx_fetch.fetch_all)
    finally:
        httpx_fetch.PLAIN_ASYNCIO = False
    cpu_raw = raw_conditional_get_cpu(urls, etags, args.cpu_passes, FetchLimits().per_host)
    cpu_aiohttp = aiohttp_conditional_get_cpu(urls, etags, args.cpu_passes, FetchLimits().per_host)
    # The same two on the loop collect runs on (uvloop where installed).
    cpu_raw_loop = raw_conditional_get_cpu(urls, etags, args.cpu_passes, FetchLimits().per_host,
                                           ours_fetch.run_fetches)
    cpu_aiohttp_loop = aiohttp_conditional_get_cpu(urls, etags, args.cpu_passes, FetchLimits().per_host,
                                                   ours_fetch.run_fetches)
    server_process.terminate()

    assert first.new_items == aiohttp_first.new_items == was_first.new_items == baseline_items == (
        args.feeds * args.items), (first.new_items, aiohttp_first.new_items, was_first.new_items, baseline_items)
    assert all(o.status == "not-modified" for o in [*second.outcomes, *aiohttp_second.outcomes,
                                                    *was_second.outcomes])
    try:
        import uvloop  # noqa: F401 - only to name the loop run_fetches uses
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    limits = FetchLimits()
    floor = latency_floor(urls, args.latency, limits.per_host)
    sequential_floor = len(urls) * args.latency
    per_host_n = -(-args.feeds // args.hosts)
    label = f"{args.feeds} feeds x {args.items} items, {args.latency * 1000:.0f} ms latency"
    floor_note = f"latency floor {floor:.2f} s ({limits.per_host} per host, {per_host_n} feeds per host)"
    rows = [
        {"benchmark": "collect", "case": f"{label}: sequential feedparser.parse(url) (baseline)",
         "seconds": f"{baseline:.2f}", "ratio": "1.0x",
         "baseline / floor": f"latency floor {sequential_floor:.2f} s (one at a time); CPU {baseline_cpu:.2f} s"},
        {"benchmark": "collect", "case": f"{label}: newsletter collect (parse + sanitize + store)",
         "seconds": f"{ours:.2f}", "ratio": f"{baseline / ours:.1f}x faster than baseline",
         "baseline / floor": f"{floor_note}; {ours / floor:.1f}x the floor; CPU {cpu_of['ours']:.2f} s with the "
                             f"parse workers ({baseline_cpu / cpu_of['ours']:.1f}x less than the baseline's); "
                             f"with aiohttp (as before): {was_aiohttp:.2f} s, CPU {cpu_of['aiohttp']:.2f} s; "
                             f"with httpx (before that): {was:.2f} s, {baseline / was:.1f}x"},
        {"benchmark": "collect", "case": f"{label}: newsletter collect again, every feed 304",
         "seconds": f"{ours_304:.2f}", "ratio": f"{ours / ours_304:.1f}x faster than first run",
         "baseline / floor": f"{floor_note}; {ours_304 / floor:.1f}x the floor; CPU {cpu_of['ours 304']:.2f} s; "
                             f"with aiohttp (as before): {was_aiohttp_304:.2f} s, CPU "
                             f"{cpu_of['aiohttp 304']:.2f} s; with httpx (before that): "
                             f"{was_304:.2f} s, {was_304 / floor:.1f}x the floor"},
        {"benchmark": "collect", "case": f"client CPU per conditional GET answered 304 ({args.cpu_passes} runs "
                                         f"of {len(urls)})",
         "seconds": f"{cpu_304 * 1000:.3f} ms", "ratio": f"{cpu_304 / cpu_raw_loop:.1f}x the floor",
         "baseline / floor": f"no HTTP library (asyncio streams, keep-alive), on collect's loop ({loop_name}): "
                             f"{cpu_raw_loop * 1000:.3f} ms, on asyncio's: {cpu_raw * 1000:.3f} ms"
                             + f"; bare aiohttp: {cpu_aiohttp_loop * 1000:.3f} ms ({loop_name}), "
                               f"{cpu_aiohttp * 1000:.3f} ms (asyncio); ours on asyncio's loop: "
                               f"{cpu_304_asyncio * 1000:.3f} ms"
                             + f"; aiohttp fetcher (as before, {loop_name}): {cpu_aiohttp_fetcher * 1000:.3f} ms"
                             + f"; httpx fetcher (before that): {cpu_httpx * 1000:.3f} ms, "
                               f"{cpu_httpx / cpu_raw:.1f}x the floor; httpx, httpcore on plain asyncio: "
                               f"{cpu_httpx_asyncio * 1000:.3f} ms"},
    ]
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
