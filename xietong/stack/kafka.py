"""Apache Kafka 4.x, one combined broker and controller in KRaft mode.

The broker runs from the official jars resolved off Maven Central (``kafka_2.13`` plus a
log4j2 backend, see ``deploy/local/kafka/pom.xml``); no distribution tarball is
downloaded. Storage is formatted once, on the first start, under ``.local/kafka/``.
Topics are never created implicitly: ``auto.create.topics.enable=false`` and the
platform declares its topics in :mod:`xietong.topics`.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from xietong.settings import LOOPBACK
from xietong.stack.base import LocalService, StackError, port_is_open
from xietong.stack.java import find_java
from xietong.stack.maven import resolve_classpath

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka"


class KafkaBroker(LocalService):
    name = "kafka"
    port_setting = "XIETONG_KAFKA_PORT"
    start_timeout = 90.0

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def endpoint(self) -> str:
        return self.settings.local_bootstrap_servers

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

    def prepare(self) -> None:
        if port_is_open(self.settings.kafka_controller_port):
            raise StackError(
                f"port {self.settings.kafka_controller_port} for the Kafka controller is taken:"
                " stop that process, or set XIETONG_KAFKA_CONTROLLER_PORT to a free port"
            )
        java = self.java()
        classpath = self.classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage(java, classpath)

    def server_properties(self) -> str:
        controller = self.settings.kafka_controller_port
        return "\n".join(
            [
                "# Written by `xietong stack up` on every start; edit the settings, not this file.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{LOOPBACK}:{controller}",
                f"listeners=PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{controller}",
                f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self.log_dirs}",
                # The platform declares every topic it uses (xietong topics apply).
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # A single local broker: start consumer groups without the 3 s delay.
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    def _format_storage(self, java: str, classpath: str) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
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
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.endpoint, "log_level": 0, "socket.timeout.ms": 2000}
        )
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception:
            return False
        return bool(metadata.brokers)
