"""The integration tests' services as containers, for machines with a Docker engine.

Used instead of the local stack when ``XIETONG_TESTCONTAINERS=1`` and
:func:`docker_available` (see ``tests/conftest.py``). :func:`start_containers` starts the
same three services as ``make up``, at the versions of :mod:`xietong.settings`, and
returns the four endpoint variables for them::

    endpoints, stop = start_containers()
    try:
        settings = Settings(**endpoints)
        ...
    finally:
        stop()

Kafka is a plain :class:`DockerContainer`: testcontainers' ``KafkaContainer`` (and its
``with_kraft()``) drives Confluent's ``cp-kafka`` image and refuses the Apache image's
version numbers. The Apache image configures the broker from ``KAFKA_*`` variables, but
the address it advertises must contain the host port Docker maps, known only once the
container runs; so the container waits for that address in a file before it launches
the broker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

from xietong.settings import (
    CREDIT_DATABASE,
    REGISTRY_DATABASE,
    SCHEMA_REGISTRY_DATABASE,
    get_settings,
)

# The script that creates the platform's databases, shared with deploy/docker-compose.yml.
CREATE_DATABASES_SQL = (
    Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "create-databases.sql"
)

POSTGRES_IMAGE = "postgres:15"
POSTGRES_ALIAS = "postgres"
KAFKA_CLIENT_PORT = 9092  # advertised as the host and mapped port, for the tests
KAFKA_BROKER_PORT = 19092  # the broker's own listener, for requests it sends itself
KAFKA_CONTROLLER_PORT = 9093
KAFKA_CLUSTER_ID = "Y_duyGyhSWOIKnZEYZs1qA"
KAFKA_ADVERTISED_FILE = "/tmp/advertised-listeners"
REGISTRY_PORT = 8080
CCOMPAT_PATH = "/apis/ccompat/v7"
STARTUP_TIMEOUT_S = 180


def docker_available() -> bool:
    """True when a Docker engine answers; False on any error (no client, no socket, …)."""
    try:
        import docker

        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_containers() -> tuple[dict[str, str], Callable[[], None]]:
    """Start PostgreSQL, Kafka and the schema registry; their endpoints and a stop function.

    The endpoints are the variables of :meth:`xietong.settings.Settings.endpoints`
    (``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL`` ending in ``/apis/ccompat/v7``,
    ``DATABASE_URL`` and ``CREDIT_DATABASE_URL`` as ``postgresql+psycopg2://`` URLs).
    Returns once every service answers: PostgreSQL has its three databases, the broker
    has started, and ``GET <registry>/apis/ccompat/v7/subjects`` answers 200. If a
    service fails to start, those already started are removed before the error is raised.
    The stop function removes the containers and their network.
    """
    settings = get_settings()
    password = settings.postgres_password.get_secret_value()
    with ExitStack() as cleanup:
        network = Network().create()
        cleanup.callback(network.remove)

        postgres = _postgres(network, settings.postgres_user, password)
        cleanup.callback(postgres.stop)
        postgres.start()

        kafka = _kafka(settings.kafka_version, settings.kafka_heap)
        cleanup.callback(kafka.stop)
        bootstrap_servers = _start_kafka(kafka)

        registry = _schema_registry(
            network, settings.apicurio_version, settings.postgres_user, password
        )
        cleanup.callback(registry.stop)
        registry.start()

        database_host = postgres.get_container_host_ip()
        database_port = postgres.get_exposed_port(5432)
        credentials = f"{settings.postgres_user}:{password}"

        def database_url(database: str) -> str:
            return f"postgresql+psycopg2://{credentials}@{database_host}:{database_port}/{database}"

        registry_url = (
            f"http://{registry.get_container_host_ip()}:{registry.get_exposed_port(REGISTRY_PORT)}"
        )
        endpoints = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "SCHEMA_REGISTRY_URL": f"{registry_url}{CCOMPAT_PATH}",
            "DATABASE_URL": database_url(REGISTRY_DATABASE),
            "CREDIT_DATABASE_URL": database_url(CREDIT_DATABASE),
        }
        # Started: from here on the caller owns the containers, through the stop function.
        running = cleanup.pop_all()
    return endpoints, running.close


def _postgres(network: Network, user: str, password: str) -> PostgresContainer:
    """PostgreSQL 15 that creates the platform's databases when it initialises."""
    # POSTGRES_DB=postgres: the entrypoint creates no database of its own, the script all.
    return (
        PostgresContainer(POSTGRES_IMAGE, username=user, password=password, dbname="postgres")
        .with_network(network)
        .with_network_aliases(POSTGRES_ALIAS)
        .with_copy_into_container(
            CREATE_DATABASES_SQL, "/docker-entrypoint-initdb.d/create-databases.sql"
        )
    )


def _kafka(version: str, heap: str) -> DockerContainer:
    """One Apache Kafka broker and controller in KRaft mode, configured like the local one."""
    waits_for_address = (
        f"while [ ! -s {KAFKA_ADVERTISED_FILE} ]; do sleep 0.1; done; "
        f'export KAFKA_ADVERTISED_LISTENERS="$(cat {KAFKA_ADVERTISED_FILE})"; '
        "exec /etc/kafka/docker/run"
    )
    return (
        DockerContainer(f"apache/kafka:{version}")
        .with_exposed_ports(KAFKA_CLIENT_PORT)
        .with_command(["bash", "-c", waits_for_address])
        .with_envs(
            CLUSTER_ID=KAFKA_CLUSTER_ID,
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_CONTROLLER_QUORUM_VOTERS=f"1@localhost:{KAFKA_CONTROLLER_PORT}",
            KAFKA_LISTENERS=(
                f"PLAINTEXT://:{KAFKA_CLIENT_PORT},BROKER://:{KAFKA_BROKER_PORT},"
                f"CONTROLLER://:{KAFKA_CONTROLLER_PORT}"
            ),
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=(
                "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            KAFKA_INTER_BROKER_LISTENER_NAME="BROKER",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            # The platform declares every topic it uses (xietong topics apply).
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_NUM_PARTITIONS="1",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_HEAP_OPTS=f"-Xms{heap} -Xmx{heap}",
        )
    )


def _start_kafka(kafka: DockerContainer) -> str:
    """Start the broker, give it the address clients reach it at; its bootstrap servers."""
    kafka.start()
    bootstrap_servers = (
        f"{kafka.get_container_host_ip()}:{kafka.get_exposed_port(KAFKA_CLIENT_PORT)}"
    )
    advertised = f"PLAINTEXT://{bootstrap_servers},BROKER://localhost:{KAFKA_BROKER_PORT}"
    kafka.copy_into_container(advertised.encode(), KAFKA_ADVERTISED_FILE)
    LogMessageWaitStrategy(re.compile(r"Kafka Server started")).with_startup_timeout(
        STARTUP_TIMEOUT_S
    ).wait_until_ready(kafka)
    return bootstrap_servers


def _schema_registry(network: Network, version: str, user: str, password: str) -> DockerContainer:
    """Apicurio Registry storing its schemas in the ``xietong_schemas`` database."""
    ready = HttpWaitStrategy(REGISTRY_PORT, f"{CCOMPAT_PATH}/subjects").for_status_code(200)
    return (
        DockerContainer(f"apicurio/apicurio-registry:{version}")
        .with_network(network)
        .with_exposed_ports(REGISTRY_PORT)
        .with_envs(
            APICURIO_STORAGE_KIND="sql",
            APICURIO_STORAGE_SQL_KIND="postgresql",
            APICURIO_DATASOURCE_URL=(
                f"jdbc:postgresql://{POSTGRES_ALIAS}:5432/{SCHEMA_REGISTRY_DATABASE}"
            ),
            APICURIO_DATASOURCE_USERNAME=user,
            APICURIO_DATASOURCE_PASSWORD=password,
            # Confluent clients expect Confluent's global ids, one per schema content.
            APICURIO_CCOMPAT_LEGACY_ID_MODE_ENABLED="false",
        )
        .waiting_for(ready.with_startup_timeout(STARTUP_TIMEOUT_S))
    )
