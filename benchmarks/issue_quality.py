"""Issue quality: an issue built from real feeds, checked the way a reader would see it.

    python benchmarks/issue_quality.py                # the demo and ../shared/corpus/feeds
    python benchmarks/issue_quality.py --corpus DIR   # another folder of feed files

Each source (the demo's sample feeds; the feed files of the corpus, read through file:// URLs as a user's local
feed would be) is collected into a fresh SQLite database, built into an issue and rendered. The corpus's dates
are months old, so its build runs on a test clock: `now` is a day after its newest item and the window reaches
back to its oldest one (the product's own build arguments; nothing is shifted in the product). Printed per
source, every check as found/total, and the exit status is 1 when one fails:

- related-in-issue: related links pointing at a story of the same issue (or a copy merged into one): must be 0;
- duplicates: pairs of stories that are one story (same page, same opening words, same summary): must be 0;
- garbled: headlines or the subject with a `user:` prefix, a `...` truncation, HTML remnants, doubled spaces,
  glued sentences ("friends!I am"), or a subject over SUBJECT_CHARS: must be 0;
- pictures: stories shown with a picture, over the stories whose feed item carries one (media:thumbnail, an
  image enclosure, an http(s) <img> of the body): must be all of them, and at least one when any carries one;
- HTML size and `newsletter check` (the preflight) of the rendered issue.

The checks themselves (`check_issue`) are also run by tests/test_issue_quality.py on the demo, which needs no
corpus.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine  # noqa: E402

from newsletter.compose.issue import Issue  # noqa: E402
from newsletter.config import Newsletter  # noqa: E402
from newsletter.editorial.cluster import canonical_url, opening_key  # noqa: E402
from newsletter.editorial.headline import SUBJECT_CHARS  # noqa: E402

CORPUS = next((p / "shared" / "corpus" / "feeds" for p in ROOT.parents[:2] if (p / "shared" / "corpus").is_dir()),
              ROOT.parent / "shared" / "corpus" / "feeds")
FEED_SUFFIXES = (".xml", ".atom", ".rss")

_GARBLED = [
    ("user: prefix", re.compile(r"^[a-z0-9][a-z0-9-]{1,49}:(?!//)\S")),
    ("... truncation", re.compile(r"(?:\.{3}|…)\s*$")),
    ("HTML remnant", re.compile(r"<[a-zA-Z/!][^>]*>|&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,6});")),
    ("doubled whitespace", re.compile(r"\s{2,}")),
    ("glued sentence", re.compile(r"[a-z][!?][A-Z]")),
]


@dataclass
class Quality:
    stories: int = 0
    related_links: int = 0
    related_in_issue: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    garbled: list[str] = field(default_factory=list)
    carrying_picture: int = 0
    with_picture: int = 0
    missing_picture: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        pictures_ok = not self.missing_picture and (self.with_picture > 0 or self.carrying_picture == 0)
        return not (self.related_in_issue or self.duplicates or self.garbled) and pictures_ok

    def problems(self) -> list[str]:
        out = [f"related link into the issue: {p}" for p in self.related_in_issue]
        out += [f"duplicate stories: {p}" for p in self.duplicates]
        out += [f"garbled: {p}" for p in self.garbled]
        out += [f"no picture although its feed item has one: {p}" for p in self.missing_picture]
        return out


def garbled(text: str, *, subject: bool = False) -> list[str]:
    """What is wrong with a headline (or, with `subject`, a subject line) as a reader would see it. A subject
    may end in the one "…" of its own cut at a word to fit the inbox (fit_subject), never in a feed's "..."."""
    checked = text.removesuffix("…") if subject else text
    found = [name for name, pattern in _GARBLED if pattern.search(checked)]
    if not text.strip():
        found.append("empty")
    if subject and len(text) > SUBJECT_CHARS:
        found.append(f"{len(text)} characters, over {SUBJECT_CHARS}")
    return found


def carries_picture(image_url: str | None, content_html: str, title: str) -> bool:
    """Whether the feed item offers a picture a reader could be shown: the product's own reading of it."""
    from newsletter.compose.build import first_picture
    from newsletter.urls import web_url

    return bool(web_url(image_url)) or first_picture(content_html, title)[0] is not None


def check_issue(issue: Issue, pictures: dict[int, bool]) -> Quality:
    """The reader's checks on a built issue. `pictures`: item id -> whether its feed item carries a picture."""
    q = Quality()
    stories = issue.stories
    q.stories = len(stories)
    own: dict[str, str] = {}
    for s in stories:
        for url in [s.url, *(c.url for c in s.also_covered_by)]:
            if url:
                own[canonical_url(url)] = s.title
    for s in stories:
        for r in s.related:
            q.related_links += 1
            if r.url and canonical_url(r.url) in own:
                q.related_in_issue.append(f"{s.title!r} -> {r.title!r} (story {own[canonical_url(r.url)]!r})")
    for i, a in enumerate(stories):
        for b in stories[i + 1:]:
            same = []
            if a.url and canonical_url(a.url) == canonical_url(b.url):
                same.append("same page")
            if a.summary.strip() and " ".join(a.summary.split()) == " ".join(b.summary.split()):
                same.append("same summary")
            key_a, key_b = opening_key(a.summary), opening_key(b.summary)
            if key_a and key_a == key_b and "same summary" not in same:
                same.append("same opening")
            if same:
                q.duplicates.append(f"{a.title!r} / {b.title!r}: {', '.join(same)}")
    for s in stories:
        q.garbled += [f"headline {s.title!r}: {why}" for why in garbled(s.title)]
        if s.item_id is not None and pictures.get(s.item_id):
            q.carrying_picture += 1
            if s.image_url:
                q.with_picture += 1
            else:
                q.missing_picture.append(repr(s.title))
    q.garbled += [f"subject {issue.subject!r}: {why}" for why in garbled(issue.subject, subject=True)]
    return q


@dataclass
class Built:
    label: str
    quality: Quality
    html_bytes: int
    preflight: str
    preflight_failed: bool
    seconds: float


def build_from_feeds(label: str, feeds: list[Path], folder: Path, *, clock: datetime | None = None) -> Built:
    """Collect `feeds` (file paths) into a fresh database in `folder`, build an issue at `clock` (a test clock:
    by default a day after the newest item, the window back to the oldest), render it and check it."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from newsletter.collect.run import collect
    from newsletter.compose.build import build_issue
    from newsletter.config import load_newsletter
    from newsletter.store.db import make_engine, upgrade
    from newsletter.store.models import Item

    started = time.perf_counter()
    sources = "\n".join(f'[[sources]]\nname = "{p.stem}"\nurl = "{p.resolve().as_uri()}"\n' for p in feeds)
    schedule = folder / "quality.toml"
    schedule.write_text(f'name = "Quality Check"\nslug = "quality"\nfrom_address = "Q <q@example.com>"\n'
                        f'postal_address = "1 Test Street"\n\n{sources}\n[digest]\nmax_items = 10\n'
                        "fetch_articles_under_words = 0  # offline: the feeds' own text\n", encoding="utf-8")
    nl = load_newsletter(schedule)
    engine = make_engine(f"sqlite:///{folder / 'quality.db'}")
    upgrade(engine)
    collect(engine, [nl], parallel_parse=False)
    with Session(engine) as session:
        oldest, newest = session.execute(select(func.min(Item.published_at), func.max(Item.published_at))).one()
    now = clock or ((newest or datetime.now(UTC).replace(tzinfo=None)) + timedelta(days=1))
    since = (oldest - timedelta(days=1)) if clock is None and oldest else None
    built = build_issue(engine, nl, now=now, since=since)
    if built.issue_id is None:
        raise SystemExit(f"{label}: no issue built: {'; '.join(built.problems)}")
    try:
        return check_built(label, engine, built.issue_id, nl, started)
    finally:
        engine.dispose()


def check_built(label: str, engine: Engine, issue_id: int, nl: Newsletter, started: float) -> Built:
    """Check a built issue as stored and as rendered (the preflight of `newsletter check`)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from newsletter.compose.build import load_issue
    from newsletter.render.cache import rendered_issue
    from newsletter.render.check import preflight
    from newsletter.store.models import Item

    with Session(engine) as session:
        issue = load_issue(session, issue_id)
        assert issue is not None
        ids = [s.item_id for s in issue.stories if s.item_id is not None]
        pictures = {it.id: carries_picture(it.image_url, it.content_html, it.title)
                    for it in session.scalars(select(Item).where(Item.id.in_(ids)))}
    quality = check_issue(issue, pictures)
    rendered = rendered_issue(engine, issue_id, nl, base_url="https://news.example.com")
    report = preflight(rendered)
    return Built(label, quality, len(rendered.html.encode("utf-8")), report.summary(), report.failed,
                 time.perf_counter() - started)


def build_demo(folder: Path) -> Built:
    """The real `newsletter demo` (its feeds, schedule and build), then the same checks."""
    from newsletter.config import load_newsletter
    from newsletter.demo.run import run_demo
    from newsletter.store.db import make_engine

    started = time.perf_counter()
    result = run_demo(folder)
    engine = make_engine(f"sqlite:///{result.folder / 'demo.db'}")
    try:
        return check_built("demo", engine, result.issue_id,
                           load_newsletter(result.folder / "schedules" / "demo.toml"), started)
    finally:
        engine.dispose()


def row(b: Built) -> dict[str, str]:
    q = b.quality
    return {
        "benchmark": "issue_quality",
        "issue": b.label,
        "stories": str(q.stories),
        "related links": str(q.related_links),
        "related-in-issue": str(len(q.related_in_issue)),
        "duplicates": str(len(q.duplicates)),
        "garbled": str(len(q.garbled)),
        "pictures": f"{q.with_picture}/{q.carrying_picture}",
        "html": f"{b.html_bytes / 1024:.1f} KB",
        "preflight": "FAILED" if b.preflight_failed else "passed",
        "verdict": "ok" if q.ok and not b.preflight_failed else "FAIL",
        "s": f"{b.seconds:.1f}",
    }


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a folder of feed files")
    args = parser.parse_args(sys.argv[1:])
    results: list[Built] = []
    with tempfile.TemporaryDirectory(prefix="issue-quality-") as tmp:
        base = Path(tmp)
        results.append(build_demo(base / "demo"))
        feeds = sorted(p for p in args.corpus.glob("*") if p.suffix in FEED_SUFFIXES) if args.corpus.is_dir() else []
        if feeds:
            (base / "corpus").mkdir()
            results.append(build_from_feeds(f"corpus ({len(feeds)} feeds)", feeds, base / "corpus"))
        else:
            print(f"corpus left out: no feed files in {args.corpus}", file=sys.stderr)
    for b in results:
        for problem in b.quality.problems():
            print(f"{b.label}: {problem}", file=sys.stderr)
        if b.preflight_failed:
            print(f"{b.label}: {b.preflight}", file=sys.stderr)
    return [row(b) for b in results]


if __name__ == "__main__":
    from benchmarks.table import print_table

    rows = main()
    print_table(rows)
    sys.exit(0 if all(r["verdict"] == "ok" for r in rows) else 1)
