"""Statements run on the driver (newsletter.store.driver_sql) store and read what SQLAlchemy's own execution does."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite

from newsletter.store import driver_sql
from newsletter.store.db import get_engine
from newsletter.store.models import SingleLine
from tests.conftest import BOTH_DATABASES

META = MetaData()
THING = Table("driver_thing", META, Column("id", Integer, primary_key=True), Column("title", SingleLine(20)),
              Column("at", DateTime), Column("kind", String(20)), Column("n", Integer))
MADE = THING.insert().values(id=bindparam("new_id"), title=bindparam("new_title"), at=bindparam("new_at"),
                             kind="fixed", n=bindparam("new_n")).returning(THING.c.id)
BUMP = update(THING).where(THING.c.id == bindparam("which")).values(n=THING.c.n + bindparam("by"))
AFTER = select(THING.c.id, THING.c.n).where(THING.c.at > bindparam("since", type_=DateTime),
                                             THING.c.kind == "fixed").order_by(THING.c.id)
WHEN = datetime(2026, 12, 2, 15, 4, 5, 123456)
TITLES = ["Plain", "Two\nlines  and\ttabs", " padded ", "é" * 15, None]


@BOTH_DATABASES
def test_driver_runs_store_and_read_what_sqlalchemy_runs_do(db_url: str) -> None:
    engine = get_engine(db_url)
    META.create_all(engine)
    with engine.begin() as conn:
        for i, title in enumerate(TITLES):
            values = {"new_id": i, "new_title": title, "new_at": WHEN, "new_n": i}
            assert driver_sql.scalar(conn, MADE, values) == i  # RETURNING on the driver
            conn.execute(MADE, {**values, "new_id": 100 + i})  # the same through SQLAlchemy
        driver_sql.execute(conn, BUMP, {"which": 1, "by": 10})
        conn.execute(BUMP, {"which": 101, "by": 10})
    with engine.connect() as conn:
        # As stored: the driver's own rows, past any type's processing of results.
        stored = {row[0]: row[1:] for row in conn.exec_driver_sql("SELECT id, title, at, kind, n FROM driver_thing")}
        since = datetime(2026, 12, 2, 15, 4, 5)
        expected = [tuple(r) for r in conn.execute(AFTER, {"since": since})]
        assert driver_sql.rows(conn, AFTER, {"since": since}) == expected and len(expected) == 2 * len(TITLES)
    for i in range(len(TITLES)):
        assert stored[i] == stored[100 + i]  # the title cleaned to one line, the datetime, the fixed kind
    assert stored[2][0] == "padded" and stored[3][0] == "é" * 15 and stored[1][3] == 11
    META.drop_all(engine)


def test_what_the_driver_cannot_run_as_compiled_is_refused() -> None:
    dialect = sqlite.dialect()
    with pytest.raises(ValueError, match="expanding IN"):
        driver_sql.compile_for(dialect, select(THING.c.id).where(THING.c.id.in_([1, 2])))
    defaulted = Table("driver_defaulted", MetaData(), Column("id", Integer, primary_key=True),
                      Column("n", Integer, default=lambda: 7))
    with pytest.raises(ValueError, match="Python-side default"):
        driver_sql.compile_for(dialect, insert(defaulted).values(id=bindparam("new_id")))
    with pytest.raises(KeyError, match="since"):
        driver_sql.compile_for(dialect, AFTER).parameters({})
