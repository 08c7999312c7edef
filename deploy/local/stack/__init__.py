"""The local stack: PostgreSQL, Kafka and the schema registry as processes on loopback.

``xietong stack up`` (``make up``) starts what the settings do not point elsewhere, in
dependency order, and writes the endpoints to ``.local/stack.env``; ``down`` stops them
in reverse order; ``status`` reports each one. The platform's services that ``xietong
run`` started (:mod:`deploy.local.stack.platform`) are reported too, and stopped first.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from pathlib import Path

from deploy.local.stack.base import Launch, LocalService, ServiceStatus, StackError
from deploy.local.stack.kafka import KafkaBroker
from deploy.local.stack.platform import PlatformServices
from deploy.local.stack.postgres import PostgresServer
from deploy.local.stack.prometheus import PrometheusServer
from deploy.local.stack.schema_registry import SchemaRegistry
from xietong.settings import Settings

__all__ = ["LocalStack", "ServiceStatus", "StackError"]


class LocalStack:
    """The services of the local stack, in the order they must start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The schema registry stores its schemas in PostgreSQL, so it starts after it.
        self.services: list[LocalService] = [
            PostgresServer(settings),
            *(KafkaBroker(settings, node) for node in range(1, settings.kafka_brokers + 1)),
            SchemaRegistry(settings),
            PrometheusServer(settings),  # optional: xietong stack up --with-prometheus
        ]
        self.platform = PlatformServices(settings)

    @property
    def env_file(self) -> Path:
        return self.settings.home / "stack.env"

    def up(
        self, report: Callable[[str], None] = print, optional: Collection[str] = ()
    ) -> list[str]:
        """Start every local service that is not running, and the optional ones named in
        ``optional``; the names of those started."""
        started = []
        launched: list[tuple[LocalService, Launch]] = []
        wanted = [s for s in self.services if not s.optional or s.name in optional]
        for index, service in enumerate(wanted):
            was_running = service.is_external or service.pid() is not None
            if not service.starts_together:
                report(service.start())
            else:
                what = service.launch()
                if isinstance(what, str):
                    report(what)
                else:
                    launched.append((service, what))
                following = wanted[index + 1] if index + 1 < len(wanted) else None
                if following is None or not following.starts_together:
                    for together, launch in launched:  # all launched: now they can answer
                        report(together.finish_start(launch))
                    launched = []
            if not was_running:
                started.append(service.name)
        self.write_env_file()
        report(f"endpoints: {self.env_file} (source it to use them from a shell)")
        return started

    def down(self, only: list[str] | None = None, report: Callable[[str], None] = print) -> None:
        """Stop the local services (or only the named ones), last started first; before
        all of them, the platform's services that run on them."""
        if only is None:
            self.platform.stop(report=report)
        for service in reversed(self.services + self._other_kafka_nodes()):
            if service.optional and service.pid() is None:
                continue
            if only is None or service.name in only:
                report(service.stop())

    def _other_kafka_nodes(self) -> list[LocalService]:
        """Kafka nodes that run although the settings do not name them (the stack was
        started with another XIETONG_KAFKA_BROKERS), so that ``down`` stops them too."""
        named = {service.name for service in self.services}
        found = []
        for pid_file in sorted((self.settings.home / "run").glob("kafka*.pid")):
            name = pid_file.stem
            if name in named or not (name == "kafka" or name.removeprefix("kafka-").isdigit()):
                continue
            node = 1 if name == "kafka" else int(name.removeprefix("kafka-"))
            brokers = 1 if name == "kafka" else max(node, 2)
            found.append(
                KafkaBroker(self.settings.model_copy(update={"kafka_brokers": brokers}), node)
            )
        return found

    def status(self) -> list[ServiceStatus]:
        """Every service's status; an optional one only when it was started."""
        return [s.status() for s in self.services if not s.optional or s.pid() is not None]

    def is_up(self) -> bool:
        return all(s.state in ("running", "external") for s in self.status())

    def write_env_file(self) -> None:
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Endpoints of the Xietong stack, written by `xietong stack up`."]
        lines += [
            f"export {name}={shlex.quote(value)}"
            for name, value in self.settings.endpoints().items()
        ]
        if self.settings.schema_registry_auth and not self.settings.schema_registry_is_external:
            # The clients then send the platform user's credentials, from its 0600 file.
            lines.append("export XIETONG_SCHEMA_REGISTRY_AUTH=true")
        self.env_file.write_text("\n".join(lines) + "\n")
