"""The CLI answers without importing what it does not run: `newsletter --help` lists every command from the table
in cli/main.py exactly as the eagerly built CLI did, and a command imports only its own module.

Each case runs a fresh interpreter, since what matters is what a new `newsletter` process imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOTH_DATABASES

# Not needed to list commands or to list issues; each costs a noticeable part of a second at start-up.
HEAVY = ["alembic", "httpx", "jinja2", "newsletter.cli.send", "newsletter.cli.web", "newsletter.cli.scale",
         "newsletter.deliver", "newsletter.render", "newsletter.collect", "newsletter.web", "starlette",
         "newsletter.compose.build", "pysbd", "apscheduler"]

RUN = """
import json, sys
from newsletter.cli import main
if sys.argv[1] == "eager":  # the CLI as it was built before: every command module registered up front
    import typer.core
    main.app.info.cls = typer.core.TyperGroup
    main.register_modules(main.COMMAND_MODULES)
try:
    main.app(sys.argv[2:], prog_name="newsletter")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(mode: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[str, int, set[str]]:
    done = subprocess.run([sys.executable, "-c", RUN, mode, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120", **(env or {})}, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return done.stdout, report["code"], set(report["modules"])


def test_the_table_of_commands_names_every_command_module() -> None:
    from newsletter.cli.main import COMMAND_MODULES, COMMANDS

    assert sorted({m for entry in COMMANDS.values() for m in entry.modules}) == sorted(COMMAND_MODULES)


TABLE = """
import inspect, json
import typer.core, typer.main
from newsletter.cli import main
main.app.info.cls = typer.core.TyperGroup
main.register_modules(main.COMMAND_MODULES)
group = typer.main.get_group(main.app)
print(json.dumps({name: inspect.cleandoc(cmd.help or "").split("\\n\\n")[0].replace("\\n", " ").strip()
                  for name, cmd in group.commands.items()}))
"""


def test_the_table_of_commands_matches_what_the_modules_register() -> None:
    from newsletter.cli.main import COMMANDS

    done = subprocess.run([sys.executable, "-c", TABLE], capture_output=True, text=True, timeout=120, check=True)
    registered = json.loads(done.stdout)
    table = {name: entry.help for name, entry in COMMANDS.items()}
    assert table == registered, (
        "update COMMANDS in newsletter/cli/main.py: a command was added, renamed or re-worded")
    assert list(table) == list(registered), "COMMANDS lists commands in the order Typer shows them"


def _imported(modules: set[str], names: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


@pytest.mark.parametrize("args", [["--help"], []])
def test_help_lists_every_command_as_before_without_importing_them(workdir: Path, args: list[str]) -> None:
    eager, eager_code, _ = _run("eager", *args, cwd=workdir)
    lazy, lazy_code, modules = _run("lazy", *args, cwd=workdir)
    assert lazy_code == eager_code
    # The same screen, command for command and line for line: a command added to a module but not to
    # COMMANDS in newsletter/cli/main.py, or a changed first line of help, shows up here.
    assert lazy == eager
    for command in ("init", "collect", "build", "send", "issue", "subscribers", "serve", "editors", "db"):
        assert f" {command} " in lazy
    assert _imported(modules, HEAVY + ["sqlalchemy", "pydantic", "newsletter.cli.issues", "newsletter.config"]) == []


def test_completion_of_command_names_and_of_a_group_is_as_before(workdir: Path) -> None:
    seen = {}
    for words in ("newsletter ", "newsletter iss", "newsletter issue ", "newsletter issue show --"):
        env = {"_NEWSLETTER_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words}
        eager, _, _ = _run("eager", cwd=workdir, env=env)
        seen[words], _, _ = _run("lazy", cwd=workdir, env=env)
        assert seen[words] == eager, words
    assert '"subscribers":"Manage subscribers."' in seen["newsletter "]
    assert '"approve":' in seen["newsletter issue "]  # from approval.py, loaded with the group
    assert "--format" in seen["newsletter issue show --"]


def test_a_command_and_its_help_import_only_its_own_module(workdir: Path) -> None:
    out, code, modules = _run("lazy", "issue", "approve", "--help", cwd=workdir)
    assert code == 0 and "--by" in out
    assert _imported(modules, HEAVY) == []
    out, code, modules = _run("lazy", "--version", cwd=workdir)
    assert code == 0 and out.startswith("newsletter ")


@BOTH_DATABASES
def test_issue_list_on_a_current_database_does_not_import_alembic(workdir: Path, cli) -> None:  # noqa: ANN001
    cli("db", "upgrade")  # the first use creates the schema (with Alembic)
    out, code, modules = _run("lazy", "issue", "list", cwd=workdir)
    assert code == 0 and "newsletter" in out and "status" in out
    assert _imported(modules, HEAVY) == []


@BOTH_DATABASES
def test_a_database_one_migration_behind_is_upgraded_on_first_use(workdir: Path, db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from newsletter.store.db import alembic_config, current_revision, make_engine, upgrade

    scripts = ScriptDirectory.from_config(alembic_config(None))
    head = scripts.get_current_head()
    assert head is not None
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    engine = make_engine(db_url)
    upgrade(engine, previous)
    assert current_revision(engine) == previous

    out, code, modules = _run("lazy", "issue", "list", cwd=workdir)
    assert code == 0, out
    assert "alembic" in modules  # the upgrade itself is Alembic's
    assert current_revision(engine) == head
    engine.dispose()
