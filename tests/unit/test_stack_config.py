"""How the local stack reads its settings, without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack, StackError
from deploy.local.stack.kafka import KafkaBroker
from xietong.settings import Settings
from xietong.topics import TOPICS, TopicKey


@pytest.fixture(autouse=True)
def no_stack_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests describe the defaults: ignore ports and endpoints set in the shell."""
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_REGISTRY_URL",
        "DATABASE_URL",
        "CREDIT_DATABASE_URL",
        "XIETONG_KAFKA_PORT",
        "XIETONG_KAFKA_CONTROLLER_PORT",
        "XIETONG_SCHEMA_REGISTRY_PORT",
        "XIETONG_SCHEMA_REGISTRY_MANAGEMENT_PORT",
        "XIETONG_POSTGRES_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_describe_the_local_stack_on_loopback(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)

    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.schema_registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert settings.database_url.endswith("@127.0.0.1:5433/xietong_registry")
    assert settings.credit_database_url.endswith("@127.0.0.1:5433/xietong_credit")
    assert not settings.kafka_is_external


def test_endpoints_pointing_elsewhere_start_nothing_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1.prod:9092,kafka-2.prod:9092")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://registry.prod/apis/ccompat/v7")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://x@db.prod/registry")
    monkeypatch.setenv("CREDIT_DATABASE_URL", "postgresql+psycopg2://x@db.prod/credit")
    stack = LocalStack(Settings(home=tmp_path))

    lines: list[str] = []
    assert stack.up(report=lines.append) == []
    assert [status.state for status in stack.status()] == ["external"] * 3
    assert (
        "KAFKA_BOOTSTRAP_SERVERS=kafka-1.prod:9092,kafka-2.prod:9092" in stack.env_file.read_text()
    )


def test_the_local_stack_own_endpoints_in_the_environment_are_not_external(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user who sourced .local/stack.env still gets the local stack managed.
    settings = Settings(home=tmp_path)
    for name, value in settings.endpoints().items():
        monkeypatch.setenv(name, value)
    sourced = Settings(home=tmp_path)

    assert not sourced.kafka_is_external
    assert not sourced.schema_registry_is_external
    assert not sourced.postgres_is_external


def test_ports_are_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIETONG_KAFKA_PORT", "19092")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_PORT", "18081")
    settings = Settings(home=tmp_path)

    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.schema_registry_url == "http://127.0.0.1:18081/apis/ccompat/v7"


def test_a_taken_port_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = KafkaBroker(Settings(home=tmp_path, kafka_port=port))

        with pytest.raises(StackError) as error:
            broker.start()

    message = str(error.value)
    assert f"port {port}" in message
    assert "XIETONG_KAFKA_PORT" in message
    assert "\n" not in message


def test_every_uscc_keyed_topic_has_the_same_partition_count() -> None:
    settings = Settings(uscc_partitions=12)
    counts = {spec.partition_count(settings) for spec in TOPICS if spec.key is TopicKey.USCC}
    assert counts == {12}


def test_replication_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIETONG_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("XIETONG_MIN_INSYNC_REPLICAS", "2")
    settings = Settings()

    assert settings.replication_factor == 3
    assert all(spec.config(settings)["min.insync.replicas"] == "2" for spec in TOPICS)


def test_a_missing_maven_is_one_line_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.local.stack.maven import resolve_artifact

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH

    with pytest.raises(StackError) as error:
        resolve_artifact(
            Settings(home=tmp_path, cache_dir=tmp_path), "g:a:1:jar", tmp_path / "m.log"
        )

    assert "'mvn' was not found" in str(error.value)
    assert "apt-get install maven" in str(error.value)


def test_a_failed_download_names_the_artifact_and_where_the_details_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.local.stack.maven import resolve_artifact

    fake_mvn = tmp_path / "bin" / "mvn"
    fake_mvn.parent.mkdir()
    fake_mvn.write_text("#!/bin/sh\necho 'Could not transfer artifact' >&2\nexit 1\n")
    fake_mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_mvn.parent))
    log = tmp_path / "maven.log"

    with pytest.raises(StackError) as error:
        resolve_artifact(Settings(home=tmp_path, cache_dir=tmp_path), "io.x:app:9:tar.gz:all", log)

    message = str(error.value)
    assert "could not resolve io.x:app:9:tar.gz:all from Maven Central" in message
    assert str(log) in message and "\n" not in message
    assert "Could not transfer artifact" in log.read_text()


def test_a_java_too_old_for_a_service_says_which_version_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploy.local.stack import java

    monkeypatch.setattr(java, "_candidates", lambda: [Path("/usr/bin/java")])
    monkeypatch.setattr(java, "java_version", lambda path: 17)

    with pytest.raises(StackError) as error:
        java.find_java(21, "the schema registry (Apicurio 3.3.3)")

    assert "needs Java 21+, found: 17 (/usr/bin/java)" in str(error.value)


def test_the_database_url_printed_for_psql_is_libpq_s_and_shows_no_password() -> None:
    from xietong.settings import libpq_url

    assert (
        libpq_url("postgresql+psycopg2://auditor:s3cret@db.prod:5433/credit")
        == "postgresql://auditor@db.prod:5433/credit"
    )
    assert libpq_url("postgresql+psycopg2://xietong@127.0.0.1:5433/credit") == (
        "postgresql://xietong@127.0.0.1:5433/credit"
    )


def test_three_local_brokers_are_one_quorum_with_replicated_topics(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kafka_brokers=3, kafka_port=19092)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19102,127.0.0.1:19112"
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    nodes = [s for s in LocalStack(settings).services if isinstance(s, KafkaBroker)]
    assert [node.name for node in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(node.starts_together for node in nodes)
    second = dict(
        line.split("=", 1)
        for line in nodes[1].server_properties("pw").splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert second["node.id"] == "2"
    assert second["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9103,3@127.0.0.1:9113"
    )
    assert second["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:19102,")
    assert second["advertised.listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:19102,SASL_SSL://127.0.0.1:9104"
    )
    for name in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert second[name] == "3"
    assert second["min.insync.replicas"] == second["transaction.state.log.min.isr"] == "2"
    assert nodes[1].log_dirs.parent == tmp_path / "kafka-2"


def test_one_local_broker_keeps_its_name_storage_and_single_replicas(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    [broker] = [s for s in LocalStack(settings).services if isinstance(s, KafkaBroker)]
    assert broker.name == "kafka" and broker.data_dir == tmp_path / "kafka"
    assert (settings.replication_factor, settings.min_insync_replicas) == (1, 1)
    assert "controller.quorum.voters=1@127.0.0.1:9093" in broker.server_properties("pw")


def test_a_new_cluster_id_never_starts_like_an_option() -> None:
    from deploy.local.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]  # a '-' first would come 1 time in 64
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(cluster_id) == 22 for cluster_id in ids)
