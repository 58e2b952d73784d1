"""tz_groups: a send goes to each reader at the schedule's send time in their own time zone

`subscription.send_timezone` is the copy of `timezone` a send groups readers by, taken when a send starts (like
`send_variant`), so a change made during a send never moves a reader from one group to another. `send.groups`
lists the send's groups, one per UTC instant (one per UTC offset on that date): [{"at": epoch seconds,
"zones": [IANA names], "home": true for the group of readers without a time zone}]; NULL: one group, now.
`send_batch.send_group` is the index of the group a batch holds (NULL: everyone).

Revision ID: 0006_tz_groups
Revises: 0006_preferences
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_tz_groups"
down_revision = "0006_preferences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscription") as batch:
        batch.add_column(sa.Column("send_timezone", sa.String(64), nullable=True))
    op.execute("UPDATE subscription SET send_timezone = timezone")
    with op.batch_alter_table("send") as batch:
        batch.add_column(sa.Column("groups", sa.JSON(), nullable=True))
    with op.batch_alter_table("send_batch") as batch:
        batch.add_column(sa.Column("send_group", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("send_batch") as batch:
        batch.drop_column("send_group")
    with op.batch_alter_table("send") as batch:
        batch.drop_column("groups")
    with op.batch_alter_table("subscription") as batch:
        batch.drop_column("send_timezone")
