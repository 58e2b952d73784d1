"""install: this database's own identity, and the SendGrid scheduled sends it may have to cancel

`meta.install_id` (a uuid4, generated once: here for databases that exist, on first use for new ones) goes into
every SendGrid request's custom_args beside the send and the batch, so that another database sharing the SendGrid
account (staging, a move from SQLite to PostgreSQL), whose sends and batches are numbered from 1 too, can never
answer for ours in the Email Activity API.

`sendgrid_hold` has one row per SendGrid request sent with its own `batch_id` and a `send_at` ahead of now
(hold-and-cancel, newsletter.deliver.cancels): written before the request goes out, so that a process killed
after it can still cancel that batch, and then kept until the cancellation is released after its `send_at`.

Revision ID: 0004_install
Revises: 0004_holds
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004_install"
down_revision = "0004_holds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sendgrid_hold",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("send_id", sa.Integer(), sa.ForeignKey("send.id", ondelete="CASCADE"), nullable=False),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("send_batch.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider_batch_id", sa.String(100), nullable=False, unique=True),
        sa.Column("send_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_sendgrid_hold_batch", "sendgrid_hold", ["batch_id", "attempt"])
    op.create_index("ix_sendgrid_hold_status", "sendgrid_hold", ["status", "send_at"])
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    bind = op.get_bind()
    if bind.execute(sa.select(meta.c.key).where(meta.c.key == "install_id")).first() is None:
        op.bulk_insert(meta, [{"key": "install_id", "value": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_index("ix_sendgrid_hold_status", table_name="sendgrid_hold")
    op.drop_index("ix_sendgrid_hold_batch", table_name="sendgrid_hold")
    op.drop_table("sendgrid_hold")
    op.execute("DELETE FROM meta WHERE key = 'install_id'")
