"""The one Kafka client factory of the platform.

Every producer, consumer, admin client, schema registry client and Avro serde is made
here, from :class:`xietong.settings.Settings`, so that connection settings, credentials,
delivery guarantees and the serializer path are the same everywhere::

    from xietong.kafka import clients

    producer = clients("connectors").producer()
    serializer = clients("connectors").avro_serializer(schema_str)

Each platform service connects as its own principal (``svc-connectors``,
``svc-streams`` …; ``xietong-admin`` for administration), so the broker's ACLs say what
each may do. The credentials come from ``XIETONG_KAFKA_USERNAME`` and
``XIETONG_KAFKA_PASSWORD`` when set (a deployment gives each service its own), else
from the local stack's credentials file, written by ``xietong stack up``.

The schema registry client sends credentials when the settings give some: HTTP basic
authentication (``XIETONG_SCHEMA_REGISTRY_USERNAME`` and ``…_PASSWORD`` or
``…_PASSWORD_FILE``; on the local stack started with ``XIETONG_SCHEMA_REGISTRY_AUTH=true``,
the ``xietong-platform`` principal's from its credentials file), or an OIDC token got
with client credentials (``XIETONG_SCHEMA_REGISTRY_OAUTH_*``), see
:func:`schema_registry_config`.

Producers are idempotent with ``acks=all``: a retried send never duplicates a record
in the log, which at-least-once delivery with deterministic event ids turns into
effectively-once results downstream.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

from xietong.logs import LIBRDKAFKA_LOGGER
from xietong.settings import Settings, get_settings

# The registry subject of a topic's values is "<topic>-value" (TopicNameStrategy), the
# Confluent default every department client will also use.
SERIALIZER_DEFAULTS: dict[str, Any] = {
    # Schemas are registered deliberately (the platform's schema registration step),
    # never implicitly by whichever producer happens to start first.
    "auto.register.schemas": False,
    # The plain topic strategy: no subject-association lookups against the registry and
    # no locked cache on every record.
    "subject.name.strategy": topic_subject_name_strategy,
}


#: The platform's own services, each with its own Kafka principal.
SERVICES = ("admin", "connectors", "registry", "streams", "sink", "inbox", "webhooks")
ADMIN_PRINCIPAL = "xietong-admin"


def principal_name(service: str) -> str:
    """The Kafka user name of a platform service."""
    if service not in SERVICES:
        raise ValueError(f"unknown platform service {service!r}; known: {', '.join(SERVICES)}")
    return ADMIN_PRINCIPAL if service == "admin" else f"svc-{service}"


def local_credentials_file(settings: Settings) -> Path:
    """Where the local stack keeps its generated Kafka passwords (mode 0600)."""
    return settings.home / "kafka" / "credentials.json"


class KafkaCredentialsError(RuntimeError):
    """No credentials for a service: says which variables to set."""


TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def local_ca_file(settings: Settings) -> Path:
    """The CA of the local stack's TLS listener (``xietong stack up`` writes it)."""
    return settings.home / "kafka" / "tls" / "ca.pem"


def tls_config(settings: Settings) -> dict[str, str]:
    """librdkafka's TLS properties from the settings (for SSL and SASL_SSL)."""
    config = {
        "ssl.endpoint.identification.algorithm": (
            "https" if settings.kafka_ssl_endpoint_identification else "none"
        )
    }
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    if settings.kafka_ssl_certificate_location:
        config["ssl.certificate.location"] = str(settings.kafka_ssl_certificate_location)
    if settings.kafka_ssl_key_location:
        config["ssl.key.location"] = str(settings.kafka_ssl_key_location)
    if settings.kafka_ssl_key_password:
        config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The same TLS settings for Python's clients (aiokafka, under Faust)."""
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
    )
    if not settings.kafka_ssl_endpoint_identification:
        context.check_hostname = False
    if settings.kafka_ssl_certificate_location:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            settings.kafka_ssl_certificate_location,
            settings.kafka_ssl_key_location,
            password.get_secret_value() if password else None,
        )
    return context


def security_config(settings: Settings, service: str) -> dict[str, str]:
    """The client properties that connect ``service`` to the brokers: the security
    protocol, TLS where it says so, and the service's SASL credentials."""
    protocol = settings.kafka_security_protocol
    config = {"security.protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        config |= tls_config(settings)
    if not protocol.startswith("SASL"):
        return config
    if settings.kafka_username and settings.kafka_password:
        username = settings.kafka_username
        password = settings.kafka_password.get_secret_value()
    else:
        username = principal_name(service)
        path = local_credentials_file(settings)
        try:
            password = json.loads(path.read_text(encoding="utf-8"))[username]
        except (OSError, KeyError, ValueError):
            raise KafkaCredentialsError(
                f"no Kafka password for {username}: set XIETONG_KAFKA_USERNAME and"
                f" XIETONG_KAFKA_PASSWORD, or start the local stack (make up) to create {path}"
            ) from None
    return config | {
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": username,
        "sasl.password": password,
    }


#: The local schema registry's users (``XIETONG_SCHEMA_REGISTRY_AUTH=true``) and their
#: Apicurio roles: the platform registers schemas and sets subjects' compatibility
#: (sr-developer); an operator changes the registry's global settings (sr-admin); a
#: reader only reads schemas (sr-readonly).
SCHEMA_REGISTRY_USERS = {
    "xietong-platform": "sr-developer",
    "xietong-admin": "sr-admin",
    "xietong-reader": "sr-readonly",
}
SCHEMA_REGISTRY_PLATFORM_USER = "xietong-platform"


def local_schema_registry_credentials_file(settings: Settings) -> Path:
    """Where the local stack keeps its schema registry users' passwords (mode 0600)."""
    return settings.home / "schema-registry" / "credentials.json"


def schema_registry_credentials(settings: Settings) -> tuple[str, str] | None:
    """The user name and password for HTTP basic authentication to the schema registry,
    or None when the registry is not to be sent any."""
    if settings.schema_registry_username:
        password = settings.schema_registry_password
        if password is None:
            raise KafkaCredentialsError(
                f"XIETONG_SCHEMA_REGISTRY_USERNAME is {settings.schema_registry_username} but no"
                " password is set: set XIETONG_SCHEMA_REGISTRY_PASSWORD or"
                " XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE"
            )
        return settings.schema_registry_username, password.get_secret_value()
    if not settings.schema_registry_auth or settings.schema_registry_is_external:
        return None
    path = local_schema_registry_credentials_file(settings)
    username = SCHEMA_REGISTRY_PLATFORM_USER
    try:
        password = json.loads(path.read_text(encoding="utf-8"))[username]
    except (OSError, KeyError, ValueError):
        raise KafkaCredentialsError(
            f"no schema registry password for {username}: start the local stack with"
            f" XIETONG_SCHEMA_REGISTRY_AUTH=true (make up) to create {path}, or set"
            " XIETONG_SCHEMA_REGISTRY_USERNAME and XIETONG_SCHEMA_REGISTRY_PASSWORD"
        ) from None
    return username, password


def schema_registry_config(settings: Settings) -> dict[str, Any]:
    """The configuration of confluent-kafka's :class:`SchemaRegistryClient`: the URL, the
    registry's CA, and its credentials (OIDC client credentials when a token URL is set,
    else basic authentication when there are credentials, else none)."""
    url = settings.schema_registry_url
    config: dict[str, Any] = {"url": url}
    # its own CA, else (over https) the one that signed the brokers'
    ca = settings.schema_registry_ssl_ca_location or (
        settings.kafka_ssl_ca_location if url.startswith("https:") else None
    )
    if ca:
        config["ssl.ca.location"] = str(ca)
    if settings.schema_registry_oauth_token_url:
        secret = settings.schema_registry_oauth_client_secret
        if not settings.schema_registry_oauth_client_id or secret is None:
            raise KafkaCredentialsError(
                "XIETONG_SCHEMA_REGISTRY_OAUTH_TOKEN_URL is set: set"
                " XIETONG_SCHEMA_REGISTRY_OAUTH_CLIENT_ID and"
                " XIETONG_SCHEMA_REGISTRY_OAUTH_CLIENT_SECRET (or …_CLIENT_SECRET_FILE) too"
            )
        return config | {
            "bearer.auth.credentials.source": "OAUTHBEARER",
            "bearer.auth.issuer.endpoint.url": settings.schema_registry_oauth_token_url,
            "bearer.auth.client.id": settings.schema_registry_oauth_client_id,
            "bearer.auth.client.secret": secret.get_secret_value(),
            "bearer.auth.scope": settings.schema_registry_oauth_scope,
            "bearer.auth.logical.cluster": settings.schema_registry_oauth_logical_cluster,
        }
    credentials = schema_registry_credentials(settings)
    if credentials is not None:
        config["basic.auth.user.info"] = ":".join(credentials)
    return config


class KafkaClients:
    """Builds Kafka and schema registry clients for one service and one set of settings."""

    def __init__(self, settings: Settings, service: str = "admin") -> None:
        self.settings = settings
        self.service = service
        self.principal = principal_name(service)

    def group(self, name: str) -> str:
        """A consumer group id of this service: ``xietong.<service>.<name>``.

        Services may only use groups under their own prefix (the broker's ACLs).
        """
        return f"xietong.{self.service}.{name}"

    def _common(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            **security_config(self.settings, self.service),
            # librdkafka's own lines through Python's logging, so they are JSON lines too
            # (forwarded when the client is polled or flushed)
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        }

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent producer (acks=all) with small batching delay."""
        config = {
            **self._common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "zstd",
            **overrides,
        }
        return Producer(config)

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer that commits only what the caller says it has processed."""
        config = {
            **self._common(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **overrides,
        }
        return Consumer(config)

    def read_to_end(
        self,
        topic: str,
        purpose: str,
        timeout: float = 60.0,
        start: Mapping[int, int] | None = None,
    ) -> Iterator[Message]:
        """Every committed message of ``topic``, from its first offset (or the offset of
        ``start``, by partition) to its end now.

        For the platform's compacted bookkeeping topics (connector offsets, the HTTP
        ingest's answers), read whole at startup. Each partition ends at the end its
        consumer reports (``enable.partition.eof``): a partition written in transactions
        ends in a commit marker, which is never delivered. Raises TimeoutError when the
        end is not reached within ``timeout`` seconds.
        """
        consumer = self.consumer(
            group_id=self.group(f"{purpose}-{uuid.uuid4()}"),
            **{
                "enable.partition.eof": True,
                # Read by assignment and closed at once: its group coordinator connection is
                # often torn down mid-handshake, which librdkafka would report as an error.
                "log_level": 2,
            },
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            pending = set(metadata.partitions)
            begin = start or {}
            consumer.assign(
                [TopicPartition(topic, p, begin.get(p, OFFSET_BEGINNING)) for p in pending]
            )
            deadline = time.monotonic() + timeout
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} did not reach its end in {timeout:.0f} s")
                message = consumer.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise KafkaException(error)
        finally:
            consumer.close()

    def admin(self, **overrides: Any) -> AdminClient:
        return AdminClient({**self._common(), **overrides})

    @cache  # noqa: B019 - one registry client (and its schema cache) per factory
    def schema_registry(self) -> SchemaRegistryClient:
        return SchemaRegistryClient(schema_registry_config(self.settings))

    def avro_serializer(self, schema_str: str | None = None, **config: Any) -> AvroSerializer:
        """An Avro serializer writing the Confluent wire format (magic byte, schema id).

        With ``schema_str`` the given schema is written (it must be registered under the
        subject already); without it the subject's latest registered schema is used.
        """
        defaults = {**SERIALIZER_DEFAULTS, "use.latest.version": schema_str is None}
        return AvroSerializer(self.schema_registry(), schema_str, conf={**defaults, **config})

    def avro_deserializer(self, schema_str: str | None = None, **config: Any) -> AvroDeserializer:
        """An Avro deserializer reading the writer's schema by the id in each message."""
        conf = {"subject.name.strategy": topic_subject_name_strategy, **config}
        return AvroDeserializer(self.schema_registry(), schema_str, conf=conf)


def produce(producer: Producer, topic: str, **message: Any) -> None:
    """``producer.produce(topic, **message)``, waiting while librdkafka's queue is full
    (it sends meanwhile) instead of failing with ``BufferError``::

        produce(producer, "market.registrations", key=b"9133…", value=payload)
    """
    while True:
        try:
            producer.produce(topic, **message)
            return
        except BufferError:
            producer.poll(0.1)


@cache
def clients(service: str = "admin") -> KafkaClients:
    """The factory of one platform service, for the process-wide settings."""
    return KafkaClients(get_settings(), service)
