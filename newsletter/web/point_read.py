"""Where a web handler runs a short read of the database: on the event loop or in the thread pool.

For SQLite a point read by an indexed key takes tens of microseconds, and in WAL mode (store/db.py sets it)
readers never wait for a writer; handing it to a worker thread costs more than the query itself (the hop and
the GIL passed back and forth: 2-3x the CPU of the whole request, measured in benchmarks/web.py). For
PostgreSQL each query is a network round trip, which must not hold the loop, so it goes to the pool.
Use it only for reads that touch a few rows by index; anything that renders, writes or scans stays in
`run_in_threadpool`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


async def point_read(engine: Engine, read: Callable[..., T], *args: object) -> T:
    if engine.dialect.name == "sqlite":
        return read(*args)
    return await run_in_threadpool(read, *args)
