"""``xietong registry rotate-token | revoke-token``: what they print, without a database
(the registry's service is faked here; tests/integration/test_registry_cli.py runs them on
a real registry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from app import cli
from registry import service

TOKEN = "xtr_the-new-token"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    made: list[tuple[str, int]] = []

    @contextmanager
    def no_database() -> Iterator[Any]:
        yield None

    def rotate(session: Any, actor: Any, credential_id: int) -> Any:
        made.append(("rotate", credential_id))
        department = SimpleNamespace(code="hz-health")
        return SimpleNamespace(
            credential=SimpleNamespace(id=credential_id + 1, department=department), token=TOKEN
        )

    def revoke(session: Any, actor: Any, credential_id: int) -> Any:
        made.append(("revoke", credential_id))
        return SimpleNamespace(id=credential_id, department=None)

    monkeypatch.setattr(cli, "_registry_transaction", no_database)
    monkeypatch.setattr(service, "rotate_credential", rotate)
    monkeypatch.setattr(service, "revoke_credential", revoke)
    return made


def test_a_rotated_token_is_the_only_thing_on_stdout(calls: list[tuple[str, int]]) -> None:
    result = CliRunner().invoke(cli.app, ["registry", "rotate-token", "7"])

    assert result.exit_code == 0, result.output
    assert result.stdout == TOKEN + "\n"  # TOKEN=$(xietong registry rotate-token 7)
    assert "credential 7 of hz-health revoked; its replacement 8" in result.stderr
    assert calls == [("rotate", 7)]


def test_revoking_names_the_credential_and_its_owner(calls: list[tuple[str, int]]) -> None:
    result = CliRunner().invoke(cli.app, ["registry", "revoke-token", "3"])

    assert result.exit_code == 0, result.output
    assert "credential 3 of admin revoked" in result.stdout and TOKEN not in result.output
    assert calls == [("revoke", 3)]


def test_a_credential_id_is_a_number() -> None:
    result = CliRunner().invoke(
        cli.app, ["registry", "revoke-token", "hz-health"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and "credential_id" in result.output
