"""Alembic environment of the credit database (``xietong_credit``), the sink's own.

Run through :func:`connectors.sink.db.migrate` (no ``alembic.ini``): the database URL
comes in ``config.attributes["database_url"]``. Migrations are hand-written; the sink
writes with plain SQL, so there is no model metadata to compare against.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config


def run_migrations_online() -> None:
    url = config.attributes["database_url"]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.attributes["database_url"], literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
