"""Collect 5,000 feeds from local HTTP servers with 1, 2 and 4 scale-mode workers on PostgreSQL.

Compared in the same run with the baseline a user would otherwise run: `newsletter collect` in one process on the
same database. Each run starts from an empty schema, so every item is new and stored.

    python benchmarks/scale_collect.py [--feeds 5000] [--items 20] [--latency 0.05] [--hosts 10]
                                       [--workers 1,2,4] [--chunk 50] [--concurrency 2]

The feeds are spread over 50 newsletters (100 sources each) and several loopback addresses (127.0.0.1, ...).
Needs NEWSLETTER_BENCH_DATABASE_URL or NEWSLETTER_TEST_DATABASE_URL (PostgreSQL).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.collect import serve_all  # noqa: E402
from benchmarks.scale_common import (  # noqa: E402
    base_url,
    environment,
    fresh_schema,
    jobs_left,
    keep,
    newsletter,
    scale_arguments,
    skipped,
    wait_for,
    workers,
    workers_ready,
)

PER_NEWSLETTER = 100


def write_schedules(folder: Path, urls: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(0, len(urls), PER_NEWSLETTER):
        chunk = urls[n:n + PER_NEWSLETTER]
        sources = "".join(f'\n[[sources]]\nname = "feed {n + i}"\nurl = "{u}"\n' for i, u in enumerate(chunk))
        (folder / f"bench-{n // PER_NEWSLETTER}.toml").write_text(
            f'name = "Bench {n}"\nfrom_address = "b@example.com"\n{sources}', encoding="utf-8")


def interleave(urls: list[str]) -> list[str]:
    hosts: dict[str, list[str]] = {}
    for url in urls:
        hosts.setdefault(url.split("/")[2], []).append(url)
    lists = list(hosts.values())
    return [u for i in range(max(map(len, lists))) for lst in lists if i < len(lst) for u in [lst[i]]]


def count_items(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT count(*) FROM item")).scalar()
    engine.dispose()
    return found


def main() -> list[dict[str, str]]:
    parser = scale_arguments(__doc__, concurrency=2)
    parser.add_argument("--feeds", type=int, default=5000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()
    base = base_url()
    if not base:
        return skipped("scale collect")

    ready: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_all, args=(args.feeds, args.items, args.hosts, args.latency,
                                                             ready), daemon=True)
    server.start()
    by_host = ready.get(timeout=300)
    # Real newsletters list feeds from many sites: interleave the hosts so that every chunk spans them.
    urls = interleave(by_host)
    expected = args.feeds * args.items
    label = f"{args.feeds} feeds x {args.items} items, {args.latency * 1000:.0f} ms latency"
    rows: list[dict[str, str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, fresh_schema(base) as url:
            folder = Path(tmp)
            write_schedules(folder / "schedules", urls)
            env = environment(url, folder)
            newsletter(env, "db", "upgrade")
            started = time.perf_counter()
            newsletter(env, "collect")
            baseline = time.perf_counter() - started
            assert count_items(url) == expected, count_items(url)
        keep(rows, {"benchmark": "scale collect", "case": f"{label}: newsletter collect, one process (baseline)",
                     "seconds": f"{baseline:.1f}", "feeds/s": f"{args.feeds / baseline:.0f}", "ratio": "1.0x"})
        for count in args.workers:
            with tempfile.TemporaryDirectory() as tmp, fresh_schema(base) as url:
                folder = Path(tmp)
                write_schedules(folder / "schedules", urls)
                env = environment(url, folder, NEWSLETTER_SCALE="1")
                newsletter(env, "db", "upgrade")
                engine = sa.create_engine(url)
                with workers(env, count, folder, "--log-level", "warning", "--concurrency", str(args.concurrency)):
                    wait_for(lambda e=engine, c=count: workers_ready(e, c), 60)
                    started = time.perf_counter()
                    newsletter(env, "scale", "collect", "--chunk", str(args.chunk))
                    wait_for(lambda e=engine: jobs_left(e, "collect_sources") == 0, 3600)
                    seconds = time.perf_counter() - started
                engine.dispose()
                found = count_items(url)
                assert found == expected, (found, expected)
            case = f"{label}: {count} worker(s) x {args.concurrency} jobs, chunks of {args.chunk}"
            keep(rows, {"benchmark": "scale collect", "case": case,
                         "seconds": f"{seconds:.1f}", "feeds/s": f"{args.feeds / seconds:.0f}",
                         "ratio": f"{baseline / seconds:.2f}x"})
    finally:
        server.terminate()
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
