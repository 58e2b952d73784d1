"""The web app over real HTTP (`newsletter serve` on loopback, one client, requests one after another).

    python benchmarks/web.py [--requests N]

- archive page: an issue page of the web edition (story cards), served from the page kept in memory, against
  the baseline of the same page made again from the database for each view (what it costs without the kept
  render); the same for a story page (the card and its conversation section), and for a story page with 200
  comments (30 threads with replies): kept, made per view, and as a signed-in reader sees it (made for them);
- editor edit: what one edit costs the editor, as the browser does it: POST the change (saved and rendered
  again), follow the redirect to the issue page (with its preflight), load the desktop and text previews;
- sign-in: one password check with argon2id's default parameters (the cost a guesser pays per try);
- throughput (wrk, 16 connections, when wrk is installed): the unsubscribe page (GET /u/TOKEN) and an archive
  issue page, beside a minimal Starlette app answering a small page under the same uvicorn settings (the floor).

    python benchmarks/web.py --throughput        # only the wrk rows
    python benchmarks/web.py --floor-app PORT    # only the minimal Starlette app, for comparing by hand
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _row(what: str, times: list[float], note: str = "") -> dict[str, str]:
    return {
        "web": what,
        "median ms": f"{statistics.median(times) * 1000:.1f}",
        "best ms": f"{min(times) * 1000:.1f}",
        "per second": f"{1 / statistics.median(times):.0f}",
        "runs": str(len(times)),
        "note": note,
    }


def _time(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm up: templates compiled, connections open
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


WRK_CONNECTIONS = 16
_WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            httpx.get(url)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used so far, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, seconds: float, server_pid: int | None = None) -> tuple[float, float | None]:
    """Requests per second wrk measured, and the server's CPU seconds per request over the run (its own
    process, from /proc: on a loaded machine the rate moves with the load, the CPU per request much less).
    Refuses a run with errors or non-2xx answers (that would be a rate of failures)."""
    before = _process_cpu(server_pid) if server_pid else None
    out = subprocess.run(["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", url],
                         capture_output=True, text=True, check=True).stdout
    after = _process_cpu(server_pid) if server_pid else None
    errors = [m.group(0) for m in _WRK_ERRORS.finditer(out)]
    if errors:
        raise RuntimeError(f"wrk against {url}: {'; '.join(errors)}")
    match = _WRK_RATE.search(out)
    total = _WRK_TOTAL.search(out)
    if match is None or total is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    cpu = (after - before) / int(total.group(1)) if before is not None and after is not None else None
    return float(match.group(1)), cpu


def _cpu_note(cpu: float | None, floor_cpu: float | None) -> str:
    if cpu is None:
        return ""
    ratio = f", {cpu / floor_cpu:.1f}x the floor's" if floor_cpu else ""
    return f"; server CPU {cpu * 1e6:.0f} us/request{ratio}"


def _rate_row(what: str, rate: float, floor: float, note: str) -> dict[str, str]:
    return {"web": what, "per second": f"{rate:.0f}", "note": f"{note}; {rate / floor:.0%} of the floor"}


def floor_app() -> object:
    """The floor: a minimal Starlette app answering one small HTML page, no database, no middleware (served
    with the access log `newsletter serve` writes, see serve_floor)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    body = "<!doctype html><title>floor</title><p>" + "x" * 500 + "</p>"

    async def hello(_request: object) -> HTMLResponse:
        return HTMLResponse(body)

    return Starlette(routes=[Route("/", hello)])


def serve_floor(port: int) -> None:
    import uvicorn

    from newsletter.cli.web import served, uvicorn_options

    # Served as `newsletter serve` serves the app, its access log included.
    uvicorn.run(served(floor_app(), access_log=True), **uvicorn_options("127.0.0.1", port, proxies=[]))


def throughput(base: str, env: dict[str, str], token: str, seconds: float,
               server_pid: int | None = None) -> list[dict[str, str]]:
    """wrk against the unsubscribe and archive pages of a running `newsletter serve` and the floor app. The
    floor is measured before and after the pages and averaged, so a change of load in between falls on both."""
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk): throughput rows skipped", file=sys.stderr)
        return []
    port = _free_port()
    floor = subprocess.Popen([sys.executable, __file__, "--floor-app", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{port}/", floor)
        floor_before, floor_cpu_before = _wrk(f"http://127.0.0.1:{port}/", seconds, floor.pid)
        unsubscribe, unsubscribe_cpu = _wrk(f"{base}/u/{token}", seconds, server_pid)
        archive, archive_cpu = _wrk(f"{base}/archive/city/1", seconds, server_pid)
        floor_after, floor_cpu_after = _wrk(f"http://127.0.0.1:{port}/", seconds, floor.pid)
    finally:
        floor.terminate()
        floor.wait(10)
    floor_rate = (floor_before + floor_after) / 2
    floor_cpu = ((floor_cpu_before + floor_cpu_after) / 2
                 if floor_cpu_before is not None and floor_cpu_after is not None else None)
    note = f"wrk {WRK_CONNECTIONS} connections, {seconds:g} s"
    return [
        {"web": "floor: minimal Starlette app, same uvicorn", "per second": f"{floor_rate:.0f}",
         "note": f"{note}; before/after the pages: {floor_before:.0f}/{floor_after:.0f}"
                 + _cpu_note(floor_cpu, None)},
        _rate_row("unsubscribe page GET, wrk (goal >= 4k)", unsubscribe, floor_rate,
                  note + _cpu_note(unsubscribe_cpu, floor_cpu)),
        _rate_row("archive issue page, wrk (goal >= 3k)", archive, floor_rate,
                  note + _cpu_note(archive_cpu, floor_cpu)),
    ]


def add_comments(site: object, n: int = 200) -> str:
    """`n` comments (one in six a reply) on issue #1's second story by 20 readers; the story's page path."""
    from datetime import timedelta

    from sqlalchemy import select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Comment, IssueItem, Reader, utcnow
    from newsletter.urls import story_path

    with session_scope(site.engine) as session:  # type: ignore[attr-defined]
        items = session.scalars(select(IssueItem).where(IssueItem.issue_id == site.sent_issue_id,  # type: ignore[attr-defined]
                                                        IssueItem.included).order_by(IssueItem.position)).all()
        story = items[1]
        readers = [Reader(email=f"reader{k}@example.com", session_generation=0) for k in range(20)]
        session.add_all(readers)
        session.flush()
        start, tops = utcnow() - timedelta(hours=10), []
        for k in range(n):
            parent = tops[-1] if k % 6 and tops else None
            text = (f"Comment {k}: the dredging changed how the harbour works for the fishing boats, see "
                    f"https://city.example/harbour/{k} for the pictures.\n\nA second paragraph, as people write.")
            comment = Comment(issue_item_id=story.id, reader_id=readers[k % 20].id, parent_id=parent, body=text,
                              status="visible", created_at=start + timedelta(minutes=k))
            session.add(comment)
            session.flush()
            if parent is None:
                tops.append(comment.id)
        return story_path("city", 1, 2, story.title)


def reader_cookie(secret: str, reader_id: int) -> str:
    """A signed-in reader's cookie, made as newsletter.web.readers makes it (for the signed-in row)."""
    import hashlib
    import hmac

    from itsdangerous import URLSafeSerializer

    from newsletter.store.models import utcnow

    key = hmac.new(secret.encode(), b"reader cookie", hashlib.sha256).hexdigest()
    return str(URLSafeSerializer(key, salt="reader-session").dumps({"r": reader_id, "g": 0,
                                                                    "t": utcnow().isoformat()}))


def asgi_cpu(app: object, path: str, runs: int, before: Callable[[], None] | None = None) -> list[float]:
    """CPU seconds (time.process_time) the app spends on GET `path` called in this process as uvicorn calls it
    (the ASGI scope, no socket, no HTTP parsing): the server's own time, not the machine's load."""
    import asyncio

    async def one() -> int:
        status = 0

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)  # type: ignore[operator]
        return status

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(one()) == 200
        out = []
        for _ in range(runs):
            if before is not None:
                before()
            started = time.process_time()
            loop.run_until_complete(one())
            out.append(time.process_time() - started)
        return out
    finally:
        loop.close()


def main() -> list[dict[str, str]]:
    import httpx
    from sqlalchemy import select

    from newsletter.compose.build import load_issue
    from newsletter.store.db import session_scope
    from newsletter.store.models import Comment, IssueRow, Reader, Subscriber, utcnow
    from newsletter.subscribers.tokens import UNSUBSCRIBE, Signer
    from newsletter.web import auth
    from tests.web_support import EDITOR, PASSWORD, add_editor, csrf_of, make_site

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3, help="wrk's run per page")
    parser.add_argument("--floor-app", type=int, metavar="PORT", help="serve only the minimal app on PORT")
    parser.add_argument("--throughput", action="store_true", help="only the wrk rows (floor, unsubscribe, archive)")
    args = parser.parse_args()
    if args.floor_app:
        serve_floor(args.floor_app)
        return []
    runs = args.requests

    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        site = make_site(Path(tmp), base_url=base)
        add_editor(site.engine)
        busy = add_comments(site)
        site.engine.dispose()
        # `newsletter serve` in its own process, as in production: the client here does not share its GIL.
        env = {**os.environ, "NEWSLETTER_DATABASE_URL": site.settings.database_url,
               "NEWSLETTER_SCHEDULES_DIR": str(site.settings.schedules_dir),
               "NEWSLETTER_OUTBOX_DIR": str(site.settings.outbox_dir), "NEWSLETTER_BASE_URL": base,
               "NEWSLETTER_SECRET_KEY": site.settings.secret_key, "NEWSLETTER_PORT": str(port)}
        server = subprocess.Popen([sys.executable, "-m", "newsletter", "serve"], cwd=tmp, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        try:
            _wait_for(f"{base}/signin", server)
            with httpx.Client(base_url=base) as client:
                with session_scope(site.engine) as session:
                    subscriber = session.scalars(select(Subscriber.id)).first()
                token = Signer(site.settings.secret_key).make(UNSUBSCRIBE, subscriber, "city")
                rows.extend(throughput(base, env, token, args.seconds, server.pid))
                if args.throughput:
                    return rows
                static = _time(lambda: client.get("/static/app.css").raise_for_status(), runs)
                rows.append(_row("static file (the floor)", static, "HTTP request, whole"))
                story = "/archive/city/1/1-old-market-reopens"
                archive = _time(lambda: client.get("/archive/city/1").raise_for_status(), runs)
                story_kept = _time(lambda: client.get(story).raise_for_status(), runs)
                counter_row = iter(range(10**9))

                def changed(path: str) -> Callable[[], None]:
                    def fetch() -> None:
                        # A new version of the issue row before each view: the kept page never matches.
                        with session_scope(site.engine) as session:
                            session.get(IssueRow, site.sent_issue_id).preheader = f"version {next(counter_row)}"
                        client.get(path).raise_for_status()
                    return fetch

                rerender = _time(changed("/archive/city/1"), runs)
                story_made = _time(changed(story), runs)
                rows.append(_row("archive issue page, kept render", archive, "HTTP request, whole"))
                rows.append(_row("baseline: same page made per view", rerender, "HTTP request + 1 row update"))
                rows.append(_row("story page, kept render", story_kept, "HTTP request, whole"))
                rows.append(_row("baseline: story page made per view", story_made, "HTTP request + 1 row update"))

                # The story page with 200 comments: the kept page and the kept signed-out conversation, beside
                # both made again for each view (the issue row and one comment changed before each request).
                assert client.get(busy).text.count('<article class="comment') == 200
                busy_kept = _time(lambda: client.get(busy).raise_for_status(), runs)

                def busy_changed() -> None:
                    with session_scope(site.engine) as session:
                        session.get(IssueRow, site.sent_issue_id).preheader = f"version {next(counter_row)}"
                        comment = session.scalars(select(Comment).limit(1)).one()
                        comment.edited_at = utcnow()
                    client.get(busy).raise_for_status()

                busy_made = _time(busy_changed, runs)
                with session_scope(site.engine) as session:
                    reader = session.scalars(select(Reader.id).order_by(Reader.id)).first()
                cookie = reader_cookie(site.settings.secret_key, int(reader or 0))
                with httpx.Client(base_url=base, cookies={"newsletter_reader": cookie}) as signed_in:
                    assert "Sign out (reader0@example.com)" in signed_in.get(busy).text
                    busy_reader = _time(lambda: signed_in.get(busy).raise_for_status(), runs)
                rows.append(_row("story page, 200 comments, kept render", busy_kept,
                                 "HTTP request, whole (goal < 10 ms)"))
                rows.append(_row("baseline: 200-comment page made per view", busy_made,
                                 "HTTP request + 2 row updates"))
                rows.append(_row("story page, 200 comments, signed-in reader", busy_reader,
                                 "HTTP request, whole; made for the reader"))

                # The same page's server time in CPU, the app called in this process (load-independent).
                from newsletter.web.app import create_app

                app = create_app(site.settings, engine=site.engine)

                def bump() -> None:
                    with session_scope(site.engine) as session:
                        session.get(IssueRow, site.sent_issue_id).preheader = f"version {next(counter_row)}"
                        comment = session.scalars(select(Comment).limit(1)).one()
                        comment.edited_at = utcnow()

                rows.append(_row("story page, 200 comments, kept: app CPU", asgi_cpu(app, busy, runs),
                                 "process_time of the ASGI call in process (goal < 10 ms)"))
                rows.append(_row("baseline: made per view: app CPU", asgi_cpu(app, busy, max(10, runs // 4), bump),
                                 "process_time of the ASGI call (rows changed before, not timed)"))

                page = client.get("/signin")
                client.post("/signin", data={"csrf": csrf_of(page.text), "email": EDITOR, "password": PASSWORD})
                issue_url = f"/editor/issues/{site.draft_issue_id}"
                token = csrf_of(client.get(issue_url).text)
                with session_scope(site.engine) as session:
                    item = load_issue(session, site.draft_issue_id).items[0].id
                counter = iter(range(10**9))

                def edit() -> None:
                    client.post(f"{issue_url}/items/{item}/summary",
                                data={"csrf": token, "summary": f"Edited summary number {next(counter)}."},
                                follow_redirects=True).raise_for_status()
                    client.get(f"{issue_url}/preview/email.html").raise_for_status()
                    client.get(f"{issue_url}/preview/text.txt").raise_for_status()

                edits = _time(edit, max(10, runs // 4))
                rows.append(_row("editor edit, page and previews", edits, "POST, redirect, 2 previews"))
        finally:
            server.terminate()
            server.wait(10)
        hashed = auth.hash_password(PASSWORD)
        checks = _time(lambda: auth._verify(hashed, "a wrong password guess"), 5)
        rows.append(_row("sign-in password check (argon2id)", checks, "default parameters"))
        return rows


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
