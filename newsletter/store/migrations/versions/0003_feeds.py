"""feeds: sources remember permanent redirects and 410 Gone; item identity no longer depends on the parser

`source.moved_to` holds where a 301/308 said a feed now lives, `source.gone_at` when it answered 410.

`item.content_hash` was a hash of the title and the HTML as one parser wrote it; it is now a hash of the title,
the text and the picture addresses (newsletter.collect.parse.content_hash), so that a feed read by another parser,
or with relative links now made absolute, hashes the same. Items without an id and without a link used that hash
as their guid: their guid moves with it, or the next collect would deliver them again as new.

Revision ID: 0003_feeds
Revises: 0003_webhard
"""

import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = "0003_feeds"
down_revision = "0003_webhard"
branch_labels = None
depends_on = None

# A copy of newsletter.collect.parse.content_hash as it was when this migration was written (a migration must not
# change when the code does); tests/test_collect_parse.py checks that the two agree.
_IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", re.I)


def content_hash(title: str, content_text: str, content_html: str = "", image_url: str | None = None) -> str:
    images = " ".join(_IMG_SRC.findall(content_html))
    normal = " ".join(f"{title} {content_text} {images} {image_url or ''}".lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()


def upgrade() -> None:
    op.add_column("source", sa.Column("moved_to", sa.String(2000), nullable=True))
    op.add_column("source", sa.Column("gone_at", sa.DateTime(), nullable=True))
    bind = op.get_bind()
    item = sa.table("item", sa.column("id", sa.BigInteger), sa.column("guid", sa.String),
                    sa.column("title", sa.Text), sa.column("content_text", sa.Text),
                    sa.column("content_html", sa.Text), sa.column("image_url", sa.String),
                    sa.column("content_hash", sa.String))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(item.c.id, item.c.guid, item.c.title, item.c.content_text, item.c.content_html,
                      item.c.image_url, item.c.content_hash).where(item.c.id > last).order_by(item.c.id).limit(2000)
        ).all()
        if not rows:
            break
        for row in rows:
            new = content_hash(row.title or "", row.content_text or "", row.content_html or "", row.image_url)
            values = {"content_hash": new}
            if row.guid == row.content_hash:
                values["guid"] = new
            bind.execute(sa.update(item).where(item.c.id == row.id).values(**values))
        last = rows[-1].id


def downgrade() -> None:
    op.drop_column("source", "gone_at")
    op.drop_column("source", "moved_to")
