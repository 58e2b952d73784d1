"""events: what happened after a send (clicks, opens, provider events), daily aggregates kept past the raw
events' retention, and the holds the complaint/bounce guard puts on a newsletter's scheduled sends

Revision ID: 0006_events
Revises: 0006_preferences
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_events"
down_revision = "0006_preferences"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "track_event",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("issue_id", sa.Integer(), sa.ForeignKey("issue.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("agent", sa.String(20), nullable=False),
        sa.Column("story", sa.Integer(), nullable=True),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("recipient", sa.String(32), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("dedupe", sa.String(200), nullable=True, unique=True),
        sa.Column("first_issue", sa.Boolean(), nullable=False),
        sa.Column("first_day", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_track_event_issue", "track_event", ["issue_id", "kind", "occurred_at"])
    op.create_index("ix_track_event_reader", "track_event", ["issue_id", "recipient", "kind"])
    op.create_index("ix_track_event_occurred_at", "track_event", ["occurred_at"])
    op.create_table(
        "track_daily",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("issue_id", sa.Integer(), sa.ForeignKey("issue.id", ondelete="CASCADE"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("story", sa.Integer(), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("uniques", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.UniqueConstraint("issue_id", "day", "kind", "story", "machine", name="uq_track_daily"),
    )
    op.create_table(
        "send_guard",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("newsletter_id", sa.Integer(), sa.ForeignKey("newsletter.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("issue_id", sa.Integer(), sa.ForeignKey("issue.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("released_by", sa.String(320), nullable=True),
    )
    op.create_index("ix_send_guard_newsletter", "send_guard", ["newsletter_id", "released_at"])
    op.create_index("ix_event_received_at", "event", ["received_at"])  # retention deletes by it


def downgrade() -> None:
    op.drop_index("ix_event_received_at", table_name="event")
    op.drop_index("ix_send_guard_newsletter", table_name="send_guard")
    op.drop_table("send_guard")
    op.drop_table("track_daily")
    op.drop_index("ix_track_event_occurred_at", table_name="track_event")
    op.drop_index("ix_track_event_reader", table_name="track_event")
    op.drop_index("ix_track_event_issue", table_name="track_event")
    op.drop_table("track_event")
