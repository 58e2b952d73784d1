"""`newsletter issue list` answers from cli/start.py without loading the full CLI when it safely can, and prints
exactly what the full CLI prints; whenever it cannot be sure, the full CLI answers (and upgrades, or explains).

Each case runs a fresh `newsletter` process, as a user does: what matters is what that process imports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import BOTH_DATABASES
from tests.test_cli import setup_newsletter

# `newsletter` as the console script runs it (cli/start.py), or the full CLI as it was (cli/main.py).
RUN = """
import json, sys
if sys.argv[1] == "start":
    from newsletter.cli.start import main
else:
    from newsletter.cli.main import main
sys.argv = ["newsletter", *sys.argv[2:]]
try:
    main()
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
FULL_CLI = ["typer", "pydantic", "sqlalchemy", "newsletter.config", "newsletter.cli.main", "newsletter.store.db"]


def _run(entry: str, *args: str, cwd: Path) -> tuple[str, str, int, set[str]]:
    done = subprocess.run([sys.executable, "-c", RUN, entry, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, timeout=120)
    *errors, report = done.stderr.strip().splitlines()
    found = json.loads(report)
    return done.stdout, "\n".join(errors), found["code"], set(found["modules"])


def _loaded(modules: set[str]) -> list[str]:
    return [n for n in FULL_CLI if any(m == n or m.startswith(n + ".") for m in modules)]


def _issues(workdir: Path, feed_server, cli) -> None:  # noqa: ANN001
    """Two newsletters; city's issue has three stories, one left out by the editor."""
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueItem, IssueRow

    with session_scope(get_engine(os.environ["NEWSLETTER_DATABASE_URL"])) as session:
        session.query(IssueItem).filter(IssueItem.position == 1).update({"included": False})
        other = ensure_newsletter(session, "harbour", "Harbour")
        session.add(IssueRow(newsletter_id=other.id, number=7, subject="Fares [bold]rise[/bold] & ferries"))


@BOTH_DATABASES
def test_issue_list_prints_what_the_full_cli_prints(workdir: Path, feed_server, cli, db_url: str) -> None:  # noqa: ANN001
    _issues(workdir, feed_server, cli)
    for args in ([], ["city"], ["harbour"], ["nobody"], [""]):
        fast, _, code, modules = _run("start", "issue", "list", *args, cwd=workdir)
        full, _, full_code, _ = _run("main", "issue", "list", *args, cwd=workdir)
        assert (fast, code) == (full, full_code), args
        if db_url.startswith("sqlite"):  # PostgreSQL is the full CLI's (psycopg and SQLAlchemy either way)
            assert _loaded(modules) == [], (args, _loaded(modules))
        else:
            assert "sqlalchemy" in modules
    everything, _, _, _ = _run("start", "issue", "list", cwd=workdir)
    rows = [line for line in everything.splitlines() if line.startswith("│")]
    assert len(rows) == 2
    assert rows[0].split("│")[2:6] == [" harbour    ", " 7      ", " draft  ", " 0       "]
    assert "Fares [bold]rise[/bold] & ferries" in rows[0]  # feed text is not markup
    assert rows[1].split("│")[2:6] == [" city       ", " 1      ", " draft  ", " 2       "]  # one left out


def test_anything_unsure_goes_to_the_full_cli(workdir: Path, feed_server, cli, db_url: str) -> None:  # noqa: ANN001
    _issues(workdir, feed_server, cli)
    database = db_url.removeprefix("sqlite:///")
    # An option, `--`, completion and other commands: Typer's.
    out, _, code, modules = _run("start", "issue", "list", "--help", cwd=workdir)
    assert code == 0 and "Only this newsletter" in out and "typer" in modules
    out, _, code, modules = _run("start", "issue", "list", "--", "city", cwd=workdir)
    assert code == 0 and " city " in out and "typer" in modules
    # A subject stored before subjects were kept on one line: the ORM reads it through single_line.
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE issue SET subject = ? WHERE number = 7", ("Fares\nrise  \t& ferries ",))
    fast, _, code, modules = _run("start", "issue", "list", cwd=workdir)
    full, _, _, _ = _run("main", "issue", "list", cwd=workdir)
    assert code == 0 and fast == full and "Fares rise & ferries" in fast and "sqlalchemy" in modules
    # A setting that does not parse: the same one-line error as every command.
    os.environ["NEWSLETTER_MAILER"] = "pigeon"
    try:
        out, err, code, _ = _run("start", "issue", "list", cwd=workdir)
    finally:
        del os.environ["NEWSLETTER_MAILER"]
    assert code == 1 and out == "" and "NEWSLETTER_MAILER: 'pigeon' is not one of outbox" in err


def test_an_old_schema_is_upgraded_and_a_missing_database_is_explained(workdir: Path, db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from newsletter.store.db import alembic_config, current_revision, make_engine, upgrade

    _, err, code, _ = _run("start", "issue", "list", cwd=workdir)
    assert code == 1 and "no database here yet" in err
    assert not (workdir / "newsletter.db").exists()

    scripts = ScriptDirectory.from_config(alembic_config(None))
    head = scripts.get_current_head()
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    engine = make_engine(db_url)
    upgrade(engine, previous)
    out, _, code, modules = _run("start", "issue", "list", cwd=workdir)
    assert code == 0 and "newsletter" in out and "alembic" in modules
    assert current_revision(engine) == head
    _, _, code, modules = _run("start", "issue", "list", cwd=workdir)  # now current: the short path
    assert code == 0 and _loaded(modules) == []
    engine.dispose()
