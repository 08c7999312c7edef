"""Alembic environment of the registry database.

Run through :func:`registry.db.migrate` (no ``alembic.ini``): the database URL comes in
``config.attributes["database_url"]``. Migrations are hand-written and reviewed;
``target_metadata`` is set so ``alembic check`` and the migration test can compare the
models with the migrated schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from registry.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.attributes["database_url"]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.attributes["database_url"],
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
