"""Send one issue to 1,000,000 subscribers with 1, 2 and 4 scale-mode workers on PostgreSQL.

Compared in the same run with the baseline a user would otherwise run: `newsletter send` in one process, on the
same database and through the same provider. The provider is the local SendGrid test server (tests/sendgrid_server.py,
in its own process; schema validation of every 50th request, so the sender rather than the validator is measured),
or the outbox with --mailer outbox.

For each run: recipients per second (from the moment the send is queued until the ledger says done, workers
already running), and where the workers' send_batch time went: database statements (timed at the cursor, commits
excluded), the provider's calls, and our own work (tokens, request building). Every run checks that the ledger
holds exactly one delivery per subscriber, and the provider that it got one copy per address per run.

    python benchmarks/scale_send.py [--subscribers 1000000] [--workers 1,2,4] [--batch 1000] [--concurrency 1]
                                    [--mailer sendgrid|outbox] [--no-baseline]

Needs NEWSLETTER_BENCH_DATABASE_URL or NEWSLETTER_TEST_DATABASE_URL (PostgreSQL).
"""

from __future__ import annotations

import multiprocessing
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale_common import (  # noqa: E402
    base_url,
    environment,
    fresh_schema,
    keep,
    newsletter,
    scale_arguments,
    skipped,
    wait_for,
    workers,
    workers_ready,
)

SENDGRID_KEY = "SG.bench-key"
TIMING = re.compile(r"(\d+) recipients in ([\d.]+)s: db ([\d.]+)s, provider ([\d.]+)s")


def serve_sendgrid(conn) -> None:  # noqa: ANN001 - a multiprocessing Connection
    """The SendGrid test server in its own process (its threads must not share a GIL with anything measured)."""
    from tests.sendgrid_server import SendGridServer

    server = SendGridServer(SENDGRID_KEY, keep_bodies=False)
    server.validate_every = 50
    server.start()
    conn.send(server.url)
    while True:
        command = conn.recv()
        if command == "stop":
            server.stop()
            return
        deliveries = server.deliveries()
        conn.send((sum(deliveries.values()), len(deliveries), max(deliveries.values(), default=0)))


def add_issues(engine: sa.Engine, newsletter_id: int, item_id: int, count: int) -> list[int]:
    from newsletter.store.db import session_scope
    from newsletter.store.models import IssueItem, IssueRow

    ids = []
    with session_scope(engine) as s:
        for n in range(count):
            issue = IssueRow(newsletter_id=newsletter_id, number=100 + n, subject=f"AI Weekly #{100 + n}",
                             status="approved")
            issue.items.append(IssueItem(item_id=item_id, position=0, included=True, title="A story worth reading",
                                         url="https://example.com/a", source_name="Wire",
                                         summary="Two sentences. About it."))
            s.add(issue)
            s.flush()
            ids.append(issue.id)
    return ids


def send_state(engine: sa.Engine, issue_id: int) -> tuple[str | None, int]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, sent FROM send WHERE issue_id = :i"), {"i": issue_id}).first()
    return (row[0], row[1]) if row else (None, 0)


def check_ledger(engine: sa.Engine, issue_id: int, expected: int) -> None:
    with engine.connect() as conn:
        total, distinct = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT d.subscriber_id) FROM delivery d JOIN send s ON s.id = d.send_id "
            "WHERE s.issue_id = :i"), {"i": issue_id}).one()
    assert total == distinct == expected, (total, distinct, expected)


def time_split(logs: list[Path]) -> tuple[float, float, float]:
    """Seconds the workers spent in send_batch jobs, in database statements, and in the provider's calls."""
    total = db = provider = 0.0
    for log in logs:
        for match in TIMING.finditer(log.read_text(errors="replace")):
            total += float(match.group(2))
            db += float(match.group(3))
            provider += float(match.group(4))
    return total, db, provider


def main() -> list[dict[str, str]]:
    parser = scale_arguments(__doc__, concurrency=1)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--mailer", choices=("sendgrid", "outbox"), default="sendgrid")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-process `newsletter send`")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the workers' logs into this folder")
    args = parser.parse_args()
    base = base_url()
    if not base:
        return skipped("scale send")
    counts = args.workers

    from tests.scale_world import SLUG, make_world, write_schedule

    rows: list[dict[str, str]] = []
    server = parent = None
    extra: dict[str, str] = {"NEWSLETTER_MAILER": args.mailer}
    if args.mailer == "sendgrid":
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve_sendgrid, args=(child,), daemon=True)
        server.start()
        extra.update(SENDGRID_API_HOST=parent.recv(), SENDGRID_API_KEY=SENDGRID_KEY)
    label = f"1 issue to {args.subscribers:,} subscribers via {args.mailer}, batches of {args.batch}"
    try:
        with tempfile.TemporaryDirectory() as tmp, fresh_schema(base) as url:
            folder = Path(tmp)
            write_schedule(folder / "schedules")
            print(f"writing {args.subscribers:,} subscribers ...", file=sys.stderr, flush=True)
            world = make_world(url, args.subscribers)
            engine = world.engine
            with engine.connect() as conn:
                item_id = conn.execute(sa.text("SELECT id FROM item")).scalar()
            issues = add_issues(engine, world.newsletter_id, item_id, len(counts) + 1)
            env = environment(url, folder, **extra)
            newsletter(env, "db", "upgrade", "--scale")
            # Statistics as autovacuum keeps them on a live database: a million rows written a second ago have
            # none yet, and whichever run came first would get the plans made without them.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
            baseline = None
            if not args.no_baseline:
                print("baseline: newsletter send ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                newsletter(env, "send", SLUG, "--issue", str(issues[0]), "--force")
                baseline = time.perf_counter() - started
                check_ledger(engine, issues[0], args.subscribers)
                keep(rows, {"benchmark": "scale send", "case": f"{label}: newsletter send, one process (baseline)",
                             "seconds": f"{baseline:.1f}", "recipients/s": f"{args.subscribers / baseline:,.0f}",
                             "job time: db / provider / ours": "", "ratio": "1.0x"})
            for count, issue_id in zip(counts, issues[1:], strict=False):
                print(f"{count} worker(s) ...", file=sys.stderr, flush=True)
                run_dir = folder / f"run{count}"
                run_dir.mkdir()
                with workers(env, count, run_dir, "--concurrency", str(args.concurrency)) as logs:
                    wait_for(lambda c=count: workers_ready(engine, c), 60)
                    started = time.perf_counter()
                    newsletter(env, "scale", "send", SLUG, "--issue", str(issue_id), "--batch-size", str(args.batch),
                               "--force")
                    # Looked at every 50 ms (one indexed row): the baseline's time ends when its process does,
                    # and polling every 0.5 s added 0.25 s on average to the workers' figure.
                    wait_for(lambda i=issue_id: send_state(engine, i)[0] in ("done", "failed", "held"), 7200, 0.05)
                    seconds = time.perf_counter() - started
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for log in logs:
                        shutil.copy(log, args.keep_logs / f"run{count}-{log.name}")
                state = send_state(engine, issue_id)
                assert state == ("done", args.subscribers), state
                check_ledger(engine, issue_id, args.subscribers)
                busy, db, provider = time_split(logs)
                case = f"{label}: {count} worker(s) x {args.concurrency} job(s)"
                keep(rows, {"benchmark": "scale send", "case": case, "seconds": f"{seconds:.1f}",
                             "recipients/s": f"{args.subscribers / seconds:,.0f}",
                             "job time: db / provider / ours": f"{db / busy:.0%} / {provider / busy:.0%} / "
                                                               f"{(busy - db - provider) / busy:.0%} of {busy:.0f}s",
                             "ratio": f"{baseline / seconds:.2f}x" if baseline else ""})
            if parent is not None:
                parent.send("count")
                total, addresses, most = parent.recv()
                runs = len(counts) + (0 if args.no_baseline else 1)
                assert addresses == args.subscribers and most == runs and total == runs * args.subscribers, (
                    total, addresses, most)
    finally:
        if parent is not None:
            parent.send("stop")
        if server is not None:
            server.join(timeout=10)
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
