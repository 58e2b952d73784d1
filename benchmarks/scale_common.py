"""Shared parts of the scale-mode benchmarks: a fresh PostgreSQL schema per run, worker processes, waiting.

The database comes from NEWSLETTER_BENCH_DATABASE_URL, else NEWSLETTER_TEST_DATABASE_URL
(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test). Each run gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from tests import postgres
from tests.scale_world import stop_workers

NO_DATABASE = ("skipped: set NEWSLETTER_BENCH_DATABASE_URL (or NEWSLETTER_TEST_DATABASE_URL) to a PostgreSQL URL, "
               "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")


def base_url() -> str | None:
    return os.environ.get("NEWSLETTER_BENCH_DATABASE_URL") or os.environ.get("NEWSLETTER_TEST_DATABASE_URL")


def skipped(benchmark: str) -> list[dict[str, str]]:
    """The one row of a benchmark that has no PostgreSQL to run on (and why, on stderr)."""
    print(NO_DATABASE, file=sys.stderr)
    return [{"benchmark": benchmark, "case": NO_DATABASE}]


def worker_counts(text: str) -> list[int]:
    return [int(w) for w in text.split(",")]


def scale_arguments(doc: str, *, concurrency: int) -> argparse.ArgumentParser:
    """The options every scale benchmark takes (worker processes per run, jobs at once in each); add your own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workers", type=worker_counts, default=[1, 2, 4], help="worker processes per run: 1,2,4")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="jobs at once in each worker")
    return parser


def keep(rows: list[dict[str, str]], row: dict[str, str]) -> None:
    rows.append(row)
    print(" | ".join(row.values()), file=sys.stderr, flush=True)  # a long run's figures survive a later failure


@contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A schema of its own for one run (tests/postgres.py, the one the tests use), dropped afterwards."""
    with postgres.fresh_schema(base, prefix="bench_") as url:
        yield url


def environment(url: str, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SCHEDULES_DIR": str(folder / "schedules"),
        "NEWSLETTER_OUTBOX_DIR": str(folder / "outbox"),
        "NEWSLETTER_SECRET_KEY": "bench-secret-key",
        "NEWSLETTER_BASE_URL": "https://news.example.com",
        "PYTHONUNBUFFERED": "1",
        "NEWSLETTER_FETCH_ALLOW": "127.0.0.0/8",  # the benchmark's feed servers listen on loopback
    })
    env.update(extra)
    return env


def newsletter(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "newsletter", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"newsletter {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@contextmanager
def workers(env: dict[str, str], count: int, folder: Path, *extra: str) -> Iterator[list[Path]]:
    """`count` worker processes; yields their log files; stops them (SIGTERM) afterwards."""
    logs = [folder / f"worker{i}.log" for i in range(count)]
    handles = [open(log, "w") for log in logs]  # noqa: SIM115 - closed below
    procs = [subprocess.Popen([sys.executable, "-m", "newsletter", "worker", *extra], env=env, stdout=h,
                              stderr=subprocess.STDOUT) for h in handles]
    try:
        yield logs
    finally:
        stop_workers(procs, grace=30)
        for h in handles:
            h.close()


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout}s")
        time.sleep(poll)


def workers_ready(engine: sa.Engine, count: int) -> bool:
    """All `count` workers registered with procrastinate (started, connected, listening)."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM procrastinate_workers")).scalar() >= count


def jobs_left(engine: sa.Engine, task: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name LIKE :t AND status IN ('todo', 'doing')"),
            {"t": f"%{task}"}).scalar()
