"""`newsletter demo`: the whole job, offline, on the embedded default (SQLite and the outbox).

The sample feeds ship inside the package with relative dates ({RFC822:26} = 26 hours ago) so the demo always
has a week of fresh news. Each run starts the demo folder's database and outbox afresh, so running it twice
works and shows the same thing.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib import resources
from pathlib import Path

from newsletter.collect.run import CollectReport, collect
from newsletter.compose.build import build_issue
from newsletter.config import Settings, load_newsletter
from newsletter.deliver.outbox import OutboxMailer
from newsletter.deliver.send import SendReport, send_issue
from newsletter.render.cache import rendered_issue
from newsletter.store.db import ensure_newsletter, make_engine, session_scope, upgrade
from newsletter.subscribers.manage import add_subscriber

DEMO_SUBSCRIBERS = [("ada@example.com", "Ada Lovelace"), ("grace@example.org", "Grace Hopper"),
                    ("linus@example.net", None)]
DEMO_INTRO = ("Welcome to the **demo issue**: every story below was collected from sample feeds, "
              "summarized and given its key quotes, offline.")
_PLACEHOLDER = re.compile(r"\{(RFC822|ISO):(\d+)\}")


@dataclass
class DemoResult:
    folder: Path
    collect: CollectReport
    issue_id: int
    stories: int
    send: SendReport
    html_path: Path
    text_path: Path
    eml_paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _dated(text: str, now: datetime) -> str:
    def sub(match: re.Match[str]) -> str:
        when = now - timedelta(hours=int(match.group(2)))
        return format_datetime(when) if match.group(1) == "RFC822" else when.strftime("%Y-%m-%dT%H:%M:%SZ")

    return _PLACEHOLDER.sub(sub, text)


def write_feeds(folder: Path, now: datetime) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in sorted(resources.files("newsletter.demo").joinpath("feeds").iterdir(), key=lambda p: p.name):
        if entry.name.endswith((".xml", ".atom", ".rss")):
            path = folder / entry.name
            path.write_text(_dated(entry.read_text(encoding="utf-8"), now), encoding="utf-8")
            written.append(path)
    return written


def write_schedule(folder: Path, feeds: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {"tech-wire": "Tech Wire", "science-daily": "Science Daily Digest",
             "open-source-times": "Open Source Times"}
    sources = "\n".join(
        f'[[sources]]\nname = "{names.get(p.stem, p.stem)}"\nurl = "{p.resolve().as_uri()}"\n' for p in feeds
    )
    path = folder / "demo.toml"
    path.write_text(
        f'''name = "The Demo Digest"
slug = "demo"
from_address = "The Demo Digest <digest@demo.example>"
description = "A week of technology and science news, summarized."
postal_address = "Demo Digest, 1 Example Street, Springfield"

{sources}
[digest]
window_days = 7
max_items = 10
intro = "{DEMO_INTRO}"
fetch_articles_under_words = 0  # the sample feeds carry full text: stay offline
''',
        encoding="utf-8",
    )
    return path


def run_demo(folder: Path, *, base_url: str = "http://localhost:8000") -> DemoResult:
    folder = folder.resolve()
    for stale in ("demo.db", "demo.db-wal", "demo.db-shm", "outbox", "preview"):
        target = folder / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    now = datetime.now(UTC)
    feeds = write_feeds(folder / "feeds", now)
    nl = load_newsletter(write_schedule(folder / "schedules", feeds))
    settings = Settings(database_url=f"sqlite:///{folder / 'demo.db'}", outbox_dir=folder / "outbox",
                        schedules_dir=folder / "schedules", templates_dir=Path("templates"), base_url=base_url)
    engine = make_engine(settings.database_url)  # not the cached engine: the database file was just replaced
    upgrade(engine)
    report = collect(engine, [nl], parallel_parse=False)
    built = build_issue(engine, nl)
    if built.issue_id is None:  # the demo's feeds always have stories: this is a bug, not bad input
        raise RuntimeError(f"the demo built no issue: {'; '.join(built.problems) or 'nothing new'}")
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for email, name in DEMO_SUBSCRIBERS:
            add_subscriber(session, row, email, name=name)
    templates = settings.templates_dir if settings.templates_dir.is_dir() else None
    rendered = rendered_issue(engine, built.issue_id, nl, base_url=base_url, templates_dir=templates)
    preview = folder / "preview"
    preview.mkdir(parents=True, exist_ok=True)
    html_path, text_path = preview / f"issue-{built.number}.html", preview / f"issue-{built.number}.txt"
    html_path.write_text(rendered.html, encoding="utf-8")
    text_path.write_text(rendered.text, encoding="utf-8")
    sent = send_issue(engine, nl, built.issue_id, OutboxMailer(settings.outbox_dir), settings)
    emls = sorted((settings.outbox_dir / nl.slug).rglob("*.eml"))
    engine.dispose()
    return DemoResult(folder, report, built.issue_id, built.items, sent, html_path, text_path, emls,
                      built.problems)
