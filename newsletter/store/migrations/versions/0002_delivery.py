"""delivery: index to walk a newsletter's audience in subscription id order

The send claims batches as keyset pages (newsletter, status 'active', id > last ORDER BY id LIMIT n). The
existing ix_subscription_audience ends in subscriber_id, so the database had to sort every active subscription
for every page (quadratic over a 1M audience); this index serves each page as one range scan.

Revision ID: 0002_delivery
Revises: 0001
"""

from alembic import op

revision = "0002_delivery"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscription_send_order", "subscription", ["newsletter_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscription_send_order", table_name="subscription")
