"""preferences: what each reader chose (sections off, cadence, time zone, format, a pause), and every change

The choices are columns of `subscription` (the audience query reads them beside the status it already reads);
`preference_change` keeps each change with its time and where it came from (the manage page, the CLI, the API,
an import), so "I never asked for this" can be answered.

`subscription.choice_key` names the reader's render variant (format and sections off; '' for the default) and
is kept by every change; `send_variant` is the copy a send walks, taken from it when a send starts, so a change
made during a send never moves a reader from one group of it to another. Batches carry their variant
(`send_batch.variant`, NULL for a send made before variants: the whole audience) and the send the list of
variants it walks (`send.variants`) and, for a newsletter offering several cadences, which readers' choice of
cadence it goes to (`send.frequency`) and whose subscriptions it walks (`send.audience_id`: a cadence's
parent newsletter). `issue_render` keeps one render per (issue, variant) beside the issue's
own default render. `welcome` is the ledger of welcome emails: one row per subscription, claimed before the
mailer is called, so a reader is welcomed once however often a confirmation link is used.

Revision ID: 0006_preferences
Revises: 0006_feedback
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_preferences"
down_revision = "0006_feedback"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("subscription") as batch:
        batch.add_column(sa.Column("sections_off", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("frequency", sa.String(40), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("format", sa.String(10), nullable=True))
        batch.add_column(sa.Column("paused_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("preferences_changed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("choice_key", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("send_variant", sa.Text(), nullable=False, server_default=""))
    op.create_index("ix_subscription_variant_order", "subscription",
                    ["newsletter_id", "status", "send_variant", "id"])
    with op.batch_alter_table("send_batch") as batch:
        batch.add_column(sa.Column("variant", sa.Text(), nullable=True))
    with op.batch_alter_table("send") as batch:
        batch.add_column(sa.Column("variants", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("frequency", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("audience_id", sa.Integer(), nullable=True))
    op.create_table(
        "welcome",
        sa.Column("subscription_id", BigId, sa.ForeignKey("subscription.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("message_id", sa.String(300), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "issue_render",
        sa.Column("issue_id", sa.Integer(), sa.ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("variant", sa.Text(), primary_key=True),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("rendered_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "preference_change",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("subscription_id", BigId, sa.ForeignKey("subscription.id", ondelete="CASCADE"), nullable=False),
        sa.Column("field", sa.String(40), nullable=False),
        sa.Column("old", sa.JSON(), nullable=True),
        sa.Column("new", sa.JSON(), nullable=True),
        sa.Column("origin", sa.String(40), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_preference_change_subscription", "preference_change", ["subscription_id", "changed_at"])


def downgrade() -> None:
    op.drop_table("issue_render")
    op.drop_table("welcome")
    with op.batch_alter_table("send") as batch:
        batch.drop_column("audience_id")
        batch.drop_column("frequency")
        batch.drop_column("variants")
    with op.batch_alter_table("send_batch") as batch:
        batch.drop_column("variant")
    op.drop_index("ix_subscription_variant_order", table_name="subscription")
    op.drop_index("ix_preference_change_subscription", table_name="preference_change")
    op.drop_table("preference_change")
    with op.batch_alter_table("subscription") as batch:
        for column in ("send_variant", "choice_key", "preferences_changed_at", "paused_until", "format",
                       "timezone", "frequency", "sections_off"):
            batch.drop_column(column)
