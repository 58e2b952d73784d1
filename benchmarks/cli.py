"""How long the `newsletter` command takes to answer: start-up is what a user waits for on every command.

    python benchmarks/cli.py [--runs N]

Median and best wall time of fresh processes, run in turns so that load on the machine falls on all alike, and
their median CPU time (user + system: less moved by other work on a shared machine than wall time):
- `python -c pass` (the interpreter's floor) and `python -c "import typer"` (the CLI library's floor);
- importing what the full CLI needs to read the database (Typer with the pydantic it converts arguments with,
  SQLAlchemy's ORM, rich's tables) and our ORM models: the floor of any command that goes through cli/main.py;
- importing sqlite3 and Rich's console and table: the floor of `issue list`'s short path (cli/start.py);
- `newsletter --help`;
- `newsletter issue list` in a temporary folder with a small SQLite database (one newsletter, a few issues),
  already at the newest schema revision, as on every day after the first (answered by cli/start.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {"newsletter --help": 0.25, "newsletter issue list": 0.35}  # seconds, issue 18


def _small_database(url: str, issues: int) -> None:
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueRow

    engine = get_engine(url)  # creates the schema at the newest revision
    with session_scope(engine) as session:
        row = ensure_newsletter(session, "bench-weekly", "Bench Weekly")
        for number in range(1, issues + 1):
            session.add(IssueRow(newsletter_id=row.id, number=number, subject=f"Bench Weekly #{number}"))
    engine.dispose()


def _newsletter_command() -> list[str]:
    script = Path(sys.executable).parent / "newsletter"  # the console script a user runs
    return [str(script)] if script.exists() else [sys.executable, "-m", "newsletter"]


def measure(runs: int) -> list[dict[str, str]]:
    cli = _newsletter_command()
    cases: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        "import typer+pydantic+sqlalchemy.orm+rich.table+models": [
            sys.executable, "-c", "import typer, pydantic, sqlalchemy.orm, rich.table, newsletter.store.models"],
        "import sqlite3+rich.console+rich.table": [
            sys.executable, "-c", "import sqlite3, rich.console, rich.table"],
        "newsletter --help": [*cli, "--help"],
        "newsletter issue list": [*cli, "issue", "list"],
    }
    times: dict[str, list[float]] = {case: [] for case in cases}
    cpu: dict[str, list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'newsletter.db'}"
        _small_database(url, issues=5)
        env = {**os.environ, "NEWSLETTER_DATABASE_URL": url, "COLUMNS": "120"}
        for run in range(runs + 1):  # the first round writes bytecode caches: not counted
            for case, argv in cases.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                done = subprocess.run(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                elapsed = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0:
                    raise RuntimeError(f"{case} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
                if run:
                    times[case].append(elapsed)
                    cpu[case].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    floor = statistics.median(times["python -c pass"])
    rows = []
    for case, observed in times.items():
        median = statistics.median(observed)
        goal = GOALS.get(case)
        floors = {"python -c pass": "interpreter floor", 'python -c "import typer"': "CLI floor",
                  "import sqlite3+rich.console+rich.table": "floor of issue list's short path"}
        note = f"goal <= {goal:.2f} s" if goal else floors.get(case, "floor of the full CLI reading the database")
        rows.append({"benchmark": "cli", "case": case, "median": f"{median * 1000:.0f} ms",
                     "best": f"{min(observed) * 1000:.0f} ms",
                     "cpu": f"{statistics.median(cpu[case]) * 1000:.0f} ms",
                     "note": f"{note}; {median / floor:.1f}x python"})
    return rows


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    return measure(args.runs)


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(main())
