"""What the scheduler's guarantees cost: one scheduled cycle against a cron job doing the same steps by hand.

    python benchmarks/schedule.py [--subscribers N] [--newsletters M]

Compares, in the same run, on SQLite with the outbox:
- the baseline a user would otherwise run from cron: collect(), build_issue(), send_issue() for one newsletter;
- `run_cycle`: the same three steps plus the period lookup, the preflight render and checks, the approval check and
  a ScheduleRun row per step (what makes it once per period and explainable);
- a repeat of the cycle in the same period (what a restart or a duplicate job costs: nothing is sent);
- one housekeeping pass of `newsletter run` over M newsletters (lease, approvals and resumes), run every 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _feed(path: Path, now: datetime, stories: int, tag: str) -> None:
    items = "".join(
        f"<item><title>Story {tag}-{i}</title><link>https://desk.example/{tag}/{i}</link><guid>{tag}-{i}</guid>"
        f"<pubDate>{format_datetime(now - timedelta(hours=i + 1))}</pubDate>"
        f"<description>Story {i} happened. It mattered to many readers in town.</description></item>"
        for i in range(stories)
    )
    path.write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>Desk</title>{items}</channel></rss>')


def _setup(folder: Path, slug: str, subscribers: int):  # noqa: ANN202
    from newsletter.config import load_newsletter, settings_from_env
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import Subscriber, Subscription

    (folder / "schedules").mkdir(parents=True, exist_ok=True)
    feed = folder / f"{slug}.xml"
    (folder / "schedules" / f"{slug}.toml").write_text(
        f'name = "{slug}"\nfrom_address = "News <news@example.com>"\npostal_address = "1 Test Street"\n'
        f'[[sources]]\nurl = "{feed}"\n[digest]\nfetch_articles_under_words = 0\n'
        '[schedule]\nsend = "weekly on monday at 08:00"\n')
    settings = settings_from_env({"NEWSLETTER_DATABASE_URL": f"sqlite:///{folder / 'n.db'}",
                                  "NEWSLETTER_OUTBOX_DIR": str(folder / "outbox"),
                                  "NEWSLETTER_SECRET_KEY": "bench", "NEWSLETTER_BASE_URL": "https://n.example"})
    engine = get_engine(settings.database_url)
    nl = load_newsletter(folder / "schedules" / f"{slug}.toml")
    with session_scope(engine) as session:
        row = ensure_newsletter(session, slug, slug)
        start = session.query(Subscriber).count()
        session.execute(Subscriber.__table__.insert(),
                        [{"email": f"p{start + i}@example.com", "fields": {}} for i in range(subscribers)])
        ids = [s.id for s in session.query(Subscriber).filter(Subscriber.id > start)]
        session.execute(Subscription.__table__.insert(),
                        [{"newsletter_id": row.id, "subscriber_id": i, "status": "active"} for i in ids])
    return settings, engine, nl, feed


def measure(subscribers: int, newsletters: int, runs: int) -> list[dict[str, str]]:
    from newsletter.collect.run import collect
    from newsletter.compose.build import build_issue
    from newsletter.deliver.outbox import OutboxMailer
    from newsletter.deliver.send import send_issue
    from newsletter.schedule.jobs import Runtime, pending_sends, run_cycle

    cron, cycle, repeat = [], [], []
    monday = datetime(2026, 11, 30, 8, tzinfo=UTC)
    for run in range(runs + 1):  # the first round warms template and import caches: not counted
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            settings, engine, nl, feed = _setup(folder / "cron", "cron", subscribers)
            _feed(feed, datetime.now(UTC), 12, f"c{run}")
            t0 = time.perf_counter()
            collect(engine, [nl])
            built = build_issue(engine, nl)
            send_issue(engine, nl, built.issue_id, OutboxMailer(settings.outbox_dir), settings)
            cron.append(time.perf_counter() - t0)

            settings, engine, nl, feed = _setup(folder / "sched", "sched", subscribers)
            _feed(feed, monday, 12, f"s{run}")
            rt = Runtime(engine, settings, newsletters={nl.slug: nl})
            t0 = time.perf_counter()
            result = run_cycle(rt, nl.slug, now=monday)
            cycle.append(time.perf_counter() - t0)
            assert result.outcome == "sent", result
            t0 = time.perf_counter()
            assert run_cycle(rt, nl.slug, now=monday + timedelta(hours=1)).outcome == "already-sent"
            repeat.append(time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rt = None
        for i in range(newsletters):
            settings, engine, nl, feed = _setup(folder, f"n{i}", 1)
            if rt is None:
                rt = Runtime(engine, settings)
            rt.newsletters[nl.slug] = nl
            _feed(feed, monday, 2, f"n{i}")
            run_cycle(rt, nl.slug, now=monday)
        ticks = []
        for _ in range(max(3, runs)):
            t0 = time.perf_counter()
            pending_sends(rt, monday + timedelta(hours=2))
            ticks.append(time.perf_counter() - t0)

    cron, cycle, repeat = cron[1:], cycle[1:], repeat[1:]

    def row(what: str, times: list[float], note: str) -> dict[str, str]:
        return {"benchmark": "schedule", "case": what, "median": f"{statistics.median(times) * 1000:.0f} ms",
                "best": f"{min(times) * 1000:.0f} ms", "note": note}

    return [
        row(f"cron: collect+build+send, {subscribers} subscribers (baseline)", cron, "no period, approval, checks"),
        row(f"run_cycle, {subscribers} subscribers", cycle, "+ period key, preflight, approval, step rows"),
        row("run_cycle again in the same period", repeat, "already sent: nothing goes out"),
        row(f"housekeeping pass, {newsletters} newsletters", ticks, "every 5 s in `newsletter run`"),
    ]


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--newsletters", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("COLUMNS", "200")
    return measure(args.subscribers, args.newsletters, args.runs)


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
