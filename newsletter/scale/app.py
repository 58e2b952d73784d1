"""The procrastinate App: jobs live in the same PostgreSQL database as everything else (no other broker).

Tasks are registered on one module-level App (newsletter.scale.tasks imports it; this module loads the tasks
through the App's import paths, as a worker does, so the two never import each other); the database it talks to
is chosen at run time with `connected(url)`, because the URL comes from the environment of the process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import procrastinate

from newsletter.scale.mode import libpq_dsn

# The connector given here is a placeholder: connected() swaps in one for the configured database.
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["newsletter.scale.tasks"],
)


def connector_for(url: str) -> procrastinate.PsycopgConnector:
    return procrastinate.PsycopgConnector(conninfo=libpq_dsn(url))


@contextmanager
def connected(url: str) -> Iterator[procrastinate.App]:
    """The app, talking to `url`, opened for synchronous use (defer jobs, apply the schema)."""
    app.perform_import_paths()  # registers the tasks

    with app.replace_connector(connector_for(url)) as bound, bound.open():
        yield bound


log = logging.getLogger("newsletter.scale")

RESTART_PAUSE = (1.0, 30.0)  # seconds before a worker that stopped by itself starts again: first, at most

# Set once this process's worker is asked to stop (SIGINT, SIGTERM): a long job ends at its next step instead of
# keeping the stop waiting (procrastinate waits for the jobs in hand and tells them nothing).
stop_requested = threading.Event()


def _stop(stopping: asyncio.Event) -> None:
    stop_requested.set()
    stopping.set()


def run_worker(url: str, **options: Any) -> None:
    """Run a procrastinate worker on `url` until SIGINT or SIGTERM, which let the jobs in hand finish.

    procrastinate stops a worker as soon as one of its side tasks (heartbeat, LISTEN, the periodic deferrer)
    loses the database, as when PostgreSQL restarts or fails over: `newsletter worker` then exited 0 and did no
    more work, with its job's retry waiting for a worker that no supervisor restarts after a clean exit. A worker
    that stops without being asked to is started again here, once the database answers, backing off.
    """
    asyncio.run(_run_until_stopped(url, options))


async def _run_until_stopped(url: str, options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    stop_requested.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop, stopping)
    pause = RESTART_PAUSE[0]
    try:
        while not stopping.is_set():
            worker = asyncio.create_task(_run_once(url, options))
            asked = asyncio.create_task(stopping.wait())
            await asyncio.wait({worker, asked}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.is_set():
                # A cancelled procrastinate worker stops taking jobs and waits for the ones in hand.
                worker.cancel()
                with suppress(asyncio.CancelledError):
                    await worker
                return
            asked.cancel()
            error = worker.exception()
            log.warning("the worker stopped by itself (%s); starting it again in %.0fs",
                        f"{type(error).__name__}: {error}".strip() if error else "it lost the database", pause)
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause)
            pause = min(pause * 2, RESTART_PAUSE[1])
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run_once(url: str, options: dict[str, Any]) -> None:
    # A fresh connection pool each time: the last one's connections died with the server.
    with app.replace_connector(connector_for(url)) as bound:
        async with bound.open_async():
            await bound.run_worker_async(install_signal_handlers=False, **options)


def ensure_schema(url: str) -> bool:
    """Create procrastinate's tables in the database (the schema first on its search_path) unless present.

    Returns True when it created them. Two machines running this at once are serialized by an advisory lock.
    """
    import psycopg

    lock = "SELECT pg_advisory_{}(hashtext('newsletter:procrastinate-schema'))"
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute(lock.format("lock"))
        try:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
            if row and row[0]:
                return False
            with conn.transaction():
                conn.execute(procrastinate.schema.SchemaManager.get_schema())
            return True
        finally:
            conn.execute(lock.format("unlock"))
