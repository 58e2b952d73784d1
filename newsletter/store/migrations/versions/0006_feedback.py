"""feedback: readers' "this summary is wrong / misleading" on story pages, corrections of a sent story's
summary, and blocks recorded per newsletter

Revision ID: 0006_feedback
Revises: 0005_conversation

- story_feedback: one row per reader (signed in) or subscriber (the signed link in the email) per story;
- issue_item gains corrected_at / corrected_by / original_summary (what was sent, kept when an editor corrects);
- reader_block replaces reader.blocked_at: an editor of one newsletter blocks a reader there, not everywhere.
  A reader blocked before this migration stays blocked on every newsletter that exists (nothing is loosened).

No table is rebuilt: on SQLite, dropping a column means copying the table and dropping the old one, and with
foreign keys on that drop deletes every row that references it (ON DELETE CASCADE: all comments). So
reader.blocked_at stays, no longer read, and the downgrade leaves issue_item's new columns on SQLite.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_feedback"
down_revision = "0005_conversation"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "story_feedback",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("issue_item_id", BigId, sa.ForeignKey("issue_item.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reader_id", BigId, sa.ForeignKey("reader.id", ondelete="SET NULL"), nullable=True),
        sa.Column("subscriber_id", BigId, sa.ForeignKey("subscriber.id", ondelete="SET NULL"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.String(20), nullable=False, server_default="open"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_story_feedback_story", "story_feedback", ["issue_item_id", "status"])
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("issue_item")}  # kept by a downgrade
    for column in (sa.Column("corrected_at", sa.DateTime(), nullable=True),
                   sa.Column("corrected_by", sa.String(320), nullable=True),
                   sa.Column("original_summary", sa.Text(), nullable=True)):
        if column.name not in present:
            op.add_column("issue_item", column)
    op.create_table(
        "reader_block",
        sa.Column("reader_id", BigId, sa.ForeignKey("reader.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("newsletter_id", sa.Integer(), sa.ForeignKey("newsletter.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("blocked_at", sa.DateTime(), nullable=False),
        sa.Column("blocked_by", sa.String(320), nullable=True),
    )
    op.execute("INSERT INTO reader_block (reader_id, newsletter_id, blocked_at) "
               "SELECT reader.id, newsletter.id, reader.blocked_at FROM reader CROSS JOIN newsletter "
               "WHERE reader.blocked_at IS NOT NULL")
    op.execute("UPDATE reader SET blocked_at = NULL")  # read no more: reader_block says


def downgrade() -> None:
    # Blocked somewhere is blocked everywhere again, as before this migration.
    op.execute("UPDATE reader SET blocked_at = (SELECT MIN(blocked_at) FROM reader_block "
               "WHERE reader_block.reader_id = reader.id)")
    op.drop_table("reader_block")
    if op.get_bind().dialect.name != "sqlite":  # see the docstring: no table rebuilt on SQLite
        for column in ("original_summary", "corrected_by", "corrected_at"):
            op.drop_column("issue_item", column)
    op.drop_index("ix_story_feedback_story", table_name="story_feedback")
    op.drop_table("story_feedback")
