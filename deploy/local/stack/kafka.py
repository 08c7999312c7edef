"""Apache Kafka 4.x, one combined broker and controller in KRaft mode.

The broker runs from the official jars resolved off Maven Central (``kafka_2.13`` plus a
log4j2 backend, see ``deploy/local/kafka/pom.xml``); no distribution tarball is
downloaded. Storage is formatted once, on the first start, under ``.local/kafka/``.
Topics are never created implicitly: ``auto.create.topics.enable=false`` and the
platform declares its topics in :mod:`xietong.topics`.

Clients authenticate with SASL/SCRAM-SHA-512 and the StandardAuthorizer checks every
request against ACLs (none means denied). On the first start a password is generated
for the administrator (``xietong-admin``, the only super user) and for each platform
service (``svc-connectors`` …) into ``.local/kafka/credentials.json`` (mode 0600); the
administrator's SCRAM credential is written into the storage when it is formatted, the
services' are created over the admin API after every start. The controller listener is
plaintext on loopback and its anonymous principal is a super user: KRaft cannot
authenticate controller connections with SCRAM, and it serves no client requests.

Beside the SASL_PLAINTEXT listener, a SASL_SSL one (``XIETONG_KAFKA_TLS_PORT``, 0 for
none) serves the same principals over TLS, with a certificate from a CA the stack
generates (:mod:`deploy.local.stack.tls`): a client that sets
``XIETONG_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` and ``XIETONG_KAFKA_SSL_CA_LOCATION`` to
``.local/kafka/tls/ca.pem`` connects as it would to a province's cluster.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from deploy.local.stack.base import LocalService, StackError, port_is_open
from deploy.local.stack.java import find_java
from deploy.local.stack.maven import resolve_classpath
from deploy.local.stack.tls import broker_keystore
from xietong.kafka import (
    ADMIN_PRINCIPAL,
    SERVICES,
    local_ca_file,
    local_credentials_file,
    principal_name,
    security_config,
)
from xietong.settings import LOOPBACK, Settings

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "kafka"
SCRAM_ITERATIONS = 8192


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes one (URL-safe base64 of a UUID), never starting
    with '-': the storage tool would take it for an option (1 start in 64 failed so)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


class KafkaBroker(LocalService):
    """One node of the local cluster: node 1 alone (``kafka``) on a laptop, or nodes
    ``kafka-1`` … ``kafka-n`` of ``XIETONG_KAFKA_BROKERS`` (each with storage of its own),
    which answer only once a majority of them runs, so the stack launches them all
    before it waits (:meth:`LocalService.launch`)."""

    port_setting = "XIETONG_KAFKA_PORT"
    start_timeout = 90.0
    starts_together = True

    def __init__(self, settings: Settings, node: int = 1) -> None:
        super().__init__(settings)
        self.node = node
        self.name = "kafka" if settings.kafka_brokers == 1 else f"kafka-{node}"
        if settings.kafka_brokers > 1:
            # a node killed outright recovers every partition's log before it answers
            self.start_timeout = 300.0

    @property
    def nodes(self) -> range:
        return range(1, self.settings.kafka_brokers + 1)

    def _port(self, first: int, node: int | None = None) -> int:
        return self.settings.kafka_node_port(first, node or self.node)

    @property
    def port(self) -> int:
        return self._port(self.settings.kafka_port)

    @property
    def controller_port(self) -> int:
        return self._port(self.settings.kafka_controller_port)

    @property
    def tls_port(self) -> int:
        return self._port(self.settings.kafka_tls_port)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def endpoints(self) -> str:
        if not self.tls_port:
            return self.endpoint
        return (
            f"{self.endpoint} (SASL_PLAINTEXT) and {LOOPBACK}:{self.tls_port}"
            f" (SASL_SSL, CA {local_ca_file(self.settings)})"
        )

    @property
    def is_external(self) -> bool:
        return self.settings.kafka_is_external

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    def java(self) -> str:
        return find_java(17, f"Kafka {self.settings.kafka_version}")

    def classpath(self) -> str:
        return resolve_classpath(
            self.settings,
            DEPLOY_DIR / "pom.xml",
            {"kafka.version": self.settings.kafka_version},
            self.settings.home / "logs" / "maven.log",
        )

    @property
    def credentials_file(self) -> Path:
        return local_credentials_file(self.settings)

    def credentials(self) -> dict[str, str]:
        """The SCRAM passwords of the administrator and the services, created once."""
        if self.credentials_file.exists():
            stored: dict[str, str] = json.loads(self.credentials_file.read_text(encoding="utf-8"))
            if all(principal_name(service) in stored for service in SERVICES):
                return stored
        else:
            stored = {}
        if (self.log_dirs / "meta.properties").exists() and ADMIN_PRINCIPAL not in stored:
            raise StackError(
                f"the Kafka storage in {self.log_dirs} was formatted without SASL credentials"
                " (an older stack): delete .local/kafka (or run make clean) and make up again"
            )
        for service in SERVICES:
            stored.setdefault(principal_name(service), secrets.token_urlsafe(24))
        self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
        self.credentials_file.touch(mode=0o600)
        self.credentials_file.write_text(json.dumps(stored, indent=2), encoding="utf-8")
        return stored

    @property
    def tls_dir(self) -> Path:
        return local_ca_file(self.settings).parent

    @property
    def cluster_id_file(self) -> Path:
        return local_credentials_file(self.settings).parent / f"cluster-{len(self.nodes)}.id"

    def cluster_id(self) -> str:
        """One id for every node of the cluster (a single node's is its own)."""
        if len(self.nodes) == 1:
            return new_cluster_id()
        if not self.cluster_id_file.exists():
            self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            generated = new_cluster_id()
            self.cluster_id_file.write_text(generated)
        return self.cluster_id_file.read_text().strip()

    def prepare(self) -> None:
        if port_is_open(self.controller_port):
            raise StackError(
                f"port {self.controller_port} for the controller of {self.name} is taken:"
                " stop that process, or set XIETONG_KAFKA_CONTROLLER_PORT to a free port"
            )
        if self.tls_port and port_is_open(self.tls_port):
            raise StackError(
                f"port {self.tls_port} for the TLS listener of {self.name} is taken:"
                " stop that process, or set XIETONG_KAFKA_TLS_PORT to a free port (0: none)"
            )
        java = self.java()
        classpath = self.classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passwords = self.credentials()
        self.config_file.touch(mode=0o600)
        self.config_file.write_text(self.server_properties(passwords[ADMIN_PRINCIPAL]))
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage(java, classpath, passwords[ADMIN_PRINCIPAL])

    def after_start(self) -> None:
        """Create or refresh the services' SCRAM credentials (idempotent)."""
        passwords = self.credentials()
        admin = self._admin()
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                name,
                ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                password.encode(),
            )
            for name, password in passwords.items()
            if name != ADMIN_PRINCIPAL
        ]
        # A node just back in a cluster answers before the controllers take its requests
        # at once (seen on a rolling restart): try again for a while.
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                for future in admin.alter_user_scram_credentials(upserts).values():
                    future.result()
                return
            except KafkaException as error:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{self.name}: the services' SCRAM credentials could not be written:"
                        f" {error}"
                    ) from error
                time.sleep(1)

    def _admin(self) -> AdminClient:
        return AdminClient(
            {
                # this node only: it is ready when it answers for itself
                "bootstrap.servers": self.endpoint,
                "log_level": 0,
                "socket.timeout.ms": 2000,
                **security_config(self.settings, "admin"),
            }
        )

    def server_properties(self, admin_password: str) -> str:
        controller = self.controller_port
        voters = ",".join(
            f"{node}@{LOOPBACK}:{self._port(self.settings.kafka_controller_port, node)}"
            for node in self.nodes
        )
        replicas, in_sync = self.settings.replication_factor, self.settings.min_insync_replicas
        login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{ADMIN_PRINCIPAL}" password="{admin_password}";'
        )
        listeners = [f"SASL_PLAINTEXT://{LOOPBACK}:{self.port}"]
        tls = []
        if self.tls_port:
            # the same SCRAM principals and ACLs over TLS, from the stack's own CA
            store = broker_keystore(self.tls_dir)
            listeners.append(f"SASL_SSL://{LOOPBACK}:{self.tls_port}")
            tls = [
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={store.keystore}",
                f"ssl.keystore.password={store.password}",
                f"ssl.key.password={store.password}",
            ]
        return "\n".join(
            [
                "# Written by `xietong stack up` on every start; edit the settings, not this file.",
                "process.roles=broker,controller",
                f"node.id={self.node}",
                f"controller.quorum.voters={voters}",
                f"listeners={','.join(listeners)},CONTROLLER://{LOOPBACK}:{controller}",
                f"advertised.listeners={','.join(listeners)}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=SASL_PLAINTEXT",
                "listener.security.protocol.map="
                "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={login}",
                *tls,
                # Every request is authorised; what no ACL allows is denied.
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false",
                f"super.users=User:{ADMIN_PRINCIPAL};User:ANONYMOUS",
                f"log.dirs={self.log_dirs}",
                # The platform declares every topic it uses (xietong topics apply).
                "auto.create.topics.enable=false",
                "num.partitions=1",
                # as the platform's topics are replicated (XIETONG_REPLICATION_FACTOR …)
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={in_sync}",
                f"offsets.topic.replication.factor={replicas}",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={in_sync}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={in_sync}",
                # A local cluster: start consumer groups without the 3 s delay.
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    def _format_storage(self, java: str, classpath: str, admin_password: str) -> None:
        cluster_id = self.cluster_id()
        result = subprocess.run(
            [
                java,
                *self._jvm_options(),
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.config_file),
                "--add-scram",
                f"SCRAM-SHA-512=[name={ADMIN_PRINCIPAL},password={admin_password}]",
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {self.log_dirs} failed: "
                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}"
            )

    def _jvm_options(self) -> list[str]:
        logs = self.settings.home / "logs"
        return [
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={logs}",
        ]

    def command(self) -> list[str]:
        heap = self.settings.kafka_heap
        return [
            self.java(),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            *self._jvm_options(),
            "-cp",
            self.classpath(),
            "kafka.Kafka",
            str(self.config_file),
        ]

    def is_ready(self) -> bool:
        if not port_is_open(self.port):
            return False
        try:
            metadata = self._admin().list_topics(timeout=3)
        except Exception:
            return False
        return self.node in metadata.brokers
