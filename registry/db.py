"""The registry database: engines, audited sessions, and migrations.

    migrate(url)                          # alembic upgrade head, programmatically
    sessions = session_factory(url)
    with transaction(sessions) as session:
        registry.service.load_catalog(session, Actor.system("load-catalog"))

The caller owns the transaction: service functions flush, never commit, so an
operation and its audit entries are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from registry.audit import AuditedSession
from xietong import migrations

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@cache
def engine(url: str) -> sa.Engine:
    """One pooled engine per database URL in this process."""
    return sa.create_engine(url, pool_pre_ping=True)


def session_factory(url: str) -> sessionmaker[Session]:
    """Sessions on ``url`` that audit every change (:class:`registry.audit.AuditedSession`)."""
    return sessionmaker(engine(url), class_=AuditedSession, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in a transaction: committed when the block ends, rolled back on error."""
    with sessions.begin() as session:
        yield session


def migrate(url: str, revision: str = "head") -> None:
    """Bring the registry database at ``url`` to ``revision`` (``alembic upgrade``)."""
    migrations.migrate(MIGRATIONS_DIR, url, revision)


def current_revision(url: str) -> str | None:
    """The migration the database at ``url`` is at; None before the first."""
    from alembic.runtime.migration import MigrationContext

    with engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
