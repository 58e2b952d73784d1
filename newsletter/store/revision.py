"""The schema revision the migration scripts lead to, read from their text: no SQLAlchemy, no Alembic.

A command that only checks the database is current (`newsletter issue list`) needs this and nothing heavier.
"""

from __future__ import annotations

import re
from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"

# `revision = "0002"` / `down_revision = ("0001", "0001_x")` at the start of a line, as script.py.mako writes them
# (an annotation such as `revision: str = ...` is allowed).
_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=\n]*)?=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""['"]([^'"]+)['"]""")


def script_head(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The newest revision, read from the migration files' text; None unless they form one chain with one head.

    The same answer as Alembic's `ScriptDirectory.get_current_head()` (tests/test_migrations.py checks it) at a
    fraction of the cost; None (several heads, a file this cannot read) sends the caller to Alembic.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        # A trailing comment may quote other ids ("chained after 0002"): only the value before it counts.
        found = {m.group(1): m.group(2).split("#", 1)[0]
                 for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8"))}
        ids = _QUOTED.findall(found.get("revision", ""))
        if len(ids) != 1 or "down_revision" not in found:
            return None
        revisions.add(ids[0])
        parents.update(_QUOTED.findall(found["down_revision"]))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None
