"""The credit database (``xietong_credit``): its migrations and connections.

    migrate(url)                   # alembic upgrade head (the sink does it at start)
    with connect(url) as conn:     # a psycopg2 connection, for the sink's bulk writes

The sink writes with psycopg2 directly (``COPY`` and ``INSERT … ON CONFLICT``): bulk
writes are the point, and an ORM would only stand in the way. URLs are SQLAlchemy's
(``postgresql+psycopg2://…``), as everywhere in the platform.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import sqlalchemy as sa
from psycopg2.extensions import connection as Connection

from xietong import migrations

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def migrate(url: str, revision: str = "head") -> None:
    """Bring the credit database at ``url`` to ``revision`` (``alembic upgrade``)."""
    migrations.migrate(MIGRATIONS_DIR, url, revision)


def connect(url: str, read_only: bool = False) -> Connection:
    """A psycopg2 connection (autocommit off) to the database of a SQLAlchemy URL; with
    ``read_only``, every transaction on it is READ ONLY (PostgreSQL refuses any write)."""
    parsed = sa.make_url(url)
    return psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        application_name="xietong-sink",
        options="-c default_transaction_read_only=on" if read_only else None,
    )


def create_database(url: str) -> bool:
    """Create the database of ``url`` when it does not exist (a backfill target);
    whether it was created."""
    parsed = sa.make_url(url)
    maintenance = sa.create_engine(
        parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    try:
        with maintenance.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": parsed.database},
            ).scalar()
            if exists:
                return False
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
            return True
    finally:
        maintenance.dispose()
