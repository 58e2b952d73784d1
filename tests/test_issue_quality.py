"""The demo issue as a reader checks it: no related link into the same issue, no story twice, no garbled
headline or subject, a picture wherever the feed item carries one, under 60 KB and through the preflight.

The same checks run on ../shared/corpus/feeds in benchmarks/issue_quality.py (the corpus is not part of a
checkout: this test needs only the demo's own sample feeds). The checks are shown to fail on an issue that has
each fault, so a pass means something.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from benchmarks.issue_quality import build_demo, check_issue, garbled
from newsletter.compose.issue import Issue, Link, Story

BUDGET = 60 * 1024  # issue 16: the demo issue with its pictures stays under 60 KB of HTML


def test_the_demo_issue_passes_every_readers_check(tmp_path: Path) -> None:
    built = build_demo(tmp_path / "demo")
    q = built.quality
    assert q.stories >= 8
    assert q.problems() == [] and q.ok
    assert q.carrying_picture >= 1 and q.with_picture == q.carrying_picture  # the demo feeds carry two
    assert built.html_bytes < BUDGET, f"{built.html_bytes} bytes"
    assert not built.preflight_failed, built.preflight


def _story(n: int, title: str, url: str, summary: str, **extra: object) -> Story:
    return Story(id=n, item_id=n, position=n, included=True, title=title, url=url, source="Desk", author=None,
                 published=None, summary=summary, **extra)  # type: ignore[arg-type]


def test_the_checks_find_each_fault_a_reader_would_see() -> None:
    text = "The harbour bridge reopened on Monday after six months of repairs, the council said."
    stories = [
        _story(1, "Bridge reopens", "https://desk.example/bridge", text,
               related=[Link(title="Tram approved", url="https://desk.example/tram?utm_source=rss")]),
        _story(2, "Tram approved", "https://desk.example/tram", "The county approved the tram line."),
        _story(3, "Bridge reopens after repairs", "https://other.example/bridge-copy", text),  # a reblog
        _story(4, "sarahseeandersen:Hi friends!I am so happy to announce that my...", "https://t.example/1",
               "A new book."),
        _story(5, "Heron on the quay", "https://desk.example/heron", "A heron at dawn."),
    ]
    issue = Issue(id=1, newsletter="town", number=1, subject="Town #1: Bridge  reopens", status="draft",
                  created_at=datetime(2026, 11, 1), items=stories)
    q = check_issue(issue, {5: True})
    assert len(q.related_in_issue) == 1 and "Tram approved" in q.related_in_issue[0]
    assert len(q.duplicates) == 1 and "same summary" in q.duplicates[0]
    found = " ".join(q.garbled)
    assert all(f": {why}" in found for why in ("user: prefix", "... truncation", "glued sentence")), found
    assert any(g.startswith("subject") and "doubled whitespace" in g for g in q.garbled)
    assert q.missing_picture == ["'Heron on the quay'"] and not q.ok
    # A subject cut at a word to fit the inbox ends in one "…": that is not a feed's truncation.
    assert garbled("Town #1: Hi friends! I am so happy to announce that my…", subject=True) == []
    assert garbled("x" * 90, subject=True) == ["90 characters, over 70"]
