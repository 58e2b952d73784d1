"""Run every benchmark and print one table.

    python benchmarks/run.py            # all of them
    python benchmarks/run.py collect    # only those whose name contains "collect"

Each benchmark module in this folder exposes main() -> list of rows; it compares itself, in the same run,
with the baseline a user would otherwise use.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Module names in benchmarks/ and the arguments each runs with by default.
BENCHMARKS: dict[str, list[str]] = {
    "cli": [],
    "collect": [],
    "render": [],
    "send_1m": [],
    "editorial": [],
    "related": [],
    "issue_quality": [],
    "schedule": [],
    "web": [],
    "inbox": [],
    "analytics": [],  # 1M click events; PostgreSQL too when a URL is set (as the scale ones)
    # PostgreSQL only (NEWSLETTER_BENCH_DATABASE_URL or NEWSLETTER_TEST_DATABASE_URL), at a scale that runs in
    # minutes here; run them directly for the full 1,000,000 subscribers / 5,000 feeds.
    "scale_send": ["--subscribers", "100000"],
    "scale_collect": ["--feeds", "1000"],
}


def main() -> None:
    from benchmarks.table import print_table

    wanted = sys.argv[1:]
    rows: list[dict[str, str]] = []
    for name, argv in BENCHMARKS.items():
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        saved = sys.argv
        sys.argv = [f"benchmarks/{name}.py", *argv]
        try:
            rows.extend(module.main())
        finally:
            sys.argv = saved
    print_table(rows)


if __name__ == "__main__":
    main()
