"""The schema check on every command reads the newest migration from the scripts' text instead of asking Alembic;
it must give Alembic's answer for the migrations we ship and for the ones the next engineer adds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from newsletter.store.db import MIGRATIONS, alembic_config, script_head
from tests.conftest import BOTH_DATABASES


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


@BOTH_DATABASES
def test_0006_keeps_a_reader_blocked_before_it_blocked_everywhere_and_goes_back(db_url: str) -> None:
    """A reader blocked before blocks were per newsletter stays blocked on every newsletter; down and up again
    keeps the block."""
    from sqlalchemy import text

    from newsletter.store.db import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0005_conversation")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO newsletter (slug, name, created_at) VALUES ('a', 'A', '2026-01-01'), "
                          "('b', 'B', '2026-01-01')"))
        conn.execute(text("INSERT INTO reader (email, created_at, blocked_at, session_generation) VALUES "
                          "('x@example.com', '2026-01-01', '2026-02-01', 0), "
                          "('y@example.com', '2026-01-01', NULL, 0)"))
        # A comment by the blocked reader: a migration that rebuilt `reader` on SQLite would cascade it away.
        conn.execute(text("INSERT INTO source (id, url, failures, created_at) VALUES (1, 'https://s.example/f', 0, "
                          "'2026-01-01')"))
        conn.execute(text("INSERT INTO item (id, source_id, guid, title, collected_at, content_html, content_text, "
                          "content_hash) VALUES (1, 1, 'g', 'T', '2026-01-01', '', '', 'h')"))
        conn.execute(text("INSERT INTO issue (id, newsletter_id, number, subject, preheader, status, created_at, "
                          "updated_at) SELECT 1, id, 1, 'S', '', 'sent', '2026-01-01', '2026-01-01' FROM newsletter "
                          "WHERE slug = 'a'"))
        conn.execute(text("INSERT INTO issue_item (id, issue_id, item_id, position, included, title, url, "
                          "source_name, summary, summary_method, quotes, related, also_covered_by, notes) VALUES "
                          "(1, 1, 1, 1, true, 'T', 'https://s.example/1', 'S', 'sum', 'feed', '[]', '[]', '[]', "
                          "'{}')"))
        conn.execute(text("INSERT INTO comment (issue_item_id, reader_id, body, status, created_at, updated_at) "
                          "SELECT 1, id, 'kept', 'visible', '2026-01-02', '2026-01-02' FROM reader "
                          "WHERE email = 'x@example.com'"))
    upgrade(engine, "0006_feedback")
    with engine.connect() as conn:
        blocks = conn.execute(text("SELECT r.email, n.slug FROM reader_block b JOIN reader r ON r.id = b.reader_id "
                                   "JOIN newsletter n ON n.id = b.newsletter_id ORDER BY n.slug")).all()
    assert [tuple(b) for b in blocks] == [("x@example.com", "a"), ("x@example.com", "b")]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM comment")).scalars().all() == ["kept"]
    from alembic import command

    command.downgrade(alembic_config(engine), "0005_conversation")
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT email FROM reader WHERE blocked_at IS NOT NULL")).scalars().all()
    assert kept == ["x@example.com"]
    upgrade(engine)  # and up again (on SQLite the downgrade left issue_item's new columns)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM comment")).scalars().all() == ["kept"]
        assert conn.execute(text("SELECT count(*) FROM reader_block")).scalar() == 2
    engine.dispose()


@BOTH_DATABASES
def test_0010_drops_deliverys_foreign_keys_and_keeps_its_rows(db_url: str) -> None:
    """A database with deliveries comes through 0010 with every delivery row, no foreign key on delivery, and
    exactly-once still held by uq_delivery; down again restores the keys."""
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError

    from newsletter.store.db import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0009_delivery_rows")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO newsletter (id, slug, name, created_at) VALUES (1, 'a', 'A', '2026-01-01')"))
        conn.execute(text("INSERT INTO issue (id, newsletter_id, number, subject, preheader, status, created_at, "
                          "updated_at) VALUES (1, 1, 1, 'S', '', 'sent', '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO send (id, issue_id, mailer, status, max_subscription_id, batch_size, total, "
                          "sent, started_at) VALUES (1, 1, 'outbox', 'done', 2, 10, 2, 2, '2026-01-01')"))
        conn.execute(text("INSERT INTO send_batch (id, send_id, number, first_subscription_id, "
                          "last_subscription_id, recipients, status, claimed_at, attempts) VALUES "
                          "(1, 1, 1, 1, 2, 2, 'sent', '2026-01-01', 1)"))
        conn.execute(text("INSERT INTO delivery (send_id, batch_id, subscriber_id, email, sent_at) VALUES "
                          "(1, 1, 10, 'x@example.com', '2026-01-01'), (1, 1, 11, 'y@example.com', '2026-01-01')"))
    assert len(inspect(engine).get_foreign_keys("delivery")) == 2
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert inspect(engine).get_foreign_keys("delivery") == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email FROM delivery ORDER BY email")).scalars().all() == [
            "x@example.com", "y@example.com"]
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a second copy to a reader is still refused
        conn.execute(text("INSERT INTO delivery (send_id, batch_id, subscriber_id, email, sent_at) VALUES "
                          "(1, 1, 10, 'x@example.com', '2026-01-02')"))
    command.downgrade(alembic_config(engine), "0009_delivery_rows")
    assert {fk["referred_table"] for fk in inspect(engine).get_foreign_keys("delivery")} == {"send", "send_batch"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM delivery")).scalar() == 2
    engine.dispose()
