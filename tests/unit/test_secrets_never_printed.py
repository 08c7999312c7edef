"""Secrets are never printed: with every secret setting set to a known value, no
command's ``--help``, ``xietong stack status``, a settings object's ``repr`` nor a log
line shows one."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xietong.logs import LineFormatter, log_event
from xietong.settings import Settings, is_secret

SECRETS = {
    "XIETONG_KAFKA_PASSWORD": "kafka-Secret-7f3a",
    "XIETONG_KAFKA_SSL_KEY_PASSWORD": "keypass-Secret-19bd",
    "XIETONG_POSTGRES_PASSWORD": "pg-Secret-c0de",
    "XIETONG_SCHEMA_REGISTRY_PASSWORD": "registry-Secret-5e11",
    "XIETONG_SCHEMA_REGISTRY_OAUTH_CLIENT_SECRET": "oidc-Secret-a77e",
}
DATABASE_PASSWORD = "url-Secret-0b5e"

# Every command of the CLI, its --help run in a process whose environment holds the
# secrets from the start (so defaults computed at import time are covered too), then
# `stack status` on an empty home.
WALK = """
import sys
import typer
from typer.testing import CliRunner

from app.cli import app

root = typer.main.get_command(app)
runner = CliRunner()
paths = []

def walk(command, path):
    paths.append(path)
    for name, sub in getattr(command, "commands", {}).items():
        walk(sub, path + [name])

walk(root, [])
for path in paths:
    result = runner.invoke(app, path + ["--help"])
    assert result.exit_code == 0, (path, result.output)
    print(f"### {' '.join(path)}")
    print(result.output)
status = runner.invoke(app, ["stack", "status"])
print("### stack status", status.exit_code)
print(status.output)
print("COMMANDS", len(paths))
"""


def test_no_help_and_not_the_stack_status_shows_a_secret(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        **SECRETS,
        "XIETONG_HOME": str(tmp_path),
        "XIETONG_SCHEMA_REGISTRY_AUTH": "true",
        "XIETONG_SCHEMA_REGISTRY_USERNAME": "xietong-platform",
        "DATABASE_URL": f"postgresql+psycopg2://xietong:{DATABASE_PASSWORD}@db.prov:5432/x",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-c", WALK],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert int(output.rsplit("COMMANDS", 1)[1]) > 40  # the walk reached every command
    assert "### stack status 3" in output  # nothing runs in the empty home
    assert "schema-registry" in output
    for secret in [*SECRETS.values(), DATABASE_PASSWORD]:
        assert secret not in output


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+psycopg2://xietong:{DATABASE_PASSWORD}@db.prov:5432/x"
    )
    return Settings(home=tmp_path)


def test_every_secret_setting_is_a_secret_str(settings: Settings) -> None:
    secret_fields = {
        f"XIETONG_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if is_secret(field)
    }
    assert set(SECRETS) <= secret_fields
    assert set(SECRETS) | {"XIETONG_SCHEMA_REGISTRY_PASSWORD"} >= secret_fields
    for name in Settings.model_fields:
        assert not (
            ("password" in name or "secret" in name) and not is_secret(Settings.model_fields[name])
        ), name


def test_a_settings_object_shows_no_secret_however_it_is_printed(settings: Settings) -> None:
    for shown in (repr(settings), str(settings), f"{settings}", settings.model_dump_json()):
        for secret in [*SECRETS.values(), DATABASE_PASSWORD]:
            assert secret not in shown
    assert settings.database_url.endswith(f"{DATABASE_PASSWORD}@db.prov:5432/x")  # still usable


def test_a_log_line_given_the_settings_shows_no_secret(settings: Settings) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    logger = logging.getLogger("xietong.test.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        log_event(logger, "settings_read", settings=settings, password=settings.kafka_password)
        logger.info("settings: %s / %r", settings, settings)
        logger.warning("by mistake", extra={"settings": settings})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    for secret in [*SECRETS.values(), DATABASE_PASSWORD]:
        assert secret not in stream.getvalue()
