"""article_sentences: an article's sentence splits kept with it

`article.sentences` holds how the editorial core split the article's text into sentences (pysbd, the slowest
step of reading a story), with the pysbd version and rules that made them; a build in a new process takes them
instead of splitting again. NULL until a build has read the article; nothing to fill in for existing rows.

Revision ID: 0008_article_sentences
Revises: 0007_report_counts
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_article_sentences"
down_revision = "0007_report_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("article") as batch:
        batch.add_column(sa.Column("sentences", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("article") as batch:
        batch.drop_column("sentences")
