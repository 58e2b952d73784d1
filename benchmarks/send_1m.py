"""Send one issue to 1,000,000 subscribers through the local SendGrid server (tests/sendgrid_server.py).

    python benchmarks/send_1m.py [--subscribers 1000000] [--naive-sample 2000] [--database-url URL]

What runs: `newsletter.deliver.send.run_send`, the code `newsletter send` uses: keyset pages of the audience,
a signed unsubscribe link per recipient, 1000 personalizations per request, the ledger written before and after
each request (one send_batch row per batch, one delivery row per recipient, bulk-inserted).

The SendGrid server runs in its own process, as SendGrid would, and validates EVERY request against the published
schema with jsonschema plus the unstated limits; at the end it reports how many distinct addresses it accepted
and how many duplicates (must be 0). The send runs in a child process so its peak memory (max RSS) is its own.

Compared in the same run with the sender floor (`run_floor_phase`: the same audience, links and request body
with nothing kept but speed, stdlib json or orjson, and once more with a delivery row per recipient; the send's
row says how many times the floor's time it took), and with the baseline a user would otherwise write: a loop
calling the API once per recipient with the official client (`SendGridAPIClient.send(Mail(...))`), timed on a
sample and extrapolated. `--no-floor` skips the floor runs.

And the cost of hold-and-cancel (SENDGRID_SETTLE_BY=hold, what an account without the Email Activity add-on
gets): a second issue to the same audience with every request under its own batch id (one POST /v3/mail/batch
each) and send_at 11 minutes ahead, with every `--lost-every`th answer lost, so each such batch is cancelled and
sent again. Reported: HTTP requests per second and the requests beyond the mail sends themselves.

And readers' choices (`--choices`, issue 20): a real issue (20 stories in 5 sections, rendered by the real
templates through the kept-render cache) sent to the same number of readers twice: once all with the default
choices (one variant, today's single render), once with readers spread over 24 time zones and 20 different sets
of sections turned off. Reported beside each other: renders made (counted at `render_issue`; must equal the
distinct variants, never the readers), wall time, sender CPU and peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "SG.benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(db_url: str, n: int, prefix: str = "reader") -> float:
    """N subscribers with active subscriptions, bulk-inserted; returns seconds."""
    from sqlalchemy import insert

    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueRow, Subscriber, Subscription

    started = time.perf_counter()
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, "bench", "Bench Weekly")
        s.add(IssueRow(newsletter_id=nl.id, number=1, subject="#1", status="approved"))
        newsletter_id = nl.id
    chunk = 50_000
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            conn.execute(insert(Subscriber), [{"id": i + 1, "email": f"{prefix}{i}@example.com",
                                               "name": f"Reader {i}", "fields": {}} for i in range(start, stop)])
            conn.execute(insert(Subscription), [{"id": i + 1, "newsletter_id": newsletter_id, "subscriber_id": i + 1,
                                                 "status": "active"} for i in range(start, stop)])
    return time.perf_counter() - started


def add_issue(db_url: str, number: int) -> None:
    from newsletter.store.db import get_engine, session_scope
    from newsletter.store.models import IssueRow

    with session_scope(get_engine(db_url)) as s:
        s.add(IssueRow(id=number, newsletter_id=1, number=number, subject=f"#{number}", status="approved"))


def message():  # noqa: ANN201
    from newsletter.deliver.mailer import Message

    html = ("<html><body>" + "<p>A story paragraph with a <a href='https://example.com/x'>link</a>.</p>" * 400
            + '<p>Hi %%name%%, <a href="%%unsubscribe_url%%">unsubscribe</a></p></body></html>')
    text = "A story paragraph with a link.\n" * 400 + "Hi %%name%%\nUnsubscribe: %%unsubscribe_url%%\n"
    return Message(subject="Bench Weekly #1", from_address="Bench Weekly <news@example.com>", html=html, text=text,
                   list_id="Bench Weekly <bench.example.com>", categories=("bench",),
                   custom_args={"newsletter": "bench", "issue": "1"})


def run_send_phase(db_url: str, server_url: str, concurrency: int, settle_by: str = "auto", issue: int = 1) -> dict:
    """In a child process: the send itself. Prints one JSON line."""
    from newsletter.deliver.engine import SendOptions
    from newsletter.deliver.ledger import start_send
    from newsletter.deliver.send import run_send
    from newsletter.deliver.sendgrid import SendGridMailer
    from newsletter.store.db import get_engine
    from newsletter.subscribers.tokens import Signer

    engine = get_engine(db_url)
    mailer = SendGridMailer(KEY, server_url, activity_settle_seconds=0, settle_by=settle_by)
    cpu_before = time.process_time()
    started = time.perf_counter()
    send_id = start_send(engine, issue, 1, mailer.name, 1000)
    report = run_send(engine, send_id, 1, "bench", message(), mailer, Signer("bench-secret"),
                      "https://news.example.com", SendOptions(concurrency=concurrency))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"status": report.status, "sent": report.sent_now, "seconds": elapsed, "cpu": cpu,
            "peak_mb": peak_kb / 1024}


SECTIONS = ("AI", "Security", "Open source", "Science", "Business")
ZONES = ("Pacific/Pago_Pago", "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
         "America/Chicago", "America/New_York", "America/Halifax", "America/Sao_Paulo", "Atlantic/South_Georgia",
         "Atlantic/Azores", "Europe/London", "Europe/Paris", "Europe/Athens", "Europe/Moscow", "Asia/Dubai",
         "Asia/Karachi", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney",
         "Pacific/Noumea", "Pacific/Auckland")


def section_sets() -> list[tuple[str, ...]]:
    """20 distinct sets of sections turned off (the empty set, the default, among them)."""
    from itertools import combinations

    sets: list[tuple[str, ...]] = [()]
    for size in (1, 2, 3):
        sets += list(combinations(SECTIONS, size))
    return sets[:20]


def choices_newsletter():  # noqa: ANN201
    from newsletter.config import Newsletter

    return Newsletter.model_validate({
        "name": "Bench Weekly", "slug": "bench", "from_address": "Bench Weekly <news@example.com>",
        "sources": [{"url": f"https://{s.lower().replace(' ', '')}.example/feed", "name": s, "section": s}
                    for s in SECTIONS]})


def populate_choices(db_url: str, n: int, spread: bool) -> float:
    """N readers and a real issue of 20 stories in 5 sections; `spread`: 24 zones x 20 section sets."""
    import hashlib

    from sqlalchemy import insert

    from newsletter.render.variant import variant_key
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueItem, IssueRow, Item, Source, Subscriber, Subscription

    started = time.perf_counter()
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, "bench", "Bench Weekly")
        issue = IssueRow(newsletter_id=nl.id, number=1, subject="Bench Weekly #1", status="approved")
        s.add(issue)
        s.flush()
        for n_story in range(20):
            section = SECTIONS[n_story % len(SECTIONS)]
            source = Source(url=f"https://{section.lower().replace(' ', '')}.example/feed/{n_story}", name=section)
            s.add(source)
            s.flush()
            text = f"Story {n_story} about {section}. " * 12
            item = Item(source_id=source.id, guid=f"g{n_story}", link=f"https://example.com/{n_story}",
                        title=f"Story {n_story}: {section} news of the week", content_text=text,
                        content_hash=hashlib.sha256(text.encode()).hexdigest())
            s.add(item)
            s.flush()
            s.add(IssueItem(issue_id=issue.id, item_id=item.id, position=n_story, title=item.title, url=item.link,
                            source_name=section, summary=text[:400], notes={"section": section}))
        newsletter_id = nl.id
    sets = section_sets()
    chunk = 50_000
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            conn.execute(insert(Subscriber), [{"id": i + 1, "email": f"reader{i}@example.com",
                                               "name": f"Reader {i}", "fields": {}} for i in range(start, stop)])
            rows = []
            for i in range(start, stop):
                off = list(sets[i % len(sets)]) if spread else []
                key = variant_key("html", off)
                rows.append({"id": i + 1, "newsletter_id": newsletter_id, "subscriber_id": i + 1, "status": "active",
                             "sections_off": off or None, "timezone": ZONES[(i // 7) % len(ZONES)] if spread
                             else None, "choice_key": key, "send_variant": key})
            conn.execute(insert(Subscription), rows)
    return time.perf_counter() - started


def run_choices_phase(db_url: str, server_url: str, concurrency: int) -> dict:
    """In a child process: the real issue's send, one render per variant (counted). Prints one JSON line."""
    from newsletter.config import Settings
    from newsletter.deliver.engine import SendOptions
    from newsletter.deliver.issue_mail import issue_message
    from newsletter.deliver.ledger import start_send
    from newsletter.deliver.send import run_send, variant_messages
    from newsletter.deliver.sendgrid import SendGridMailer
    from newsletter.render import cache
    from newsletter.store.db import get_engine
    from newsletter.subscribers.tokens import Signer

    renders: list[str] = []
    real = cache.render_issue

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        renders.append(kwargs.get("variant", cache.DEFAULT).key)
        return real(*args, **kwargs)

    cache.render_issue = counted  # type: ignore[assignment]
    engine = get_engine(db_url)
    nl = choices_newsletter()
    settings = Settings(database_url=db_url, base_url="https://news.example.com", secret_key="bench-secret",
                        templates_dir=Path(tempfile.gettempdir()) / "no-templates-here")
    mailer = SendGridMailer(KEY, server_url, activity_settle_seconds=0)
    cpu_before = time.process_time()
    started = time.perf_counter()
    send_id = start_send(engine, 1, 1, mailer.name, 1000)
    message = issue_message(engine, nl, 1, settings, send_id=send_id)
    report = run_send(engine, send_id, 1, "bench", message, mailer, Signer("bench-secret"),
                      "https://news.example.com", SendOptions(concurrency=concurrency),
                      variant_messages(engine, nl, 1, settings, send_id))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from sqlalchemy import func, select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Send, SendBatch

    with session_scope(engine) as s:
        variants = len(s.get_one(Send, send_id).variants or [])
        batches = s.scalar(select(func.count()).select_from(SendBatch)) or 0
    return {"status": report.status, "sent": report.sent_now, "seconds": elapsed, "cpu": cpu,
            "peak_mb": peak_kb / 1024, "renders": len(renders), "distinct_renders": len(set(renders)),
            "variants": variants, "batches": batches}


def run_floor_phase(db_url: str, server_url: str, concurrency: int, encoder: str, ledger: bool) -> dict:
    """In a child process: the least a sender of this issue can do, written for speed with no guarantee kept.

    The same audience SQL on a raw sqlite3 connection in keyset pages of 1000, the same signed link per
    recipient (HMAC-SHA256, as Signer makes it), the same request body (personalizations with substitutions and
    the List-Unsubscribe header, the issue's HTML and text once per request), serialized by the stdlib `json` or
    `orjson`, POSTed on kept-alive `http.client` connections, `concurrency` requests in flight. With `ledger`,
    also one delivery row per recipient (one multi-row INSERT and one commit per request): the least an
    exactly-once ledger writes. Nothing is checked, retried or recorded beyond that; a lost answer would be a
    silent gap.
    """
    import base64
    import hashlib
    import hmac
    import html
    import http.client
    import sqlite3
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime
    from urllib.parse import urlparse

    from sqlalchemy import bindparam
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from newsletter.deliver.ledger import audience_query

    dumps = __import__("orjson").dumps if encoder == "orjson" else (lambda body: json.dumps(body).encode())
    path = db_url.removeprefix("sqlite:///")
    compiled = (audience_query(1, bindparam("after"), 10**12).limit(1000)  # type: ignore[arg-type]
                .compile(dialect=sqlite_dialect.dialect()))
    sql = compiled.string
    order = compiled.positiontup or []
    msg = message()
    base = {"from": {"email": "news@example.com", "name": "Bench Weekly"}, "subject": msg.subject,
            "content": [{"type": "text/plain", "value": msg.text},
                        {"type": "text/html", "value": msg.html.replace("%%name%%", "%%name:html%%")
                         .replace("%%unsubscribe_url%%", "%%unsubscribe_url:html%%")}],
            "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "List-Id": msg.list_id},
            "categories": list(msg.categories), "custom_args": dict(msg.custom_args)}
    mac = hmac.new(b"bench-secret", digestmod=hashlib.sha256)
    b64 = base64.urlsafe_b64encode
    target = urlparse(server_url)
    local = threading.local()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def post(body: bytes) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        conn.request("POST", "/v3/mail/send", body, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            raise SystemExit(f"floor: SendGrid answered {response.status}")

    cpu_before = time.process_time()
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    # The send's own rows are there already: the floor's go under a send id no send can have (negative), and are
    # deleted afterwards. `1 + max(send_id)` was the next real send's id: once delivery rows lost their foreign
    # keys (migration 0010), the hold-and-cancel run's send found the floor's rows under its own id and stopped on
    # the unique key.
    floor_send = -1 + min(0, db.execute("SELECT min(send_id) FROM delivery").fetchone()[0] or 0)
    sent, after = 0, 0
    params = compiled.construct_params({"after": 0})
    with ThreadPoolExecutor(concurrency) as pool:
        pending: list = []
        while True:
            args = [after if name == "after" else params[name] for name in order]
            rows = db.execute(sql, args).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            people = []
            for _sub, sid, email, name in rows:
                payload = b"u.%d.bench." % sid
                m = mac.copy()
                m.update(payload)
                url = ("https://news.example.com/u/" + b64(payload).rstrip(b"=").decode() + "." +
                       b64(m.digest()[:16]).rstrip(b"=").decode())
                people.append({"to": [{"email": email, "name": name}],
                               "substitutions": {"%%name%%": name, "%%unsubscribe_url%%": url,
                                                 "%%name:html%%": html.escape(name),
                                                 "%%unsubscribe_url:html%%": html.escape(url)},
                               "headers": {"List-Unsubscribe": f"<{url}>"}})
            pending.append(pool.submit(post, dumps({"personalizations": people, **base})))
            if ledger:  # one INSERT of the page's rows, as the ledger writes them (half executemany's time)
                db.execute("BEGIN")
                db.execute("INSERT INTO delivery (send_id, batch_id, subscriber_id, email, message_id, sent_at) "
                           "VALUES " + ", ".join(["(?, ?, ?, ?, NULL, ?)"] * len(rows)),
                           [v for r in rows for v in (floor_send, 1, r[1], r[2], now)])
                db.execute("COMMIT")
            sent += len(rows)
            while len(pending) >= concurrency:
                pending.pop(0).result()
        for future in pending:
            future.result()
    result = {"status": "done", "sent": sent, "seconds": time.perf_counter() - started,
              "cpu": time.process_time() - cpu_before,
              "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if ledger:
        db.execute("DELETE FROM delivery WHERE send_id = ?", (floor_send,))
    return result


def naive_sample(server_url: str, sample: int) -> float:
    """Seconds for `sample` recipients, one API call each, with the official client's Mail helper."""
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Mail

    from newsletter.subscribers.tokens import Signer

    client = SendGridAPIClient(api_key=KEY, host=server_url)
    body = message()
    signer = Signer("bench-secret")
    started = time.perf_counter()
    for i in range(sample):
        url = signer.unsubscribe_url("https://news.example.com", 10_000_000 + i, "bench")
        mail = Mail(from_email="news@example.com", to_emails=f"naive{i}@example.com", subject=body.subject,
                    plain_text_content=body.text.replace("%%name%%", f"Naive {i}").replace("%%unsubscribe_url%%", url),
                    html_content=body.html.replace("%%name%%", f"Naive {i}").replace("%%unsubscribe_url%%", url))
        client.send(mail)
    return time.perf_counter() - started


def stats(server_url: str) -> dict:
    import httpx

    return httpx.get(f"{server_url}/_stats", timeout=60).json()


def send_child(db_url: str, server_url: str, concurrency: int, settle_by: str = "auto", issue: int = 1,
               phase: str = "send", extra: tuple[str, ...] = ()) -> dict:
    phase = "floor" if extra else phase
    child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--database-url", db_url,
                            "--server-url", server_url, "--concurrency", str(concurrency), "--settle-by", settle_by,
                            "--issue", str(issue), *extra],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if child.returncode != 0:
        raise SystemExit(f"send phase failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def reset(server_url: str) -> None:
    import httpx

    httpx.get(f"{server_url}/_reset", timeout=60)


def advance(server_url: str, seconds: float) -> None:
    import httpx

    httpx.post(f"{server_url}/_clock", json={"advance": seconds}, timeout=60)


def configure(server_url: str, validate_every: int, lost_every: int = 0) -> None:
    import httpx

    httpx.get(f"{server_url}/_config", params={"validate_every": validate_every, "lost_every": lost_every},
              timeout=10)


def row(method: str, result: dict, server: dict, before: dict) -> dict[str, str]:
    requests = server["accepted_requests"] - before["accepted_requests"]
    validated = server["schema_validated"] - before["schema_validated"]
    calls = {k: v - before["calls"].get(k, 0) for k, v in server["calls"].items()}
    http = sum(calls.values())
    extra = {k: v for k, v in calls.items() if k != "mail" and v}
    return {
        "benchmark": "send_1m", "method": method, "recipients": f"{result['sent']:,}",
        "seconds": f"{result['seconds']:.1f}", "recipients/s": f"{result['sent'] / result['seconds']:,.0f}",
        "sender CPU s": f"{result['cpu']:.1f}", "peak MB": f"{result['peak_mb']:.0f}",
        "requests": f"{requests:,} ({validated:,} schema-validated)",
        "HTTP req/s": f"{http / result['seconds']:,.1f}",
        "extra requests": ", ".join(f"{v:,} {k}" for k, v in sorted(extra.items())) or "0",
        "server check": f"{server['distinct'] - before['distinct']:,} new addresses, "
                        f"{server['duplicates'] - before['duplicates']} duplicates, "
                        f"{server['discarded'] - before['discarded']:,} copies cancelled",
    }


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--validated-subscribers", type=int, default=100_000,
                        help="size of the second run, where the server schema-validates every request")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight at once")
    parser.add_argument("--validate-every", type=int, default=50,
                        help="in the big run, the server schema-validates every Nth request (limits: all)")
    parser.add_argument("--lost-every", type=int, default=200,
                        help="in the hold-and-cancel run, every Nth answer is lost (the batch is cancelled, resent)")
    parser.add_argument("--no-hold", action="store_true", help="skip the hold-and-cancel run")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--choices", action="store_true",
                        help="only the readers' choices runs: one variant, then 24 zones x 20 section sets")
    parser.add_argument("--phase", default="all", choices=["all", "send", "choices", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--encoder", default="json", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-floor", action="store_true", help="skip the sender floor runs")
    parser.add_argument("--server-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settle-by", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--issue", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "send":
        print(json.dumps(run_send_phase(args.database_url, args.server_url, args.concurrency, args.settle_by,
                                        args.issue)), flush=True)
        return []
    if args.phase == "choices":
        print(json.dumps(run_choices_phase(args.database_url, args.server_url, args.concurrency)), flush=True)
        return []
    if args.choices:
        return choices_runs(args)
    if args.phase == "floor":
        print(json.dumps(run_floor_phase(args.database_url, args.server_url, args.concurrency, args.encoder,
                                         args.ledger)), flush=True)
        return []

    tmp = tempfile.mkdtemp(prefix="send1m-")
    db_url = args.database_url or f"sqlite:///{tmp}/bench.db"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.sendgrid_server", "--port", str(port), "--api-key", KEY,
                               "--no-keep-bodies"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server_url = server.stdout.readline().strip()
    rows: list[dict[str, str]] = []
    try:
        log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        log(f"populating {args.subscribers:,} subscribers ...")
        setup = populate(db_url, args.subscribers)
        log(f"  {setup:.1f}s; sending to {args.subscribers:,} ...")
        configure(server_url, args.validate_every)
        before = stats(server_url)
        big = send_child(db_url, server_url, args.concurrency)
        rows.append(row(f"newsletter send, 1000/request, {args.concurrency} in flight", big, stats(server_url),
                        before))
        if not args.no_floor:
            # The floor, same audience, same server, right after: the same readers again, so counted from zero.
            main_row, ratios = rows[-1], []
            for encoder, ledger in (("json", False), ("orjson", False), ("orjson", True)):
                if encoder == "orjson" and importlib.util.find_spec("orjson") is None:
                    continue
                reset(server_url)
                configure(server_url, args.validate_every)
                before = stats(server_url)
                floor = send_child(db_url, server_url, args.concurrency,
                                   extra=("--encoder", encoder, *(("--ledger",) if ledger else ())))
                label = f"floor: read, sign, {encoder}, POST{', a delivery row each' if ledger else ''} (no guarantee)"
                rows.append(row(label, floor, stats(server_url), before))
                ratios.append(f"{big['seconds'] / floor['seconds']:.2f}x {encoder}{'+rows' if ledger else ''}")
                rows[-1]["x floor"] = f"CPU {floor['cpu'] / big['cpu']:.2f} of ours"
            main_row["x floor"] = "time " + ", ".join(ratios)
        if not args.no_hold:
            log(f"  {big['seconds']:.1f}s; issue #2 to the same {args.subscribers:,}, hold-and-cancel, every "
                f"{args.lost_every}th answer lost ...")
            add_issue(db_url, 2)
            reset(server_url)  # the same readers again: count this issue's copies alone
            configure(server_url, args.validate_every, args.lost_every)
            before = stats(server_url)
            held = send_child(db_url, server_url, args.concurrency, "hold", 2)
            configure(server_url, args.validate_every)
            advance(server_url, 3600)  # past every send_at: the cancelled copies are discarded
            rows.append(row(f"same, hold-and-cancel (no Activity API), every {args.lost_every}th answer lost",
                            held, stats(server_url), before))
        if args.validated_subscribers:
            log(f"  {big['seconds']:.1f}s; sending to {args.validated_subscribers:,}, every request validated ...")
            small_url = f"sqlite:///{tmp}/validated.db"
            populate(small_url, args.validated_subscribers, prefix="validated")
            configure(server_url, 1)
            before = stats(server_url)
            small = send_child(small_url, server_url, args.concurrency)
            rows.append(row("same, server schema-validates every request", small, stats(server_url), before))
        log(f"naive sample of {args.naive_sample:,} ...")
        configure(server_url, 1)
        naive = naive_sample(server_url, args.naive_sample)
        naive_rate = args.naive_sample / naive
        rows.append({
            "benchmark": "send_1m", "method": "naive: one API call per recipient (official client)",
            "recipients": f"{args.subscribers:,} (extrapolated from {args.naive_sample:,})",
            "seconds": f"{args.subscribers / naive_rate:,.0f}", "recipients/s": f"{naive_rate:,.0f}",
            "peak MB": "", "requests": f"{args.subscribers:,} (all schema-validated)", "server check": "",
        })
        rows.append({"benchmark": "send_1m", "method": "(setup, not timed above: bulk insert of subscribers)",
                     "recipients": f"{args.subscribers:,}", "seconds": f"{setup:.1f}"})
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)  # a million-row SQLite file is ~300 MB
    return rows


def choices_runs(args: argparse.Namespace) -> list[dict[str, str]]:
    tmp = tempfile.mkdtemp(prefix="send1m-choices-")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.sendgrid_server", "--port", str(port), "--api-key", KEY,
                               "--no-keep-bodies"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server_url = server.stdout.readline().strip()
    rows: list[dict[str, str]] = []
    try:
        for spread, label in ((False, "real issue, every reader the default (1 variant: today's single render)"),
                              (True, "real issue, readers over 24 time zones x 20 section sets")):
            db_url = f"sqlite:///{tmp}/{'spread' if spread else 'single'}.db"
            print(f"populating {args.subscribers:,} readers ({label}) ...", file=sys.stderr, flush=True)
            populate_choices(db_url, args.subscribers, spread)
            reset(server_url)
            configure(server_url, args.validate_every)
            before = stats(server_url)
            result = send_child(db_url, server_url, args.concurrency, phase="choices")
            out = row(label, result, stats(server_url), before)
            out["renders"] = f"{result['renders']} ({result['distinct_renders']} distinct; {result['variants']} " \
                             f"variants held by the audience; {result['batches']:,} batches)"
            rows.append(out)
            Path(db_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    table = main()
    if table:
        print_table(table)
