"""conversation: readers who sign in by email link, the sign-in links used, comments on story pages

Revision ID: 0005_conversation
Revises: 0004_install
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_conversation"
down_revision = "0004_install"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reader",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("blocked_at", sa.DateTime(), nullable=True),
        sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "reader_token_use",
        sa.Column("nonce_hash", sa.String(64), primary_key=True),
        sa.Column("used_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "comment",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("issue_item_id", BigId, sa.ForeignKey("issue_item.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reader_id", BigId, sa.ForeignKey("reader.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parent_id", BigId, sa.ForeignKey("comment.id", ondelete="SET NULL"), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("edited_at", sa.DateTime(), nullable=True),
        sa.Column("hidden_at", sa.DateTime(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_comment_story", "comment", ["issue_item_id", "status", "id"])
    op.create_index("ix_comment_reader_id", "comment", ["reader_id"])
    op.create_index("ix_comment_created_at", "comment", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_comment_created_at", table_name="comment")
    op.drop_index("ix_comment_reader_id", table_name="comment")
    op.drop_index("ix_comment_story", table_name="comment")
    op.drop_table("comment")
    op.drop_table("reader_token_use")
    op.drop_table("reader")
