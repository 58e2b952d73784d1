"""The web app over real HTTP (`newsletter serve` on loopback, one client, requests one after another).

    python benchmarks/web.py [--requests N]

- archive page: an issue page of the public archive, served from the render kept with the issue, against the
  baseline of the same page rendering the issue again for each view (what it costs without the kept render);
- editor edit: what one edit costs the editor, as the browser does it: POST the change (saved and rendered
  again), follow the redirect to the issue page (with its preflight), load the desktop and text previews;
- sign-in: one password check with argon2id's default parameters (the cost a guesser pays per try).
"""

from __future__ import annotations

import argparse
import os
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


def main() -> list[dict[str, str]]:
    import httpx

    from newsletter.compose.build import load_issue
    from newsletter.store.db import session_scope
    from newsletter.store.models import IssueRow
    from newsletter.web import auth
    from tests.web_support import EDITOR, PASSWORD, add_editor, csrf_of, make_site

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    runs = args.requests

    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        site = make_site(Path(tmp), base_url=base)
        add_editor(site.engine)
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
            with httpx.Client(base_url=base) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        client.get("/signin")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                static = _time(lambda: client.get("/static/app.css").raise_for_status(), runs)
                rows.append(_row("static file (the floor)", static, "HTTP request, whole"))
                archive = _time(lambda: client.get("/archive/city/1").raise_for_status(), runs)
                with session_scope(site.engine) as session:  # as if no render had been kept with the issue
                    session.get(IssueRow, site.sent_issue_id).html = None
                rerender = _time(lambda: client.get("/archive/city/1").raise_for_status(), runs)
                rows.append(_row("archive issue page, kept render", archive, "HTTP request, whole"))
                rows.append(_row("baseline: same page rendered per view", rerender, "HTTP request, whole"))

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
