"""The schema registry client's credentials, from the settings alone: basic authentication
from the environment or a file, the local stack's platform user when the stack runs the
registry with authentication, OIDC client credentials for confluent-kafka's bearer auth
(xietong/kafka.py ``schema_registry_config``); and the local registry's auth config."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import certifi
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import SecretStr

from deploy.local.stack.schema_registry import SchemaRegistry
from xietong.kafka import (
    SCHEMA_REGISTRY_USERS,
    KafkaClients,
    KafkaCredentialsError,
    local_schema_registry_credentials_file,
    schema_registry_config,
)
from xietong.settings import Settings

LOCAL = "http://127.0.0.1:8081/apis/ccompat/v7"


@pytest.fixture(autouse=True)
def _no_registry_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SCHEMA_REGISTRY_URL",
        "XIETONG_SCHEMA_REGISTRY_PORT",
        "XIETONG_SCHEMA_REGISTRY_AUTH",
        "XIETONG_SCHEMA_REGISTRY_USERNAME",
        "XIETONG_SCHEMA_REGISTRY_PASSWORD",
        "XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_without_credentials_the_client_gets_the_url_alone(tmp_path: Path) -> None:
    assert schema_registry_config(Settings(home=tmp_path)) == {"url": LOCAL}


def test_basic_authentication_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://registry.prov/apis/ccompat/v7")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_USERNAME", "xietong-platform")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_PASSWORD", "pa:ss")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_SSL_CA_LOCATION", str(tmp_path / "ca.pem"))
    (tmp_path / "ca.pem").write_bytes(Path(certifi.where()).read_bytes())
    config = schema_registry_config(Settings(home=tmp_path))
    assert config == {
        "url": "https://registry.prov/apis/ccompat/v7",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "basic.auth.user.info": "xietong-platform:pa:ss",
    }
    SchemaRegistryClient(config)  # confluent-kafka takes it (the password may hold a colon)


def test_the_password_is_read_from_the_file_its_file_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "registry-password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_USERNAME", "xietong-platform")
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE", str(secret))
    settings = Settings(home=tmp_path)
    assert settings.schema_registry_password == SecretStr("from-a-file")
    assert schema_registry_config(settings)["basic.auth.user.info"] == (
        "xietong-platform:from-a-file"
    )
    # the variable itself wins over the file
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_PASSWORD", "from-the-environment")
    assert Settings(home=tmp_path).schema_registry_password == SecretStr("from-the-environment")


def test_every_secret_setting_may_come_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kafka").write_text("k")
    monkeypatch.setenv("XIETONG_KAFKA_PASSWORD_FILE", str(tmp_path / "kafka"))
    monkeypatch.delenv("XIETONG_KAFKA_PASSWORD", raising=False)
    assert Settings(home=tmp_path).kafka_password == SecretStr("k")


def test_a_missing_secret_file_is_named_without_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE: cannot read"):
        Settings(home=tmp_path)


def test_a_user_name_without_a_password_says_what_to_set(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, schema_registry_username="xietong-platform")
    with pytest.raises(KafkaCredentialsError, match="XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE"):
        schema_registry_config(settings)


def test_the_local_stack_with_auth_gives_the_platform_users_password(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, schema_registry_auth=True)
    with pytest.raises(KafkaCredentialsError, match="XIETONG_SCHEMA_REGISTRY_AUTH=true"):
        schema_registry_config(settings)
    passwords = SchemaRegistry(settings).credentials()
    assert set(passwords) == set(SCHEMA_REGISTRY_USERS)
    assert schema_registry_config(settings) == {
        "url": LOCAL,
        "basic.auth.user.info": f"xietong-platform:{passwords['xietong-platform']}",
    }
    # the one client factory builds its registry client from the same configuration
    client = KafkaClients(settings, "sink").schema_registry()
    assert client._rest_client.auth == ("xietong-platform", passwords["xietong-platform"])
    # an external registry is not given the local stack's passwords
    external = settings.model_copy(update={"schema_registry_url_env": "https://r.prov/apis"})
    assert "basic.auth.user.info" not in schema_registry_config(external)


def test_oidc_client_credentials_configure_confluent_kafkas_bearer_auth(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        schema_registry_oauth_token_url="https://sso.prov/realms/x/protocol/openid-connect/token",
        schema_registry_oauth_client_id="xietong",
        schema_registry_oauth_client_secret=SecretStr("c1ient"),
        schema_registry_oauth_scope="registry",
        schema_registry_username="ignored",
    )
    config = schema_registry_config(settings)
    assert config == {
        "url": LOCAL,
        "bearer.auth.credentials.source": "OAUTHBEARER",
        "bearer.auth.issuer.endpoint.url": (
            "https://sso.prov/realms/x/protocol/openid-connect/token"
        ),
        "bearer.auth.client.id": "xietong",
        "bearer.auth.client.secret": "c1ient",
        "bearer.auth.scope": "registry",
        "bearer.auth.logical.cluster": "apicurio",
    }
    SchemaRegistryClient(config)  # confluent-kafka accepts it (the token is fetched on use)
    without_secret = settings.model_copy(update={"schema_registry_oauth_client_secret": None})
    with pytest.raises(KafkaCredentialsError, match="OAUTH_CLIENT_SECRET"):
        schema_registry_config(without_secret)


def test_the_local_registry_with_auth_gets_its_users_in_private_files(tmp_path: Path) -> None:
    registry = SchemaRegistry(Settings(home=tmp_path, schema_registry_auth=True))
    registry.write_auth_config()
    credentials = local_schema_registry_credentials_file(registry.settings)
    for path in (credentials, registry.auth_config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = json.loads(credentials.read_text())
    config = registry.auth_config_file.read_text().splitlines()
    assert "quarkus.http.auth.basic=true" in config
    assert "apicurio.auth.role-based-authorization=true" in config
    for user, role in SCHEMA_REGISTRY_USERS.items():
        assert f"quarkus.security.users.embedded.users.{user}={passwords[user]}" in config
        assert f"quarkus.security.users.embedded.roles.{user}={role}" in config
    environment = registry.environment()
    assert environment["QUARKUS_CONFIG_LOCATIONS"] == registry.auth_config_file.as_uri()
    assert not any(password in " ".join(registry.command()) for password in passwords.values())
    assert registry.credentials() == passwords  # generated once


def test_without_auth_the_local_registry_gets_no_auth_config(tmp_path: Path) -> None:
    registry = SchemaRegistry(Settings(home=tmp_path))
    assert "QUARKUS_CONFIG_LOCATIONS" not in registry.environment()
