"""Avro schemas of the platform's records, and the one way they are loaded and registered.

Each record type has one ``.avsc`` file in ``schemas/avro/``. The shared envelope lives
in ``cn.gov.xietong.Envelope.avsc`` (the registry's ``Level`` enum in
``cn.gov.xietong.registry.Level.avsc``) and is referenced by name; :func:`load_schema`
inlines it, so the registry holds self-contained schemas that any Confluent client can
read. A schema is registered under ``<topic>-value`` (Confluent's TopicNameStrategy)
with the subject's compatibility set to BACKWARD_TRANSITIVE first, so the registry refuses
a change that would break readers of older records — of every version still retained, not
only the last one, since topics are replayed from their start.

Serialisation always goes through :meth:`xietong.kafka.KafkaClients.avro_serializer`
(confluent-kafka's serializer over fastavro): one serde path everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro.schema import load_schema as _load_with_references

from xietong import topics
from xietong.topics import TopicSpec

AVRO_DIR = Path(__file__).parent / "avro"


@cache
def load_schema(name: str) -> str:
    """The schema ``schemas/avro/<name>.avsc`` as JSON text, named references inlined."""
    parsed = _load_with_references(str(AVRO_DIR / f"{name}.avsc"), _write_hint=False)
    return json.dumps(parsed, ensure_ascii=False)


def value_subject(topic: str) -> str:
    return f"{topic}-value"


#: Every subject's compatibility: a reader of the newest schema reads records written under
#: any earlier one (a replay from the start meets them all).
COMPATIBILITY = "BACKWARD_TRANSITIVE"


def register_schema(
    client: SchemaRegistryClient,
    subject: str,
    schema_str: str,
    compatibility: str = COMPATIBILITY,
) -> int:
    """Set the subject's compatibility, register the schema; the schema id.

    Registering a schema that is already registered under the subject returns its
    existing id, so this is safe to call on every start. An incompatible schema is
    refused by the registry with a ``SchemaRegistryError`` (HTTP 409).
    """
    client.set_compatibility(subject_name=subject, level=compatibility)
    return client.register_schema(subject, Schema(schema_str, "AVRO"))


@dataclass(frozen=True)
class RecordType:
    """A kind of record the platform carries: its schema and its topic."""

    name: str
    label: str  # the Chinese name, for people
    topic: TopicSpec
    #: ``schemas/avro/<schema_file>.avsc``: the record type's name unless it says otherwise.
    schema_file: str = ""
    #: The subject when it is not the topic's: a record that many topics carry (a
    #: department action, on every department's inbound topic) is registered under its
    #: full record name, as Confluent's RecordNameStrategy does.
    subject_name: str | None = None

    def __post_init__(self) -> None:
        if not self.schema_file:
            object.__setattr__(self, "schema_file", self.name)

    @property
    def subject(self) -> str:
        return self.subject_name or value_subject(self.topic.name)

    @property
    def schema_str(self) -> str:
        return load_schema(self.schema_file)

    @cached_property
    def schema(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.schema_str)
        return parsed


def _by_name(*records: RecordType) -> dict[str, RecordType]:
    return {record.name: record for record in records}


def _named_by_record(name: str, label: str, topic: TopicSpec, record: str) -> RecordType:
    """A record that many topics carry: its schema file and its subject are its full name."""
    return RecordType(name, label, topic, schema_file=record, subject_name=record)


REGISTRATION = RecordType("registration", "市场主体登记", topics.REGISTRATIONS)
LICENCE = RecordType("licence", "行政许可", topics.LICENCES)
PENALTY = RecordType("penalty", "行政处罚", topics.PENALTIES)
CREDIT_LIST_ENTRY = RecordType("credit_list_entry", "名单", topics.CREDIT_LIST_ENTRIES)
DEAD_LETTER_RECORD = RecordType("dead_letter", "死信", topics.DEAD_LETTER)
HEARTBEAT = RecordType("heartbeat", "心跳", topics.HEARTBEATS)

#: The canonical records departments publish, by name.
CANONICAL_RECORD_TYPES = _by_name(REGISTRATION, LICENCE, PENALTY, CREDIT_LIST_ENTRY)

#: What the registry publishes to its compacted topics (registry/publisher.py), by name.
REGISTRY_RECORD_TYPES = _by_name(
    RecordType("department", "部门", topics.REGISTRY_DEPARTMENTS),
    RecordType("approval_item", "后置审批事项", topics.REGISTRY_APPROVAL_ITEMS),
    RecordType("measure", "失信惩戒措施", topics.REGISTRY_MEASURES),
    RecordType("credit_list_type", "名单类型", topics.REGISTRY_LIST_TYPES),
    RecordType("assistance_item", "行政协助事项", topics.REGISTRY_ASSISTANCE_ITEMS),
    RecordType("subscription", "订阅", topics.REGISTRY_SUBSCRIPTIONS),
)

#: What departments write to their inbound topics about a 双告知 push (认领、退回 …).
DEPARTMENT_ACTION = _named_by_record(
    "department_action",
    "部门操作",
    topics.DUAL_NOTICE_ACTIONS,
    "cn.gov.xietong.dualnotice.DepartmentAction",
)

#: What the 双告知 processor (streams/dual_notice/) publishes, by name.
DUAL_NOTICE_RECORD_TYPES = _by_name(
    RecordType("dual_notice_push", "双告知推送", topics.DUAL_NOTICE_PUSHES),
    RecordType("dual_notice_applicant_notice", "告知书", topics.DUAL_NOTICE_APPLICANT_NOTICES),
    RecordType("dual_notice_routing_failure", "分流失败", topics.DUAL_NOTICE_MANUAL_ROUTING),
    # The same record, OPEN, on the claimable list (a tombstone once it is not).
    RecordType(
        "dual_notice_claimable_item",
        "待认领事项",
        topics.DUAL_NOTICE_CLAIMABLE,
        schema_file="dual_notice_routing_failure",
    ),
    RecordType("received_department_action", "部门操作（已接收）", topics.DUAL_NOTICE_ACTIONS),
    RecordType(
        "rejected_department_action", "未执行的部门操作", topics.DUAL_NOTICE_REJECTED_ACTIONS
    ),
    RecordType("dual_notice_alert", "双告知督办", topics.DUAL_NOTICE_ALERTS),
    RecordType("entity_closure_notice", "注销/吊销告知", topics.DUAL_NOTICE_CLOSURE_NOTICES),
)

#: 办理事项: a department handles a matter for an entity (its report, or a credit check).
MATTER_EVENT = RecordType("matter_event", "办理事项", topics.MATTER_EVENTS)

#: What departments write to their inbound topics about a restriction hit (反馈).
RESTRICTION_FEEDBACK = _named_by_record(
    "restriction_feedback",
    "反馈",
    topics.PUNISHMENT_FEEDBACK,
    "cn.gov.xietong.punishment.RestrictionFeedback",
)

#: What the joint-punishment processor (streams/joint_punishment/) publishes, by name.
JOINT_PUNISHMENT_RECORD_TYPES = _by_name(
    RecordType("sanction_notice", "惩戒告知", topics.PUNISHMENT_SANCTION_NOTICES),
    RecordType("licence_review_notice", "许可审查告知", topics.PUNISHMENT_LICENCE_REVIEWS),
    RecordType("restriction_hit", "限制命中", topics.PUNISHMENT_RESTRICTION_HITS),
    RecordType("received_restriction_feedback", "反馈（已接收）", topics.PUNISHMENT_FEEDBACK),
    RecordType("feedback_overdue_alert", "逾期未反馈督办", topics.PUNISHMENT_ALERTS),
    RecordType("lift_notice", "解除惩戒告知", topics.PUNISHMENT_LIFT_NOTICES),
    RecordType(
        "serious_listing_proposal",
        "列入严重违法失信名单建议",
        topics.PUNISHMENT_SERIOUS_LISTING_PROPOSALS,
    ),
)

#: What departments write to their inbound topics about an assistance request (请求、受理 …).
ASSISTANCE_ACTION = _named_by_record(
    "assistance_action",
    "行政协助操作",
    topics.ASSISTANCE_ACTIONS,
    "cn.gov.xietong.assistance.AssistanceAction",
)

#: What the 行政协助 processor (streams/assistance/) publishes, by name.
ASSISTANCE_RECORD_TYPES = _by_name(
    RecordType("assistance_request", "行政协助请求", topics.ASSISTANCE_REQUESTS),
    RecordType("received_assistance_action", "行政协助操作（已接收）", topics.ASSISTANCE_ACTIONS),
    RecordType(
        "rejected_assistance_action", "未执行的行政协助操作", topics.ASSISTANCE_REJECTED_ACTIONS
    ),
    RecordType("assistance_escalation", "行政协助督查", topics.ASSISTANCE_ESCALATIONS),
    RecordType("assistance_rating", "互评", topics.ASSISTANCE_RATINGS),
)

#: What the webhook worker (connectors/webhooks/) could not push: one record per give-up.
WEBHOOK_DEAD_LETTER = RecordType("webhook_dead_letter", "推送死信", topics.WEBHOOK_DEAD_LETTERS)

ALL_RECORD_TYPES: tuple[RecordType, ...] = (
    *CANONICAL_RECORD_TYPES.values(),
    DEAD_LETTER_RECORD,
    HEARTBEAT,
    *REGISTRY_RECORD_TYPES.values(),
    DEPARTMENT_ACTION,
    *DUAL_NOTICE_RECORD_TYPES.values(),
    MATTER_EVENT,
    RESTRICTION_FEEDBACK,
    *JOINT_PUNISHMENT_RECORD_TYPES.values(),
    ASSISTANCE_ACTION,
    *ASSISTANCE_RECORD_TYPES.values(),
    WEBHOOK_DEAD_LETTER,
)


def register_all(client: SchemaRegistryClient) -> dict[str, int]:
    """Register every record type's schema; subject → schema id."""
    return {
        record.subject: register_schema(client, record.subject, record.schema_str)
        for record in ALL_RECORD_TYPES
    }
