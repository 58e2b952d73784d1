"""Render time and HTML size of a 12-story digest (3 quotes and 5 related links per story).

    python benchmarks/render.py [--runs N]

Compares, in the same run: the default template compiled with MRML (Rust, the default) and with the
pure-Python `mjml` package (the fallback), and a naive MJML digest (benchmarks/naive_templates: one section per
story, one mj-text per element) with both compilers, the baseline a template author would otherwise write.
Time is the whole render_issue() call: Jinja2 for both parts, MJML compile; median and best of N runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAIVE = Path(__file__).resolve().parent / "naive_templates"
CLIP_KB = 102


def measure(templates: Path | None, compiler: str, runs: int) -> dict[str, str]:
    from newsletter.render.engine import render_issue
    from tests.fixtures.issues import NOW, make_issue, make_newsletter

    issue, nl = make_issue(12, quotes=3, related=5), make_newsletter()
    times, rendered = [], None
    for _ in range(runs + 1):  # the first run compiles the templates and warms caches: not counted
        started = time.perf_counter()
        rendered = render_issue(issue, nl, base_url="https://news.example.org", templates_dir=templates,
                                compiler=compiler, now=NOW)
        times.append(time.perf_counter() - started)
    times = times[1:]
    size = len(rendered.html.encode()) / 1024
    return {
        "template": "naive MJML" if templates else "default (lean)",
        "compiler": rendered.compiler,
        "html KB": f"{size:.1f}",
        "vs Gmail clip": "CLIPPED" if size > CLIP_KB else f"{size / CLIP_KB:.0%}",
        "median ms": f"{statistics.median(times) * 1000:.1f}",
        "best ms": f"{min(times) * 1000:.1f}",
        "runs": str(runs),
    }


def main() -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for templates in (None, NAIVE):
        for compiler in ("mrml", "mjml"):
            # The pure-Python compiler is ~10x slower: fewer runs keep the benchmark short.
            rows.append(measure(templates, compiler, args.runs if compiler == "mrml" else max(3, args.runs // 5)))
    return rows


def _print(rows: list[dict[str, str]]) -> None:
    try:
        from benchmarks.table import print_table
    except ImportError:
        columns = list(rows[0])
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
        print(" | ".join(c.ljust(widths[c]) for c in columns))
        print("-+-".join("-" * widths[c] for c in columns))
        for row in rows:
            print(" | ".join(row[c].ljust(widths[c]) for c in columns))
        return
    print_table(rows)


if __name__ == "__main__":
    _print(main())
