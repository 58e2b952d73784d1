"""A fresh, empty PostgreSQL schema of its own, dropped afterwards: for the tests (tests/conftest.py) and the
scale benchmarks (benchmarks/scale_common.py), which both need a database nobody else writes to.

The URL it yields points at the server of `base` with `search_path` set to the new schema, so everything the
program creates (tables, procrastinate's queue) lands there and goes with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def fresh_schema(base: str, prefix: str = "t_") -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"create schema {name}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{name}"
    finally:
        from newsletter.store.db import _engine_for

        _engine_for.cache_clear()  # close pooled connections before dropping what they point at
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop schema {name} cascade"))
        admin.dispose()
