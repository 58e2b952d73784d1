"""delivery_rows: the delivery table loses its index on batch_id

A send writes one delivery row per recipient, a million per issue, and every index is written with each row:
ix_delivery_batch_id cost a fifth of the row's insert on SQLite (0.7 of 3.2 microseconds) and was read by one
rare query only (which readers of an interrupted batch are left to send), which now asks uq_delivery
(send_id, subscriber_id) for the batch's readers instead. Nothing deletes batches, so the ON DELETE CASCADE
from send_batch needs no index of its own.

Revision ID: 0009_delivery_rows
Revises: 0008_article_sentences
"""

from alembic import op

revision = "0009_delivery_rows"
down_revision = "0008_article_sentences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_index("ix_delivery_batch_id")


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.create_index("ix_delivery_batch_id", ["batch_id"], unique=False)
