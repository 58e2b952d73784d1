"""web hardening: a per-editor session generation and a per-subscription confirmation nonce

editor.session_generation is copied into every sign-in cookie; signing out or changing the password bumps it,
so every cookie issued before stops working (the cookies themselves are stateless and cannot be revoked).
subscription.confirm_nonce is carried inside the confirmation link; it is set when a confirmation email goes
out and cleared when the subscription is confirmed or leaves, so a link works once and only for the request
that sent it.

Revision ID: 0003_webhard
Revises: 0002_delivery
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_webhard"
down_revision = "0002_delivery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editor") as batch:
        batch.add_column(sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("subscription") as batch:
        batch.add_column(sa.Column("confirm_nonce", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscription") as batch:
        batch.drop_column("confirm_nonce")
    with op.batch_alter_table("editor") as batch:
        batch.drop_column("session_generation")
