"""Where a web handler runs a short read of the database: on the event loop or in the thread pool, and how.

For SQLite a point read by an indexed key takes tens of microseconds, and in WAL mode (store/db.py sets it)
readers never wait for a writer; handing it to a worker thread costs more than the query itself (the hop and
the GIL passed back and forth: 2-3x the CPU of the whole request, measured in benchmarks/web.py). For
PostgreSQL each query is a network round trip, which must not hold the loop, so it goes to the pool.
Use it only for reads that touch a few rows by index; anything that renders, writes or scans stays in
`run_in_threadpool`.

`point_rows` runs such a read. On SQLite it goes straight to sqlite3, on a read-only connection kept per thread
(in autocommit: every read sees what was committed before it, and holds no snapshot after it), with the SQL
SQLAlchemy compiles for the statement (once) and SQLAlchemy's own bind and result conversions for its columns:
the same rows as `connection.execute`, without the checkout, the transaction and the result object around
them, which cost more than the query (tens of microseconds of a ~100-microsecond request). Elsewhere it is
`connection.execute`.

`point_rows(..., kept=True)` is for reads whose answer many requests share (an issue's version, its comment
counts): on SQLite the rows are kept per thread under the database's `PRAGMA data_version`, which changes on
that connection whenever any other connection, in this process or another, commits a change to the database
(this one never writes). A kept answer is served only while no commit has happened since it was read, so it is
the answer the query would give; any write anywhere drops them all. The pragma costs ~2 microseconds, the issue
page's count of 200 comments ~70. Elsewhere (PostgreSQL) nothing is kept. Not for reads per reader (an
unsubscribe link's subscription): each is asked for once, and would only fill the memory.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from newsletter.store import driver_sql

T = TypeVar("T")
AnySelect = Select[*tuple[Any, ...]]


async def point_read(engine: Engine, read: Callable[..., T], *args: object) -> T:
    if engine.dialect.name == "sqlite":
        return read(*args)
    return await run_in_threadpool(read, *args)


@dataclass(frozen=True)
class _Compiled:
    driver: driver_sql.Compiled  # the SQL and its parameters (newsletter.store.driver_sql)
    results: tuple[Callable[[Any], Any] | None, ...]


_compiled: dict[int, tuple[AnySelect, _Compiled]] = {}  # by id(statement), the statement held so ids stay apart
_readers: weakref.WeakKeyDictionary[Engine, threading.local] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()
KEPT_LIMIT = 256  # kept answers per thread and engine; past that they are dropped and read again


def _compile(engine: Engine, statement: AnySelect) -> _Compiled:
    kept = _compiled.get(id(statement))
    if kept is not None and kept[0] is statement:
        return kept[1]
    dialect = engine.dialect
    made = _Compiled(driver_sql.compile_for(dialect, statement),
                     tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                           for c in statement.selected_columns))
    _compiled[id(statement)] = (statement, made)
    return made


def _sqlite_path(engine: Engine) -> str | None:
    database = engine.url.database
    return database if database and database != ":memory:" and not database.startswith("file:") else None


def _local(engine: Engine, path: str) -> threading.local:
    local = _readers.get(engine)  # the lock only to make one: every request after the first finds it
    if local is None:
        with _readers_lock:
            local = _readers.get(engine)
            if local is None:
                local = _readers[engine] = threading.local()
    if getattr(local, "conn", None) is None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit: no snapshot is kept
        conn.execute("PRAGMA query_only=ON")
        local.conn, local.version, local.kept = conn, None, {}
    return local


def _reader(engine: Engine, path: str) -> sqlite3.Connection:
    return _local(engine, path).conn


def point_rows(engine: Engine, statement: AnySelect, params: Mapping[str, Any], *,
               kept: bool = False) -> list[tuple[Any, ...]]:
    """The rows of `statement` (a short indexed read) with `params`, as tuples. `kept`: see the module's doc."""
    path = _sqlite_path(engine) if engine.dialect.name == "sqlite" else None
    if path is None:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(statement, dict(params))]
    c = _compile(engine, statement)
    sql, values = c.driver.sql, c.driver.parameters(params)
    local = _local(engine, path)
    reader: sqlite3.Connection = local.conn
    if kept:
        # Read before the query: a commit in between changes it, so those rows are never served as this version.
        version = reader.execute("PRAGMA data_version").fetchone()[0]
        if version != local.version or len(local.kept) >= KEPT_LIMIT:
            local.kept.clear()
            local.version = version
        key = (id(statement), tuple(values))
        rows: list[tuple[Any, ...]] | None = local.kept.get(key)
        if rows is None:
            rows = local.kept[key] = _converted(c, reader.execute(sql, values).fetchall())
        return list(rows)
    return _converted(c, reader.execute(sql, values).fetchall())


def _converted(c: _Compiled, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    if any(c.results):
        return [tuple(process(v) if process else v for process, v in zip(c.results, row, strict=True))
                for row in rows]
    return rows
