"""Where the `newsletter` process starts: the one listing people run to see where things stand answers at once.

`newsletter issue list [SLUG]` on an SQLite database already at the newest schema revision is answered here with
the standard library's sqlite3 and Rich alone. The full CLI would first import Typer (which builds pydantic
adapters for every argument), SQLAlchemy and the ORM models: about 0.4 s before the first row, against a tenth of
that for this path. Anything this path is not sure of goes to the full CLI (cli/main.py), which answers exactly as
it always did: another database or URL form, a schema that needs upgrading, a setting that does not parse, any
option (`--help` included), shell completion, or any error on the way. Nothing is printed before the rows are all
read, so falling back never shows half an answer.

`issue_table` is the table both paths print (cli/issues.py uses it), so they cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # imported where used: every other command passes through here on its way to the full CLI
    from datetime import datetime

    from rich.table import Table


class IssueLine(NamedTuple):
    id: int
    newsletter: str
    number: int
    status: str
    stories: int  # included stories
    subject: str
    created_at: datetime


def issue_table(lines: Iterable[IssueLine]) -> Table:
    """`newsletter issue list`'s table, newest first as given."""
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for col in ("id", "newsletter", "number", "status", "stories", "subject", "created"):
        table.add_column(col)
    for line in lines:
        table.add_row(str(line.id), line.newsletter, str(line.number), line.status, str(line.stories),
                      Text(line.subject), f"{line.created_at:%Y-%m-%d %H:%M}")  # feed text is not markup
    return table


# The ORM query of cli/issues.py in SQL: issues newest first, with their included stories counted.
_ISSUES = """
SELECT issue.id, newsletter.slug, issue.number, issue.status,
       (SELECT count(*) FROM issue_item WHERE issue_item.issue_id = issue.id AND issue_item.included),
       issue.subject, issue.created_at
FROM issue JOIN newsletter ON newsletter.id = issue.newsletter_id
{where}
ORDER BY issue.id DESC
"""


def _sqlite_file() -> str | None:
    """The existing SQLite file the settings name, for the plain `sqlite:///PATH` form; None for anything else."""
    from newsletter.settings import ConfigError, settings_from_env

    try:
        url = settings_from_env().database_url
    except ConfigError:  # the full CLI says what is wrong
        return None
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix):]
            break
    else:
        return None
    # Query parameters, escapes and in-memory databases are SQLAlchemy's to interpret; a missing file is the
    # full CLI's to explain.
    if not path or path == ":memory:" or any(c in path for c in "?%#") or not os.path.isfile(path):
        return None
    return path


def _issue_lines(path: str, slug: str | None) -> list[IssueLine] | None:
    """The issues, or None when the schema is not at the newest revision (the full CLI upgrades it first)."""
    import sqlite3
    from datetime import datetime

    from newsletter.store.revision import script_head

    head = script_head()
    if head is None:
        return None
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN")  # the revision and the rows from one snapshot
        if [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")] != [head]:
            return None
        where, params = ("WHERE newsletter.slug = ?", (slug,)) if slug else ("", ())
        rows = conn.execute(_ISSUES.format(where=where), params).fetchall()
    finally:
        conn.close()
    if not all(_one_line(row[5]) for row in rows):
        return None
    return [IssueLine(id_, slug_, number, status, stories, subject, datetime.fromisoformat(created))
            for id_, slug_, number, status, stories, subject, created in rows]


def _one_line(subject: str) -> bool:
    """True when `text.single_line` would leave the subject as it is (the ORM reads subjects through it): it
    only removes what is not printable and collapses or strips spaces. A row stored before subjects were kept
    on one line fails this and goes to the full CLI; importing newsletter.text instead costs its regexes."""
    return subject.isprintable() and subject == subject.strip(" ") and "  " not in subject


def answer(argv: list[str]) -> bool:
    """Answer `issue list [SLUG]` here when it is safe to; False sends the command to the full CLI."""
    if argv[:2] != ["issue", "list"] or len(argv) > 3 or "_NEWSLETTER_COMPLETE" in os.environ:
        return False
    slug = argv[2] if len(argv) == 3 else None
    if slug is not None and slug.startswith("-"):  # an option, or `--`: Typer's to parse
        return False
    path = _sqlite_file()
    if path is None:
        return False
    import sqlite3

    try:
        lines = _issue_lines(path, slug)
    except (sqlite3.Error, ValueError, TypeError):  # not a database, a table missing, a value not as the ORM writes
        return False
    if lines is None:
        return False
    from rich.console import Console

    Console(soft_wrap=True).print(issue_table(lines))  # as cli/common.py's console prints it
    return True


def main() -> None:
    if not answer(sys.argv[1:]):
        from newsletter.cli.main import main as full_cli

        full_cli()
