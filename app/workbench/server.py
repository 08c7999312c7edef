"""The workbench as ``xietong workbench serve`` runs it: its desk made of the inbox's parts,
reading the credit database read-only, writing as ``svc-inbox``, tokens and the catalog
from the registry database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app.workbench.desk import Catalog, InboxDesk
from app.workbench.settings import WorkbenchSettings
from app.workbench.web import create_app
from xietong.logs import log_event
from xietong.settings import Settings

logger = logging.getLogger(__name__)


def build_app(settings: Settings, rules: WorkbenchSettings | None = None) -> FastAPI:
    """The workbench over the local stack's (or the settings') databases and broker; the
    act side's producer starts and stops with the app."""
    from connectors.inbox.actions import InboxActions
    from connectors.inbox.settings import InboxSettings
    from connectors.inbox.store import InboxStore
    from registry.directory import RegistryDirectory
    from registry.settings import get_registry_settings
    from xietong.clock import clock_from_settings
    from xietong.kafka import KafkaClients

    rules = rules or WorkbenchSettings()
    clock = clock_from_settings(settings.time_zone, settings.clock_offset, settings.clock_at)
    actions = InboxActions(
        KafkaClients(settings, "inbox"), clock, InboxSettings().produce_timeout_seconds
    )
    store = InboxStore(settings.credit_database_url, clock)
    directory = RegistryDirectory(
        settings.database_url,
        get_registry_settings().admin_token_sha256,
        rules.token_cache_seconds,
    )
    desk = InboxDesk(
        store, actions, directory, Catalog(settings.database_url), settings.credit_database_url
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        actions.start()
        try:
            yield
        finally:
            await run_in_threadpool(actions.stop)
            store.close()

    return create_app(desk, rules, clock, lifespan)


def run_service(settings: Settings, rules: WorkbenchSettings | None = None) -> None:
    """Serve the pages on ``rules.host:rules.port`` until SIGTERM or Ctrl-C."""
    import uvicorn

    from xietong.logs import configure

    configure()
    rules = rules or WorkbenchSettings()
    app = build_app(settings, rules)
    log_event(logger, "workbench.listening", host=rules.host, port=rules.port)
    uvicorn.run(
        app,
        host=rules.host,
        port=rules.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
