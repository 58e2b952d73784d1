"""holds: the recipients whose copy's fate is unknown or whom the operator skipped, and the operator's decisions

`send_hold` names, per send, the people a send could not settle: `unknown` (held: their message was in flight
when the SMTP connection died), `skipped` (the operator decided `--unknown skip`: they were not sent this issue
and have no delivery row) or `resent` (the operator decided `--unknown resend`). A `delivery` row still means
exactly "this person was sent this issue".

`send_batch.listed_at` is when a held batch was reported to the operator; `--unknown resend|skip` applies only to
listed batches, never to one that goes unknown later. `send_batch.decision` / `decided_at` record what the
operator decided for that batch.

Revision ID: 0004_holds
Revises: 0003_feeds
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_holds"
down_revision = "0003_feeds"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "send_hold",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", BIG_ID, nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["send_batch.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["send_id"], ["send.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("send_id", "subscriber_id", name="uq_send_hold"),
    )
    op.create_index("ix_send_hold_batch_id", "send_hold", ["batch_id"])
    with op.batch_alter_table("send_batch") as batch:
        batch.add_column(sa.Column("listed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("decision", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("send_batch") as batch:
        batch.drop_column("decided_at")
        batch.drop_column("decision")
        batch.drop_column("listed_at")
    op.drop_index("ix_send_hold_batch_id", table_name="send_hold")
    op.drop_table("send_hold")
