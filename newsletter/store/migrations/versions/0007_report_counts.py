"""report_counts: the editor's report reads per-issue counters instead of every raw event

`track_count` holds, per (issue, kind, source, machine, story, UTC day), the number of raw events and how many of
them were a reader's first of the issue (`readers`) or of the day (`uniques`, for clicks: of that link), from
track_event's first-of flags; story 0 is an event of no story. newsletter.report.record.mark_firsts adds each new
event in its own transaction; here the events already stored are counted once.

Revision ID: 0007_report_counts
Revises: 0006_tz_groups
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_report_counts"
down_revision = "0006_tz_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "track_count",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("source", sa.String(20), primary_key=True),
        sa.Column("machine", sa.Boolean, primary_key=True),
        sa.Column("story", sa.Integer, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("uniques", sa.BigInteger, nullable=False),
        sa.Column("readers", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO track_count (issue_id, kind, source, machine, story, day, events, uniques, readers) "
        "SELECT issue_id, kind, source, machine, COALESCE(story, 0), DATE(occurred_at), COUNT(*), "
        "SUM(CASE WHEN first_day THEN 1 ELSE 0 END), SUM(CASE WHEN first_issue THEN 1 ELSE 0 END) "
        "FROM track_event GROUP BY issue_id, kind, source, machine, COALESCE(story, 0), DATE(occurred_at)"
    )


def downgrade() -> None:
    op.drop_table("track_count")
