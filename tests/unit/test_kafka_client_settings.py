"""The client properties a service (and a department's guide, connectors/kit/README.md)
takes from the settings: SASL/SCRAM, and the CA file over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from xietong.kafka import security_config
from xietong.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(kafka_username="dept-hz-health", kafka_password=SecretStr("pw"), **values)


def test_over_sasl_ssl_the_ca_file_is_librdkafka_s_ssl_ca_location(tmp_path: Path) -> None:
    ca = tmp_path / "province-ca.pem"
    config = security_config(
        settings(kafka_security_protocol="SASL_SSL", kafka_ssl_ca_location=ca), "connectors"
    )
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "dept-hz-health",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_without_tls_no_ca_is_given_even_when_one_is_set(tmp_path: Path) -> None:
    config = security_config(settings(kafka_ssl_ca_location=tmp_path / "ca.pem"), "connectors")
    assert config["security.protocol"] == "SASL_PLAINTEXT" and "ssl.ca.location" not in config


def test_without_a_ca_file_tls_uses_the_system_store() -> None:
    config = security_config(settings(kafka_security_protocol="SASL_SSL"), "connectors")
    assert "ssl.ca.location" not in config


def test_an_https_schema_registry_is_trusted_through_the_same_ca(tmp_path: Path) -> None:
    from deploy.local.stack.tls import broker_keystore
    from xietong.kafka import KafkaClients

    ca = broker_keystore(tmp_path / "tls").ca
    clients = KafkaClients(
        settings(kafka_ssl_ca_location=ca, schema_registry_url_env="https://sr.example:8081"),
    )
    verify = clients.schema_registry()._rest_client.verify
    assert any("Xietong local CA" in str(c["subject"]) for c in verify.get_ca_certs())
