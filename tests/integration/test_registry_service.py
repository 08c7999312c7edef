"""The registry's operations (registry.service), as a specification, on a real PostgreSQL.

Each test runs in a transaction that is rolled back afterwards, on a database of this
module's own with the sample province's catalog loaded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from registry import service
from registry.audit import Actor, UnauditedChangeError
from registry.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
)
from registry.grants import DepartmentGrant
from registry.models import (
    ApprovalRoute,
    AuditEntry,
    Base,
    Department,
    SharingClass,
    Subscription,
    SubscriptionStatus,
    row_snapshot,
)
from registry.seed import Level, load_sample_province
from schemas import CANONICAL_RECORD_TYPES
from xietong.uscc import make_uscc

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ADMIN = Actor.admin("test")
REGISTRATION_OWNER = Actor.department("zj-amr")  # 浙江省市场监督管理局
CREDIT_OWNER = Actor.department("zj-drc")  # 浙江省发展和改革委员会 (信用)
HEALTH = Actor.department("hz-health")  # 杭州市卫生健康委员会


def request(
    session: Session,
    department: str = "hz-health",
    resource: str = "registration",
    **options: Any,
) -> Subscription:
    options.setdefault("purpose", "双告知: 公共场所卫生许可的后置审批")
    options.setdefault("legal_basis", "国发〔2015〕62号")
    return service.request_subscription(
        session,
        Actor.department(department),
        department=department,
        resource=resource,
        now=NOW,
        **options,
    )


def audit_rows(session: Session, entity: str, entity_id: object) -> list[AuditEntry]:
    return list(
        session.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.entity == entity, AuditEntry.entity_id == str(entity_id))
            .order_by(AuditEntry.id)
        )
    )


def in_state(session: Session, state: SubscriptionStatus) -> Subscription:
    """A fresh subscription of hz-health to registrations, brought to ``state``."""
    subscription = request(session, valid_until=NOW + timedelta(days=30))
    if state is SubscriptionStatus.APPROVED:
        service.approve_subscription(session, REGISTRATION_OWNER, subscription.id, now=NOW)
    elif state is SubscriptionStatus.REJECTED:
        service.reject_subscription(
            session, REGISTRATION_OWNER, subscription.id, reason="无此职责", now=NOW
        )
    elif state is SubscriptionStatus.REVOKED:
        service.approve_subscription(session, REGISTRATION_OWNER, subscription.id, now=NOW)
        service.revoke_subscription(
            session, REGISTRATION_OWNER, subscription.id, reason="职责调整", now=NOW
        )
    elif state is SubscriptionStatus.EXPIRED:
        service.expire_due(session, NOW + timedelta(days=31))
    assert subscription.status is state
    return subscription


# -- the schema -----------------------------------------------------------------------------


def county_department(**fields: Any) -> dict[str, Any]:
    """What ``create_department`` takes for a test department of 西湖区, with ``fields``."""
    return {
        "name": "杭州市西湖区测试局",
        "sector": "health",
        "roles": ["licensing"],
        "level": Level.COUNTY,
        "division": "330106",
        "contact": "0571-1",
        **fields,
    }


def test_the_hand_written_migration_creates_exactly_what_the_models_describe(
    registry_url: str,
) -> None:
    with sa.create_engine(registry_url, poolclass=sa.NullPool).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# -- the catalog ----------------------------------------------------------------------------


def test_the_sample_catalog_holds_every_department_item_route_list_and_measure(
    registry_session: Session,
) -> None:
    province = load_sample_province()
    count = lambda model: registry_session.scalar(sa.select(sa.func.count()).select_from(model))  # noqa: E731
    assert count(Department) == len(province.departments)
    assert [item.code for item in service.list_approval_items(registry_session)] == sorted(
        item.code for item in province.approval_items
    )
    assert count(ApprovalRoute) == sum(len(routes) for routes in province.routing.values())
    assert len(service.list_credit_list_types(registry_session)) == len(province.list_types)
    assert len(service.list_matter_types(registry_session)) == len(province.matter_types)
    assert len(service.list_measures(registry_session)) == len(province.measures)


def test_food_permits_in_xihu_route_to_the_xihu_regulator_and_pesticides_in_shangcheng_nowhere(
    registry_session: Session,
) -> None:
    food = service.get_approval_item(registry_session, "SPJYXK")
    routes = {route.division_code: route.department.code for route in food.routes}
    assert routes["330106"] == "hz-xh-amr"
    assert {(rule.kind.value, rule.value) for rule in food.rules} >= {
        ("scope", "餐饮服务"),
        ("industry", "H6210"),
    }
    pesticide = service.get_approval_item(registry_session, "NYJYXK")
    assert "330102" not in {route.division_code for route in pesticide.routes}  # 分流失败


def test_a_department_carries_its_uscc_level_division_and_kafka_principal(
    registry_session: Session,
) -> None:
    department = service.get_department(registry_session, "hz-xh-amr")
    assert department.uscc == "11330106TT6P0PAF5K"
    assert department.level is Level.COUNTY
    assert department.division_code == "330106"
    assert department.kafka_principal == "User:dept-hz-xh-amr"
    assert department.roles == ["registration", "licensing", "enforcement"]


def test_loading_the_catalog_again_changes_nothing_and_writes_no_audit_entry(
    registry_session: Session,
) -> None:
    entries_before = registry_session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    report = service.load_catalog(registry_session, Actor.system("test"), now=NOW)
    assert report.changed == 0
    assert report.counts["departments"]["unchanged"] == len(load_sample_province().departments)
    entries_after = registry_session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    assert entries_after == entries_before


def test_a_changed_seed_updates_only_what_changed_and_audits_it_before_and_after(
    registry_session: Session,
) -> None:
    province = load_sample_province()
    renamed = [
        department.model_copy(update={"contact": "0571-00000000"})
        if department.code == "hz-health"
        else department
        for department in province.departments
    ]
    routing = {
        item: {
            division: ("hz-sc-amr" if (item, division) == ("SPJYXK", "330106") else department)
            for division, department in table.items()
        }
        for item, table in province.routing.items()
    }
    changed = province.model_copy(update={"departments": tuple(renamed), "routing": routing})

    report = service.load_catalog(registry_session, Actor.system("test"), changed, now=NOW)

    assert report.changed == 2
    assert report.counts["departments"]["updated"] == 1
    assert report.counts["approval_routes"]["updated"] == 1
    health = service.get_department(registry_session, "hz-health")
    [entry] = audit_rows(registry_session, "departments", health.id)[-1:]
    assert entry.action == "catalog.load"
    assert entry.actor == "system:test"
    assert entry.before is not None and entry.after is not None
    assert (entry.before["contact"], entry.after["contact"]) == ("0571-82539263", "0571-00000000")
    assert entry.before["name"] == entry.after["name"] == "杭州市卫生健康委员会"


def test_every_canonical_topic_is_a_data_resource_owned_by_the_department_that_publishes_it(
    registry_session: Session,
) -> None:
    resources = {row.code: row for row in service.list_resources(registry_session)}
    expected = {
        "registration": ("zj-amr", SharingClass.UNCONDITIONAL),
        "licence": ("zj-drc", SharingClass.UNCONDITIONAL),
        "penalty": ("zj-drc", SharingClass.UNCONDITIONAL),
        "credit_list_entry": ("zj-drc", SharingClass.CONDITIONAL),
    }
    assert {code: (r.owner.code, r.sharing_class) for code, r in resources.items()} == expected
    for code, record in CANONICAL_RECORD_TYPES.items():
        assert resources[code].topic == record.topic.name
        assert resources[code].schema_subject == f"{record.topic.name}-value"
        assert resources[code].fields == [field["name"] for field in record.schema["fields"]]


# -- the subscription state machine ---------------------------------------------------------


def test_a_request_approved_by_the_owning_department_gives_the_subscriber_read_on_the_topic(
    registry_session: Session,
) -> None:
    subscription = request(registry_session)
    assert subscription.status is SubscriptionStatus.REQUESTED

    service.approve_subscription(registry_session, REGISTRATION_OWNER, subscription.id, now=NOW)

    assert subscription.status is SubscriptionStatus.APPROVED
    assert subscription.decided_by == "department:zj-amr"
    grants = {g.department_code: g for g in service.access_grants(registry_session, NOW)}
    assert "market.registrations" in grants["hz-health"].read_topics
    assert "market.registrations" not in grants["hz-amr"].read_topics


def test_a_department_cannot_approve_a_subscription_to_another_departments_resource(
    registry_session: Session,
) -> None:
    subscription = request(registry_session)
    with pytest.raises(ForbiddenError, match=r"belongs to zj-amr"):
        service.approve_subscription(registry_session, CREDIT_OWNER, subscription.id, now=NOW)
    with pytest.raises(ForbiddenError):
        service.approve_subscription(registry_session, HEALTH, subscription.id, now=NOW)
    assert subscription.status is SubscriptionStatus.REQUESTED


def test_an_administrator_may_approve_reject_and_revoke_any_subscription(
    registry_session: Session,
) -> None:
    approved = request(registry_session)
    service.approve_subscription(registry_session, ADMIN, approved.id, now=NOW)
    service.revoke_subscription(registry_session, ADMIN, approved.id, reason="审计要求", now=NOW)
    rejected = request(registry_session, department="hz-em")
    service.reject_subscription(registry_session, ADMIN, rejected.id, reason="无此职责", now=NOW)
    assert (approved.status, rejected.status) == (
        SubscriptionStatus.REVOKED,
        SubscriptionStatus.REJECTED,
    )
    assert approved.decided_by == "admin:test"


def test_a_department_requests_only_for_itself(registry_session: Session) -> None:
    with pytest.raises(ForbiddenError, match="on behalf of hz-em"):
        service.request_subscription(
            registry_session,
            HEALTH,
            department="hz-em",
            resource="registration",
            purpose="x",
            legal_basis="y",
        )


#: Every action and the states it is NOT allowed from.
REFUSED = [
    (action, state)
    for action in ("approve", "reject", "revoke")
    for state in SubscriptionStatus
    if state not in service.TRANSITIONS[action]
]


@pytest.mark.parametrize(("action", "state"), REFUSED, ids=[f"{a}-{s}" for a, s in REFUSED])
def test_a_transition_outside_the_state_machine_is_refused_naming_the_subscription_state_and_action(
    registry_session: Session, action: str, state: SubscriptionStatus
) -> None:
    subscription = in_state(registry_session, state)
    before = registry_session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    with pytest.raises(InvalidTransitionError) as refused:
        if action == "approve":
            service.approve_subscription(registry_session, ADMIN, subscription.id, now=NOW)
        elif action == "reject":
            service.reject_subscription(registry_session, ADMIN, subscription.id, reason="r")
        else:
            service.revoke_subscription(registry_session, ADMIN, subscription.id, reason="r")
    message = str(refused.value)
    assert f"subscription {subscription.id}" in message
    assert state.value in message
    assert action in message
    assert subscription.status is state
    after = registry_session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    assert after == before


def test_a_department_has_one_open_subscription_per_resource_and_may_ask_again_after_a_refusal(
    registry_session: Session,
) -> None:
    first = request(registry_session)
    with pytest.raises(ConflictError, match=rf"already has subscription {first.id}"):
        request(registry_session)
    service.reject_subscription(registry_session, REGISTRATION_OWNER, first.id, reason="材料不全")
    second = request(registry_session, purpose="双告知 (补充材料后重新申请)")
    assert second.id != first.id


def test_the_history_keeps_every_transition_with_actor_time_and_reason(
    registry_session: Session,
) -> None:
    subscription = request(registry_session)
    service.approve_subscription(registry_session, REGISTRATION_OWNER, subscription.id, now=NOW)
    later = NOW + timedelta(days=10)
    service.revoke_subscription(
        registry_session, ADMIN, subscription.id, reason="职责调整", now=later
    )

    history = service.subscription_history(registry_session, HEALTH, subscription.id)

    assert [(e.from_status, e.to_status, e.actor, e.at, e.reason) for e in history] == [
        (None, SubscriptionStatus.REQUESTED, "department:hz-health", NOW, None),
        (
            SubscriptionStatus.REQUESTED,
            SubscriptionStatus.APPROVED,
            "department:zj-amr",
            NOW,
            None,
        ),
        (SubscriptionStatus.APPROVED, SubscriptionStatus.REVOKED, "admin:test", later, "职责调整"),
    ]


def test_another_department_may_not_see_a_subscription(registry_session: Session) -> None:
    subscription = request(registry_session)
    with pytest.raises(ForbiddenError):
        service.get_subscription(registry_session, Actor.department("hz-em"), subscription.id)
    assert service.get_subscription(registry_session, REGISTRATION_OWNER, subscription.id)
    mine = service.list_subscriptions(registry_session, HEALTH, role="subscriber")
    theirs = service.list_subscriptions(registry_session, Actor.department("hz-em"))
    assert subscription in mine
    assert subscription not in theirs


# -- sharing classes ------------------------------------------------------------------------


def test_a_conditional_resource_needs_the_fields_and_the_filters_the_department_asks_for(
    registry_session: Session,
) -> None:
    with pytest.raises(InvalidInputError) as no_fields:
        request(registry_session, resource="credit_list_entry")
    assert no_fields.value.field == "fields"
    with pytest.raises(InvalidInputError) as no_filters:
        request(registry_session, resource="credit_list_entry", fields=["uscc", "list_type"])
    assert no_filters.value.field == "filters"

    subscription = request(
        registry_session,
        resource="credit_list_entry",
        fields=["uscc", "list_type", "listed_on"],
        filters={"divisions": ["330106", "330102"]},
    )
    assert subscription.fields == ["uscc", "list_type", "listed_on"]
    assert subscription.filters == {"divisions": ["330106", "330102"]}


def test_a_conditional_subscription_grants_its_view_and_never_the_canonical_topic(
    registry_session: Session,
) -> None:
    listed = request(
        registry_session,
        resource="credit_list_entry",
        fields=["uscc", "list_type"],
        filters={"divisions": ["330106"]},
    )
    service.approve_subscription(registry_session, CREDIT_OWNER, listed.id, now=NOW)
    narrowed = request(registry_session, resource="penalty", fields=["uscc"])  # fields alone
    service.approve_subscription(registry_session, CREDIT_OWNER, narrowed.id, now=NOW)
    whole = request(registry_session)
    service.approve_subscription(registry_session, REGISTRATION_OWNER, whole.id, now=NOW)

    grants = {g.department_code: g for g in service.access_grants(registry_session, NOW)}

    views = {"dept.hz-health.shared.credit_list_entry", "dept.hz-health.shared.penalty"}
    assert grants["hz-health"].shared_topics == views
    assert views | {"market.registrations"} <= grants["hz-health"].read_topics
    assert not {"credit.list-entries", "enforcement.penalties"} & grants["hz-health"].read_topics


def test_requested_fields_and_divisions_must_exist(registry_session: Session) -> None:
    with pytest.raises(InvalidInputError, match="has no field salary") as unknown_field:
        request(registry_session, fields=["uscc", "salary"])
    assert unknown_field.value.field == "fields"
    with pytest.raises(InvalidInputError, match="unknown division 990000") as unknown_division:
        request(registry_session, filters={"divisions": ["990000"]})
    assert unknown_division.value.field == "filters.divisions"
    with pytest.raises(InvalidInputError, match="unknown filter industries"):
        request(registry_session, filters={"industries": ["H6210"]})


def test_a_not_shared_resource_is_refused_outright(registry_session: Session) -> None:
    service.create_resource(
        registry_session,
        REGISTRATION_OWNER,
        code="zj-amr.case-files",
        name="案件卷宗",
        topic="dept.zj-amr.case-files",
        owner="zj-amr",
        sharing_class=SharingClass.NOT_SHARED,
        fields=["case_number", "evidence"],
        description="执法案件卷宗 (不予共享)",
    )
    with pytest.raises(InvalidInputError, match="不予共享") as refused:
        request(registry_session, resource="zj-amr.case-files")
    assert (refused.value.code, refused.value.field) == ("not_shared", "resource")
    assert service.list_subscriptions(registry_session, HEALTH, role="subscriber") == []


def test_a_department_declares_resources_only_of_its_own_on_its_own_topics(
    registry_session: Session,
) -> None:
    declare = lambda actor, owner, topic: service.create_resource(  # noqa: E731
        registry_session,
        actor,
        code=f"{owner}.permits",
        name="许可",
        topic=topic,
        owner=owner,
        sharing_class=SharingClass.UNCONDITIONAL,
        fields=["uscc"],
        description="d",
    )
    with pytest.raises(ForbiddenError, match="owned by zj-amr"):
        declare(HEALTH, "zj-amr", "dept.zj-amr.permits")
    with pytest.raises(ForbiddenError, match="outside hz-health's namespace"):
        declare(HEALTH, "hz-health", "market.registrations")
    with pytest.raises(ConflictError, match="already data resource registration"):
        declare(ADMIN, "hz-health", "market.registrations")
    assert declare(HEALTH, "hz-health", "dept.hz-health.permits").owner.code == "hz-health"


# -- expiry ---------------------------------------------------------------------------------


def test_access_ends_at_valid_until_and_expire_due_then_records_the_expiry(
    registry_session: Session,
) -> None:
    end = NOW + timedelta(days=90)
    subscription = request(registry_session)
    service.approve_subscription(
        registry_session, REGISTRATION_OWNER, subscription.id, valid_until=end, now=NOW
    )

    def reads(at: datetime) -> bool:
        grants = {g.department_code: g for g in service.access_grants(registry_session, at)}
        return "market.registrations" in grants["hz-health"].read_topics

    assert reads(end - timedelta(seconds=1))
    assert not reads(end)  # even before expire_due has run
    assert service.expire_due(registry_session, end - timedelta(seconds=1)) == []

    assert service.expire_due(registry_session, end) == [subscription]

    assert subscription.status is SubscriptionStatus.EXPIRED
    last = service.subscription_history(registry_session, ADMIN, subscription.id)[-1]
    assert (last.from_status, last.to_status, last.actor) == (
        SubscriptionStatus.APPROVED,
        SubscriptionStatus.EXPIRED,
        "system:expire-due",
    )
    assert last.reason is not None and "valid_until" in last.reason


def test_a_request_whose_end_passes_before_any_decision_expires(registry_session: Session) -> None:
    subscription = request(registry_session, valid_until=NOW + timedelta(days=1))
    assert service.expire_due(registry_session, NOW + timedelta(days=2)) == [subscription]
    assert subscription.status is SubscriptionStatus.EXPIRED


def test_an_end_date_must_lie_in_the_future(registry_session: Session) -> None:
    with pytest.raises(InvalidInputError) as past:
        request(registry_session, valid_until=NOW - timedelta(days=1))
    assert past.value.field == "valid_until"
    subscription = request(registry_session)
    with pytest.raises(InvalidInputError):
        service.approve_subscription(
            registry_session, ADMIN, subscription.id, valid_until=NOW, now=NOW
        )


# -- the hook for broker ACLs ---------------------------------------------------------------


def test_access_grants_give_every_department_its_inbox_inbound_group_prefix_and_live_topics(
    registry_session: Session,
) -> None:
    registrations = request(registry_session)
    service.approve_subscription(registry_session, REGISTRATION_OWNER, registrations.id, now=NOW)
    penalties = request(registry_session, resource="penalty")
    service.approve_subscription(registry_session, CREDIT_OWNER, penalties.id, now=NOW)
    licences = request(registry_session, resource="licence")  # requested, not approved
    revoked = request(registry_session, department="hz-em")
    service.approve_subscription(registry_session, REGISTRATION_OWNER, revoked.id, now=NOW)
    service.revoke_subscription(registry_session, ADMIN, revoked.id, reason="r", now=NOW)
    assert licences.status is SubscriptionStatus.REQUESTED

    grants = service.access_grants(registry_session, NOW)

    assert [g.department_code for g in grants] == sorted(
        d.code for d in load_sample_province().departments
    )
    by_code = {g.department_code: g for g in grants}
    assert by_code["hz-health"] == DepartmentGrant(
        department_code="hz-health",
        principal="User:dept-hz-health",
        read_topics=frozenset(
            {
                "market.registrations",
                "enforcement.penalties",
                "dept.hz-health.inbox",
                "dualnotice.claimable",
            }
        ),
        write_topics=frozenset({"dept.hz-health.inbound"}),
        group_prefix="hz-health.",
    )
    assert by_code["hz-em"] == DepartmentGrant.for_department("hz-em")
    # Every department may read its inbox and find 分流失败 items on the claimable list.
    assert by_code["zj-amr"].read_topics == {"dept.zj-amr.inbox", "dualnotice.claimable"}


# -- credentials ----------------------------------------------------------------------------


def test_a_token_is_shown_once_only_its_sha256_is_stored_and_revoking_it_locks_it_out(
    registry_session: Session,
) -> None:
    issued = service.issue_token(registry_session, ADMIN, "hz-health", now=NOW)
    assert issued.credential.token_sha256 == service.token_digest(issued.token)
    assert issued.token not in str(row_snapshot(issued.credential))
    assert service.authenticate(registry_session, issued.token, None) == HEALTH

    [entry] = audit_rows(registry_session, "credentials", issued.credential.id)
    assert entry.after is not None and "token_sha256" not in entry.after

    service.revoke_credential(registry_session, ADMIN, issued.credential.id, now=NOW)
    assert service.authenticate(registry_session, issued.token, None) is None


def test_rotating_a_token_revokes_it_and_issues_one_with_the_same_department_and_scopes(
    registry_session: Session,
) -> None:
    old = service.issue_token(registry_session, ADMIN, "hz-health", now=NOW, scopes=["inbox:read"])

    new = service.rotate_credential(registry_session, ADMIN, old.credential.id, now=NOW)

    assert service.authenticate(registry_session, old.token, None) is None
    assert service.authenticate(registry_session, new.token, None) == HEALTH
    assert service.token_scopes(registry_session, new.token) == {"inbox:read"}
    assert new.credential.id != old.credential.id and old.credential.revoked_at == NOW
    assert [e.action for e in audit_rows(registry_session, "credentials", old.credential.id)] == [
        "credential.issue",
        "credential.revoke",
    ]
    with pytest.raises(ConflictError, match="issue a new token instead"):
        service.rotate_credential(registry_session, ADMIN, old.credential.id)
    with pytest.raises(NotFoundError):
        service.rotate_credential(registry_session, ADMIN, 10**9)
    with pytest.raises(ForbiddenError):
        service.rotate_credential(registry_session, HEALTH, new.credential.id)


def test_an_administrator_token_is_recognised_by_its_configured_digest_or_its_credential(
    registry_session: Session,
) -> None:
    bootstrap = "the-bootstrap-token"
    digest = service.token_digest(bootstrap)
    assert service.authenticate(registry_session, bootstrap, digest) == Actor.admin(
        "bootstrap-token"
    )
    issued = service.issue_token(registry_session, ADMIN, None)
    actor = service.authenticate(registry_session, issued.token, digest)
    assert actor is not None and actor.is_admin
    assert service.authenticate(registry_session, "a-guess", digest) is None


def test_only_an_administrator_issues_credentials(registry_session: Session) -> None:
    with pytest.raises(ForbiddenError, match="administrators only"):
        service.issue_token(registry_session, HEALTH, "hz-health")


# -- departments ----------------------------------------------------------------------------


def test_a_department_with_an_invalid_uscc_is_refused_naming_the_check_that_fails(
    registry_session: Session,
) -> None:
    valid = make_uscc("11", "330106", body8="TE5TDEP1")
    wrong = valid[:-1] + ("0" if valid[-1] != "0" else "1")
    with pytest.raises(InvalidInputError, match="check character") as refused:
        service.create_department(
            registry_session, ADMIN, **county_department(code="hz-xh-test", uscc=wrong)
        )
    assert refused.value.field == "uscc"


def test_department_codes_and_usccs_are_unique(registry_session: Session) -> None:
    with pytest.raises(ConflictError, match="already department hz-health") as taken:
        service.create_department(
            registry_session,
            ADMIN,
            **county_department(
                code="hz-health-2",
                uscc="11330100EUHUXQEE4F",  # 杭州市卫生健康委员会's
                level=Level.CITY,
                division="330100",
            ),
        )
    assert taken.value.field == "uscc"
    with pytest.raises(NotFoundError):
        service.get_department(registry_session, "nowhere")


# -- the audit log --------------------------------------------------------------------------


def test_every_change_of_a_subscription_is_audited_with_actor_action_before_and_after(
    registry_session: Session,
) -> None:
    subscription = request(registry_session)
    service.approve_subscription(registry_session, REGISTRATION_OWNER, subscription.id, now=NOW)
    service.revoke_subscription(
        registry_session, REGISTRATION_OWNER, subscription.id, reason="职责调整", now=NOW
    )

    entries = audit_rows(registry_session, "subscriptions", subscription.id)

    assert [(e.actor, e.action) for e in entries] == [
        ("department:hz-health", "subscription.request"),
        ("department:zj-amr", "subscription.approve"),
        ("department:zj-amr", "subscription.revoke"),
    ]
    statuses = [(e.before and e.before["status"], e.after and e.after["status"]) for e in entries]
    assert statuses == [(None, "REQUESTED"), ("REQUESTED", "APPROVED"), ("APPROVED", "REVOKED")]
    assert entries[2].after is not None and entries[2].after["reason"] == "职责调整"
    events = registry_session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.entity == "subscription_events", AuditEntry.action.like("subscription.%"))
    )
    assert events is not None and events >= 3


def test_audit_entries_live_and_die_with_their_change_in_one_transaction(
    registry_session: Session,
) -> None:
    nested = registry_session.begin_nested()
    department = service.create_department(
        registry_session,
        ADMIN,
        **county_department(
            code="hz-xh-audit", uscc=make_uscc("11", "330106", body8="AUDXT001"), roles=["other"]
        ),
    )
    [created] = audit_rows(registry_session, "departments", department.id)
    assert created.before is None
    assert created.after is not None and created.after["code"] == "hz-xh-audit"
    department_id = department.id
    nested.rollback()
    assert audit_rows(registry_session, "departments", department_id) == []


def test_a_change_made_without_an_audit_entry_is_refused(registry_session: Session) -> None:
    department = service.get_department(registry_session, "hz-health")
    department.name = "悄悄改名"
    with pytest.raises(UnauditedChangeError, match="Department"):
        registry_session.flush()
    registry_session.rollback()
