"""The one client factory's security settings: TLS and SASL from the settings alone, the
same for librdkafka and for Faust's aiokafka (xietong/kafka.py, streams/runtime.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr

from deploy.local.stack.tls import broker_keystore
from streams.runtime import broker_credentials
from xietong.kafka import KafkaCredentialsError, security_config
from xietong.settings import Settings


def test_sasl_ssl_takes_the_ca_the_client_certificate_and_the_credentials(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_username="svc-sink",
        kafka_password=SecretStr("s3cret"),
        kafka_ssl_ca_location=tmp_path / "ca.pem",
        kafka_ssl_certificate_location=tmp_path / "client.pem",
        kafka_ssl_key_location=tmp_path / "client.key",
        kafka_ssl_key_password=SecretStr("k3y"),
    )
    assert security_config(settings, "sink") == {
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
        "ssl.key.password": "k3y",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-sink",
        "sasl.password": "s3cret",
    }


def test_plain_sasl_carries_no_tls_and_tls_alone_no_sasl(tmp_path: Path) -> None:
    with_sasl = Settings(home=tmp_path, kafka_username="u", kafka_password=SecretStr("p"))
    assert not any(key.startswith("ssl.") for key in security_config(with_sasl, "sink"))
    tls_only = Settings(home=tmp_path, kafka_security_protocol="SSL")
    assert security_config(tls_only, "sink") == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_without_credentials_the_error_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(KafkaCredentialsError, match="XIETONG_KAFKA_PASSWORD"):
        security_config(Settings(home=tmp_path), "sink")


def test_fausts_credentials_carry_a_context_trusting_the_same_ca(tmp_path: Path) -> None:
    store = broker_keystore(tmp_path / "tls")
    settings = Settings(
        home=tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_username="svc-streams",
        kafka_password=SecretStr("p"),
        kafka_ssl_ca_location=store.ca,
    )
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    context = credentials.ssl_context
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert any("Xietong local CA" in str(ca["subject"]) for ca in context.get_ca_certs())
    tls_only = settings.model_copy(update={"kafka_security_protocol": "SSL"})
    assert isinstance(broker_credentials(tls_only), faust.SSLCredentials)


def test_the_stacks_ca_is_kept_and_the_broker_certificate_reused_until_it_nears_its_end(
    tmp_path: Path,
) -> None:
    first = broker_keystore(tmp_path / "tls")
    ca, keystore = first.ca.read_bytes(), first.keystore.read_bytes()
    again = broker_keystore(tmp_path / "tls")
    assert again.ca.read_bytes() == ca and again.keystore.read_bytes() == keystore
    private = ("ca-key.pem", "broker.p12", "broker.p12.password")
    assert all((tmp_path / "tls" / name).stat().st_mode & 0o777 == 0o600 for name in private)
