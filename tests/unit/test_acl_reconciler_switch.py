"""The registry's ACL reconciler can be switched off, for a cluster whose users and ACLs
belong to someone else (Strimzi's User Operator): then it still makes the department
topics, and never reads, creates or removes an ACL."""

from __future__ import annotations

from typing import Any

import pytest

import registry.acl as acl
from registry.enforcer import manages_acls
from registry.grants import DepartmentGrant
from registry.settings import RegistrySettings
from xietong.settings import Settings


def test_the_reconciler_is_on_by_default_and_off_with_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RegistrySettings().acl_reconciler is True
    monkeypatch.setenv("XIETONG_REGISTRY_ACL_RECONCILER", "false")
    assert RegistrySettings().acl_reconciler is False


@pytest.mark.parametrize(
    ("protocol", "switch", "expected"),
    [
        ("SASL_PLAINTEXT", True, True),
        ("SASL_SSL", True, True),
        ("SASL_SSL", False, False),  # Strimzi's User Operator owns the ACLs
        ("PLAINTEXT", True, False),  # an open broker has no ACLs to keep
    ],
)
def test_the_registry_manages_acls_only_on_a_secured_broker_with_the_reconciler_on(
    protocol: str, switch: bool, expected: bool
) -> None:
    settings = Settings(kafka_security_protocol=protocol)
    assert manages_acls(settings, RegistrySettings(acl_reconciler=switch)) is expected


class AdminWithoutAcls:
    """A broker's admin client that fails the test on any ACL call."""

    def describe_user_scram_credentials(self) -> dict[str, Any]:
        return {"dept-hz-amr": object()}

    def __getattr__(self, name: str) -> Any:
        if "acl" in name:
            raise AssertionError(f"the switched-off reconciler called {name}")
        raise AttributeError(name)


def test_a_switched_off_reconciler_makes_department_topics_and_touches_no_acl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied: list[str] = []
    monkeypatch.setattr(
        acl,
        "apply_topics",
        lambda admin, settings, specs: applied.extend(spec.name for spec in specs) or [],
    )
    grant = DepartmentGrant.for_department("hz-amr")
    report = acl.reconcile_departments(
        AdminWithoutAcls(),  # type: ignore[arg-type]
        Settings(kafka_security_protocol="SASL_SSL"),
        [grant],
        acls=False,
    )
    assert sorted(applied) == ["dept.hz-amr.inbound", "dept.hz-amr.inbox"]
    assert (report.onboarded, report.acls.created, report.acls.deleted) == (1, (), ())


def test_the_access_enforcer_follows_the_switch_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from registry.enforcer import AccessEnforcer
    from registry.settings import get_registry_settings

    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT")
    unreachable = "postgresql+psycopg2://nobody@127.0.0.1:1/none"  # never connected to here
    monkeypatch.setenv("XIETONG_REGISTRY_ACL_RECONCILER", "false")
    get_registry_settings.cache_clear()
    try:
        assert AccessEnforcer(unreachable, settings, AdminWithoutAcls()).acls is False  # type: ignore[arg-type]
    finally:
        get_registry_settings.cache_clear()
    on = RegistrySettings(acl_reconciler=True)
    assert AccessEnforcer(unreachable, settings, AdminWithoutAcls(), registry=on).acls is True  # type: ignore[arg-type]
