"""Fixtures of the integration tests: throwaway registry and credit databases on the
stack's PostgreSQL.

Each database is ``registry_test_<hex>``, created through the ``postgres`` database with
the stack's credentials, migrated with the registry's own migrations, and dropped when
the test session ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.sink import db as credit_db
from registry.audit import Actor, AuditedSession
from registry.db import engine, migrate, session_factory, transaction
from registry.service import load_catalog
from xietong.settings import Settings


@pytest.fixture(scope="session")
def registry_databases(stack_settings: Settings) -> Iterator[Callable[[], str]]:
    """Make a fresh, migrated registry database; its URL. All are dropped at the end."""
    server = sa.make_url(stack_settings.database_url)
    maintenance = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    made: list[tuple[str, str]] = []

    def make() -> str:
        name = f"registry_test_{uuid.uuid4().hex[:12]}"
        with maintenance.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
        made.append((name, url))
        migrate(url)
        return url

    yield make
    for name, url in made:
        engine(url).dispose()
        with maintenance.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    maintenance.dispose()


@pytest.fixture(scope="module")
def registry_url(registry_databases: Callable[[], str]) -> str:
    """A registry database of this test module's own, with the sample province's catalog
    loaded (and committed)."""
    url = registry_databases()
    with transaction(session_factory(url)) as session:
        load_catalog(session, Actor.system("test-setup"))
    return url


@pytest.fixture
def registry_session(registry_url: str) -> Iterator[Session]:
    """A session in a transaction that is rolled back after the test: nothing it does
    is seen by any other test."""
    with engine(registry_url).connect() as connection:
        outer = connection.begin()
        session = AuditedSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture(scope="module")
def credit_databases(stack_settings: Settings) -> Iterator[Callable[[], str]]:
    """Make a fresh, migrated credit database; its URL. All are dropped at the end."""
    server = sa.make_url(stack_settings.credit_database_url)
    made: list[str] = []

    def make() -> str:
        name = f"credit_test_{uuid.uuid4().hex[:12]}"
        url = server.set(database=name).render_as_string(hide_password=False)
        credit_db.create_database(url)
        made.append(name)
        credit_db.migrate(url)
        return url

    yield make
    maintenance = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with maintenance.connect() as connection:
        for name in made:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    maintenance.dispose()
