"""SQLAlchemy Core statements compiled once and run on the driver's cursor, with each bind's own type processing.

For the statements run once per batch or per row on a hot path (a send's ledger, a collect's inserts, the
audience pages): building the statement, its cache key and SQLAlchemy's parameter and result handling cost more
than the database's own work there. A statement built once, with `bindparam`s for what changes, is compiled
here once per dialect; each run hands the driver the compiled SQL and parameters that went through the same
bind processors SQLAlchemy would apply (SQLite's datetime text, SingleLine's cleaning...), so the stored values
are the ones `connection.execute(statement, params)` stores. Results come back as the driver's plain tuples,
with no result processing: callers select columns whose raw values are what they need (integers, text).

What it cannot take is refused when it is compiled (ValueError), never run differently: an expanding IN, or a
column left to a Python-side default (SQLAlchemy's execution computes those). A run without a value for one of
the statement's parameters raises KeyError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class Compiled:
    """One statement compiled for one dialect: the SQL and how to turn named values into the driver's parameters."""

    sql: str
    names: tuple[str, ...]  # every bind, in the driver's order when it is positional
    positional: bool
    fixed: Mapping[str, Any]  # binds with a value of their own (literals in the statement), processed like the rest
    processors: Mapping[str, Callable[[Any], Any]]  # the binds whose type processes the value

    def __post_init__(self) -> None:
        # Where in the driver's parameters each processing goes (the same name may occur twice).
        object.__setattr__(self, "_processed", tuple(
            (i, self.processors[name]) for i, name in enumerate(self.names) if name in self.processors))

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        if self.fixed:
            values = {**self.fixed, **values}
        try:
            out = [values[name] for name in self.names]
        except KeyError as exc:
            raise KeyError(f"no value for the statement's parameter {exc.args[0]!r}") from None
        for i, process in self._processed:  # type: ignore[attr-defined]
            out[i] = process(out[i])  # None too, as SQLAlchemy does (a JSON column stores it as 'null')
        return tuple(out) if self.positional else dict(zip(self.names, out, strict=True))


_kept: dict[tuple[str, int, tuple[str, ...] | None], tuple[ClauseElement, Compiled]] = {}
_lock = threading.Lock()


def compile_for(dialect: Dialect, statement: ClauseElement,
                column_keys: Sequence[str] | None = None) -> Compiled:
    """`statement` compiled for `dialect`, once for as long as the statement object lives here (keep it in a
    module-level name or a bounded cache: the compiled form is kept by the statement's identity). An INSERT
    or UPDATE without values of its own takes `column_keys`: one parameter per column, named by its key."""
    keys = tuple(column_keys) if column_keys is not None else None
    key = (dialect.name, id(statement), keys)
    kept = _kept.get(key)
    if kept is not None and kept[0] is statement:
        return kept[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
    if not isinstance(compiled, SQLCompiler):
        raise ValueError("not a SQL statement")
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("a statement with an expanding IN or literal-execute parameters cannot run as compiled")
    if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        # Python-side column defaults are computed by SQLAlchemy's execution, which the driver's cursor skips.
        raise ValueError("give every column with a Python-side default a value of its own in the statement")
    names = (tuple(compiled.positiontup or ()) if dialect.positional
             else tuple(dict.fromkeys(compiled.bind_names.values())))
    processors: dict[str, Callable[[Any], Any]] = {}
    fixed: dict[str, Any] = {}
    for name in names:
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
        if not bind.required:
            fixed[name] = bind.effective_value
    made = Compiled(str(compiled), names, bool(dialect.positional), fixed, processors)
    with _lock:
        if len(_kept) > 1024:  # statements made per shape (a cache of them upstream) must not grow this forever
            _kept.clear()
        _kept[key] = (statement, made)
    return made


def execute(connection: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> CursorResult[Any]:
    """Run `statement` with `values` on the driver (its cursor events fire: scale mode times them)."""
    compiled = compile_for(connection.dialect, statement)
    return connection.exec_driver_sql(compiled.sql, compiled.parameters(values))


def executemany(connection: Connection, statement: ClauseElement, rows: Sequence[Mapping[str, Any]],
                column_keys: Sequence[str] | None = None) -> None:
    """Run `statement` once per row of `rows` in one driver executemany (`column_keys`: see compile_for)."""
    if not rows:
        return
    compiled = compile_for(connection.dialect, statement, column_keys)
    connection.exec_driver_sql(compiled.sql, [compiled.parameters(row) for row in rows])


def rows(connection: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> Sequence[Any]:
    """The result rows of `statement` with `values`, as the driver's tuples (no result processing)."""
    result = execute(connection, statement, values)
    try:
        return result.cursor.fetchall() if result.cursor is not None else []
    finally:
        result.close()


def scalar(connection: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> Any:
    """The first column of the first row, or None."""
    found = rows(connection, statement, values)
    return found[0][0] if found else None
