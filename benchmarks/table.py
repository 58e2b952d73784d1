"""Print benchmark rows (dicts of strings) as one aligned table."""

from __future__ import annotations


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("(no results)")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
