"""Analytics: 1,000,000 click events ingested, then the editor's report page made from them, on SQLite and
PostgreSQL, beside the plain `SELECT story, count(*) ... GROUP BY story` a user would otherwise run.

    python benchmarks/analytics.py [--events 1000000] [--sample 5000] [--runs 3]

Ingestion is measured two ways: the /r/ path one click per transaction (`record_click`, what each reader's click
costs, its first-of lookup included; timed on --sample clicks, since 1M single-row transactions would take this
loaded machine most of an hour) and the same rows in bulk (executemany in one transaction, the first-of flags
computed in Python, the report's counters rebuilt from them in the same transaction: the floor any ingestion
reaches). The report is the real page (`GET /editor/reports/SLUG/issues/1` through the app, signed in): every
figure, the SVG charts and the tables, timed in the same run as the GROUP BY baseline. PostgreSQL runs when
NEWSLETTER_BENCH_DATABASE_URL or NEWSLETTER_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORIES = 10
READERS = 50_000


def _world(engine: Engine) -> int:
    """A newsletter with one sent issue of STORIES stories to READERS readers; the issue's id."""
    from newsletter.store.db import ensure_newsletter, session_scope
    from newsletter.store.models import IssueItem, IssueRow, Item, Send, Source, utcnow

    with session_scope(engine) as session:
        nl = ensure_newsletter(session, "bench", "Bench Weekly")
        source = Source(url="https://desk.example/feed", name="Desk")
        session.add(source)
        session.flush()
        sent = utcnow() - timedelta(days=3)
        issue = IssueRow(newsletter_id=nl.id, number=1, subject="Bench #1", status="sent", sent_at=sent)
        session.add(issue)
        session.flush()
        for n in range(STORIES):
            item = Item(source_id=source.id, guid=f"g{n}", link=f"https://desk.example/{n}", title=f"Story {n + 1}",
                        content_hash=hashlib.sha256(str(n).encode()).hexdigest())
            session.add(item)
            session.flush()
            session.add(IssueItem(issue_id=issue.id, item_id=item.id, position=n, title=f"Story {n + 1} of the week",
                                  url=f"https://desk.example/{n}", source_name="Desk"))
        session.add(Send(issue_id=issue.id, mailer="outbox", status="done", total=READERS, sent=READERS,
                         started_at=sent, finished_at=sent))
        return issue.id


def _rows(issue_id: int, count: int, seed: int = 1) -> Iterator[dict]:
    from newsletter.store.models import utcnow

    rng = random.Random(seed)
    start = utcnow() - timedelta(days=3)
    readers: set[str] = set()
    daily: set[tuple[str, str, object]] = set()
    for _ in range(count):
        story = min(STORIES, int(rng.expovariate(0.35)) + 1)  # the first stories get most clicks, as in life
        machine, reader = rng.random() < 0.05, f"{rng.randrange(READERS):032x}"
        link, when = f"https://desk.example/{story - 1}", start + timedelta(seconds=rng.uniform(0, 6 * 86400))
        # The first-of flags record_click's mark_firsts would set (the bulk path computes them here).
        first_issue = not machine and reader not in readers
        first_day = not machine and (reader, link, when.date()) not in daily
        if not machine:
            readers.add(reader)
            daily.add((reader, link, when.date()))
        yield {"issue_id": issue_id, "kind": "click", "source": "redirect", "machine": machine, "agent": "browser",
               "story": story, "link": link, "recipient": reader, "occurred_at": when, "first_issue": first_issue,
               "first_day": first_day}


def _bulk(engine: Engine, issue_id: int, count: int) -> float:
    from newsletter.report.record import count_all
    from newsletter.store.models import TrackEvent

    started = time.perf_counter()
    batch: list[dict] = []
    with engine.begin() as conn:
        for row in _rows(issue_id, count):
            batch.append(row)
            if len(batch) == 10_000:
                conn.execute(insert(TrackEvent), batch)
                batch = []
        if batch:
            conn.execute(insert(TrackEvent), batch)
        count_all(conn)  # the report's counters, which mark_firsts keeps one event at a time: timed too
    return time.perf_counter() - started


def _one_by_one(engine: Engine, issue_id: int, count: int) -> tuple[float, float]:
    from newsletter.render.tracking import Link
    from newsletter.report.agents import classify
    from newsletter.report.record import record_click

    agent = classify("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36")
    started, cpu = time.perf_counter(), time.process_time()
    for row in _rows(issue_id, count, seed=2):
        record_click(engine, Link(issue_id, row["story"], row["link"]), row["recipient"], agent)
    return time.perf_counter() - started, time.process_time() - cpu


def _baseline(engine: Engine, issue_id: int) -> float:
    from newsletter.store.models import TrackEvent

    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(select(TrackEvent.story, func.count()).where(TrackEvent.issue_id == issue_id,
                                                                  TrackEvent.kind == "click")
                     .group_by(TrackEvent.story)).all()
    return time.perf_counter() - started


@contextmanager
def _client(url: str, folder: Path) -> Iterator:  # noqa: ANN001
    from argon2 import PasswordHasher, profiles
    from starlette.testclient import TestClient

    from newsletter.config import Settings
    from newsletter.store.db import get_engine, session_scope
    from newsletter.web import auth
    from newsletter.web.app import create_app

    (folder / "schedules").mkdir(exist_ok=True)
    (folder / "schedules" / "bench.toml").write_text(
        'name = "Bench Weekly"\nfrom_address = "Bench <news@example.com>"\npostal_address = "1 Test Street"\n'
        '[[sources]]\nurl = "https://desk.example/feed"\n')
    settings = Settings(database_url=url, schedules_dir=folder / "schedules", outbox_dir=folder / "outbox",
                        templates_dir=folder / "templates", secret_key="bench-secret", base_url="http://testserver")
    engine = get_engine(url)
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    with session_scope(engine) as session:
        auth.create_editor(session, "ed@example.com", "correct horse battery")
    with TestClient(create_app(settings, engine=engine)) as client:
        page = client.get("/signin")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.post("/signin", data={"csrf": csrf, "email": "ed@example.com", "password": "correct horse battery",
                                     "next": "/editor/"})
        yield client


def measure(label: str, url: str, events: int, sample: int, runs: int) -> list[dict[str, str]]:
    from newsletter.store.db import get_engine

    engine = get_engine(url)  # the schema made by the migrations
    issue_id = _world(engine)
    one, one_cpu = _one_by_one(engine, issue_id, sample)
    bulk = _bulk(engine, issue_id, events)
    with tempfile.TemporaryDirectory() as tmp, _client(url, Path(tmp)) as client:
        page_times, base_times = [], []
        for _ in range(runs + 1):  # the first of each warms caches: left out
            base_times.append(_baseline(engine, issue_id))
            started = time.perf_counter()
            answer = client.get("/editor/reports/bench/issues/1")
            page_times.append(time.perf_counter() - started)
            assert answer.status_code == 200 and answer.text.count('<rect class="bar"') == STORIES + 2, answer.text
        page_times, base_times = page_times[1:], base_times[1:]
    engine.dispose()
    total = events + sample
    page_ms, base_ms = statistics.median(page_times) * 1000, statistics.median(base_times) * 1000
    return [
        {"benchmark": "analytics", "case": f"{label}: ingest one click per transaction (/r/)",
         "result": f"{sample / one:,.0f} events/s",
         "note": f"{sample:,} clicks, record_click; {one_cpu / sample * 1000:.2f} ms CPU each in this process"},
        {"benchmark": "analytics", "case": f"{label}: ingest in bulk (floor)",
         "result": f"{events / bulk:,.0f} events/s",
         "note": f"{events:,} rows, executemany + counters in one transaction"},
        {"benchmark": "analytics", "case": f"{label}: report page over {total:,} events",
         "result": f"{page_ms:,.0f} ms", "note": f"median of {runs}; GET /editor/reports/..., figures + SVG"},
        {"benchmark": "analytics", "case": f"{label}: SELECT story, count(*) GROUP BY (baseline)",
         "result": f"{base_ms:,.0f} ms", "note": f"same run; report = {page_ms / base_ms:.2g}x the baseline"},
    ]


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    args = parser.parse_args()
    rows: list[dict[str, str]] = []
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure("SQLite", f"sqlite:///{tmp}/bench.db", args.events, args.sample, args.runs)
    if args.only != "sqlite":
        from benchmarks.scale_common import base_url, fresh_schema, skipped

        base = base_url()
        if base is None:
            rows += skipped("analytics (PostgreSQL)")
        else:
            with fresh_schema(base) as url:
                rows += measure("PostgreSQL", url, args.events, args.sample, args.runs)
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
