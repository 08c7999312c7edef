"""The client properties a service (and a department's guide, connectors/kit/README.md)
takes from the settings: SASL/SCRAM, and the CA file over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from xietong.kafka import sasl_config
from xietong.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(kafka_username="dept-hz-health", kafka_password=SecretStr("pw"), **values)


def test_over_sasl_ssl_the_ca_file_is_librdkafka_s_ssl_ca_location(tmp_path: Path) -> None:
    ca = tmp_path / "province-ca.pem"
    config = sasl_config(
        settings(kafka_security_protocol="SASL_SSL", kafka_ssl_ca_location=ca), "connectors"
    )
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "dept-hz-health",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
    }


def test_without_tls_no_ca_is_given_even_when_one_is_set(tmp_path: Path) -> None:
    config = sasl_config(settings(kafka_ssl_ca_location=tmp_path / "ca.pem"), "connectors")
    assert config["security.protocol"] == "SASL_PLAINTEXT" and "ssl.ca.location" not in config


def test_without_a_ca_file_tls_uses_the_system_store() -> None:
    config = sasl_config(settings(kafka_security_protocol="SASL_SSL"), "connectors")
    assert "ssl.ca.location" not in config
