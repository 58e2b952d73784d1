"""Alembic environment: runs against the engine handed over by newsletter.store.db."""

from alembic import context

from newsletter.store.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the `alembic` command alone has no database URL
    raise RuntimeError("migrate with `newsletter db upgrade` (newsletter.store.db.upgrade hands over the engine)")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
