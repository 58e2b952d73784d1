"""The schema check on every command reads the newest migration from the scripts' text instead of asking Alembic;
it must give Alembic's answer for the migrations we ship and for the ones the next engineer adds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from newsletter.store.db import MIGRATIONS, alembic_config, script_head


def _alembic_heads(migrations: Path) -> tuple[str, ...]:
    cfg = alembic_config(None)
    cfg.set_main_option("script_location", str(migrations))
    return tuple(ScriptDirectory.from_config(cfg).get_heads())


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _add(migrations: Path, name: str, revision: str, down: str) -> None:
    (migrations / "versions" / f"{name}.py").write_text(
        f'"""{name}\n\nRevision ID: {revision}\nRevises: {down}\n"""\n\n'
        f"revision: str = {revision!r}\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n", encoding="utf-8")


def test_the_shipped_migrations_have_alembics_head() -> None:
    assert (script_head(),) == _alembic_heads(MIGRATIONS)


def test_a_new_migration_becomes_the_head(tmp_path: Path) -> None:
    migrations = _copy(tmp_path)
    old_head = script_head(migrations / "versions")
    _add(migrations, "0099_feature", "0099_feature", repr(old_head))
    assert script_head(migrations / "versions") == "0099_feature"
    assert _alembic_heads(migrations) == ("0099_feature",)


@pytest.mark.parametrize("merged", [True, False])
def test_two_branches_are_one_head_only_once_merged(tmp_path: Path, merged: bool) -> None:
    migrations = _copy(tmp_path)
    base = script_head(migrations / "versions")
    _add(migrations, "a1", "a1", repr(base))
    _add(migrations, "b1", "b1", repr(base))
    if merged:
        _add(migrations, "m1", "m1", "('a1', 'b1')")
    if merged:
        assert script_head(migrations / "versions") == "m1"
        assert _alembic_heads(migrations) == ("m1",)
    else:  # two heads: the fast check gives up and Alembic decides (it refuses to guess)
        assert script_head(migrations / "versions") is None
        assert sorted(_alembic_heads(migrations)) == ["a1", "b1"]


def test_a_comment_after_the_revision_is_not_read_as_one(tmp_path: Path) -> None:
    migrations = _copy(tmp_path)
    old_head = script_head(migrations / "versions")
    _add(migrations, "0099_feature", "0099_feature", f'{old_head!r}  # chained after "0002" once')
    assert script_head(migrations / "versions") == "0099_feature" == _alembic_heads(migrations)[0]
