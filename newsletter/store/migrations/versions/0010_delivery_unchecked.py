"""delivery_unchecked: the delivery table's foreign keys to send and send_batch are dropped

A send writes one delivery row per recipient, a million per issue, in the transaction that records its batch.
Each row's two foreign-key checks were most of the row's cost on PostgreSQL: a COPY of 1000 rows took 11.2 ms
with both, 7.2 with the send's only, 4.3 with neither. And each check takes a KEY SHARE lock on the referenced
row, the same send row for every delivery of the send: workers recording batches of one send at once turn it
into a multixact held by all of them. The rows are written only by the ledger, for the batch it records in the
same transaction, and nothing deletes sends or batches, so the ON DELETE CASCADE never ran; delivery keeps its
unique (send_id, subscriber_id), which is what exactly-once rests on.

Revision ID: 0010_delivery_unchecked
Revises: 0009_delivery_rows
"""

from alembic import op

revision = "0010_delivery_unchecked"
down_revision = "0009_delivery_rows"
branch_labels = None
depends_on = None

# Names for the constraints 0001 created unnamed, so that SQLite's table rebuild can find them to drop.
NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # PostgreSQL's own names for 0001's unnamed constraints.
        op.execute("ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_send_id_fkey")
        op.execute("ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_batch_id_fkey")
        return
    with op.batch_alter_table("delivery", naming_convention=NAMES) as batch:
        batch.drop_constraint("fk_delivery_send_id_send", type_="foreignkey")
        batch.drop_constraint("fk_delivery_batch_id_send_batch", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.create_foreign_key("delivery_send_id_fkey", "send", ["send_id"], ["id"], ondelete="CASCADE")
        batch.create_foreign_key("delivery_batch_id_fkey", "send_batch", ["batch_id"], ["id"], ondelete="CASCADE")
