"""`point_rows`, the web pages' short reads: on SQLite straight through sqlite3, the same rows SQLAlchemy gives
(its own conversions, a DateTime read back as a datetime), every commit seen by the next read, never a write."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, Subscriber
from newsletter.web.conversation import _COUNTS
from newsletter.web.edition import _SENT_VERSION
from newsletter.web.point_read import point_rows
from newsletter.web.public import _LINK_LOOKUP
from tests.web_support import make_site


def _through_sqlalchemy(engine, statement, params) -> list[tuple]:  # noqa: ANN001
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement, params)]


def test_the_same_rows_as_sqlalchemy_and_every_commit_seen(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    engine = site.engine
    with session_scope(engine) as session:
        subscriber = session.scalars(select(Subscriber.id)).first()
    cases = [(_SENT_VERSION, {"slug": "city", "number": 1}), (_SENT_VERSION, {"slug": "city", "number": 2}),
             (_COUNTS, {"issue_id": site.sent_issue_id}),
             (_LINK_LOOKUP, {"subscriber_id": subscriber, "slug": "city"}),
             (_LINK_LOOKUP, {"subscriber_id": subscriber, "slug": "nowhere"})]
    for statement, params in cases:
        assert point_rows(engine, statement, params) == _through_sqlalchemy(engine, statement, params), params
    version = point_rows(engine, _SENT_VERSION, {"slug": "city", "number": 1})
    assert len(version) == 1 and isinstance(version[0][1], datetime)
    assert point_rows(engine, _SENT_VERSION, {"slug": "city", "number": 2}) == []  # a draft is not public

    # Another connection commits: the very next read sees it (no snapshot is held between reads).
    with session_scope(engine) as session:
        session.execute(update(IssueRow).where(IssueRow.id == site.sent_issue_id)
                        .values(rendered_hash="changed", updated_at=datetime(2030, 1, 2, 3, 4, 5)))
    again = point_rows(engine, _SENT_VERSION, {"slug": "city", "number": 1})
    # (id, updated_at, rendered_hash, the newsletter's latest send): the kept page's version
    assert [tuple(again[0][:3])] == [(site.sent_issue_id, datetime(2030, 1, 2, 3, 4, 5), "changed")]
    assert again != version


def test_a_point_read_never_writes(tmp_path: Path) -> None:
    from newsletter.web import point_read

    site = make_site(tmp_path)
    point_rows(site.engine, _COUNTS, {"issue_id": site.sent_issue_id})
    reader = point_read._reader(site.engine, str(tmp_path / "newsletter.db"))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM subscriber")


def test_kept_answers_follow_every_commit_of_any_connection(tmp_path: Path) -> None:
    import subprocess
    import sys

    from newsletter.store.models import Comment, IssueItem, Reader
    from newsletter.web import point_read

    site = make_site(tmp_path)
    engine = site.engine
    counts = {"issue_id": site.sent_issue_id}
    assert point_rows(engine, _COUNTS, counts, kept=True) == []
    with session_scope(engine) as session:  # another connection of this process commits
        item = session.scalars(select(IssueItem.id).where(IssueItem.issue_id == site.sent_issue_id)).first()
        reader = Reader(email="r@example.com", session_generation=0)
        session.add(reader)
        session.flush()
        session.add(Comment(issue_item_id=item, reader_id=reader.id, body="first", status="visible"))
    assert point_rows(engine, _COUNTS, counts, kept=True) == [(item, 1)]
    assert point_rows(engine, _COUNTS, counts, kept=True) == [(item, 1)]  # kept: no commit since
    # Another process commits (as a send or `newsletter readers forget` would): the next read sees it.
    path = str(tmp_path / "newsletter.db")
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute(\"UPDATE comment SET status = 'hidden'\"); c.commit()", path], check=True)
    assert point_rows(engine, _COUNTS, counts, kept=True) == []
    assert point_rows(engine, _COUNTS, counts, kept=True) == _through_sqlalchemy(engine, _COUNTS, counts)
    # Bounded: past the limit the kept answers are dropped, and each is read again.
    for number in range(point_read.KEPT_LIMIT + 10):
        point_rows(engine, _SENT_VERSION, {"slug": "city", "number": number}, kept=True)
    assert len(point_read._local(engine, path).kept) <= point_read.KEPT_LIMIT
    assert point_rows(engine, _COUNTS, counts, kept=True) == []
