"""Alembic migrations run from code, without an ``alembic.ini``.

Each database keeps its migrations in a folder of its own (``registry/migrations``,
``connectors/sink/migrations``); their ``env.py`` reads the database URL from
``config.attributes["database_url"]``::

    migrate(Path("registry/migrations"), url)      # alembic upgrade head
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(migrations: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    # An attribute, not an ini option, so a password with % needs no escaping.
    config.attributes["database_url"] = url
    return config


def migrate(migrations: Path, url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` of ``migrations`` (``alembic upgrade``)."""
    command.upgrade(alembic_config(migrations, url), revision)


def head(migrations: Path) -> str | None:
    """The newest revision of the migrations in ``migrations`` (what ``migrate`` reaches)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations)).get_current_head()
