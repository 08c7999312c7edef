"""Every Kafka topic of the platform, declared in one place, and how they are applied.

Topics keyed by the unified social credit code (统一社会信用代码, USCC) all have the same
partition count (``XIETONG_USCC_PARTITIONS``), so a record about one entity lands in
the same partition number of every such topic and stream processors can join them by
looking up tables (co-partitioning). Replication factor and min ISR come from the
settings, so one declaration serves a one-broker laptop and a three-broker cluster.

``xietong topics apply`` creates what is missing and corrects configuration drift; it
never deletes a topic and never changes a partition count by itself, because adding
partitions to a keyed topic moves keys and breaks co-partitioning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import ClassVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from xietong.access import Grant, Reconciled, group_grant, reconcile, topic_grants
from xietong.kafka import SERVICES, principal_name
from xietong.settings import Settings

DAY_MS = 24 * 3600 * 1000
FOREVER = -1


class TopicKey(StrEnum):
    """What a topic's record key is."""

    USCC = "uscc"  # 统一社会信用代码 of the entity the record is about
    SOURCE = "source"  # the department or connector that produced the record
    CATALOG = "catalog"  # the id of a reference-catalog entry (compacted topics)
    ROUTING = "routing"  # the routing id of a 分流失败 item (the claimable list, compacted)
    REQUEST = "request"  # the id of an assistance request (行政协助: one request, one partition)


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic."""

    name: str
    description: str
    key: TopicKey
    compacted: bool = False
    retention_ms: int = FOREVER
    partitions: int | None = None  # None: the USCC partition count
    extra_config: dict[str, str] = field(default_factory=dict)
    writers: tuple[str, ...] = ()  # platform services that produce to it
    readers: tuple[str, ...] = ()  # platform services that consume it

    def partition_count(self, settings: Settings) -> int:
        # USCC-keyed topics share one count so they can be joined, unless a topic says
        # otherwise because it is never joined (a department's inbox); so do the topics
        # keyed by request id, which a processor's due topic (of that count) joins.
        if self.key in (TopicKey.USCC, TopicKey.REQUEST) and self.partitions is None:
            return settings.uscc_partitions
        return self.partitions or 1

    def config(self, settings: Settings) -> dict[str, str]:
        return {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(settings.min_insync_replicas),
            **self.extra_config,
        }


# -- the declarations -------------------------------------------------------------------


def _canonical(name: str, description: str) -> TopicSpec:
    """A topic of canonical records: connectors write it; processors and the sink read it."""
    return TopicSpec(
        name, description, TopicKey.USCC, writers=("connectors",), readers=("streams", "sink")
    )


def _catalog(name: str, description: str, partitions: int = 1) -> TopicSpec:
    """A registry table for the processors: compacted, written by the registry alone."""
    return TopicSpec(
        name,
        description,
        TopicKey.CATALOG,
        compacted=True,
        partitions=partitions,
        writers=("registry",),
        readers=("streams", "sink"),
    )


def _processor_output(
    name: str,
    description: str,
    key: TopicKey = TopicKey.USCC,
    partitions: int | None = None,
    readers: tuple[str, ...] = ("sink",),
) -> TopicSpec:
    """What a stream processor publishes (for the sink, and auditors), kept forever."""
    return TopicSpec(
        name, description, key, partitions=partitions, writers=("streams",), readers=readers
    )


# Canonical record topics keep their records forever: they are the system of record from
# which the credit database and every processor's state can be rebuilt by replay.

REGISTRATIONS = _canonical(
    "market.registrations",
    "市场主体登记 events (设立/变更/注销) from the registration authority",
)
LICENCES = _canonical(
    "permits.licences",
    "行政许可 decisions (双公示) from licensing departments",
)
PENALTIES = _canonical(
    "enforcement.penalties",
    "行政处罚 decisions (双公示) from enforcement departments",
)
CREDIT_LIST_ENTRIES = _canonical(
    "credit.list-entries",
    "红黑名单 entries (列入/移出) from the credit authority",
)
DEAD_LETTER = TopicSpec(
    "platform.dead-letter",
    "Input that failed validation: the original payload, its source and the reasons",
    TopicKey.SOURCE,
    partitions=3,
    retention_ms=90 * DAY_MS,
    writers=("connectors", "streams", "sink"),  # the sink: records it cannot store
    # The sink keeps them for auditors; a connector reads its own to replay them.
    readers=("sink", "connectors"),
)
CONNECTOR_OFFSETS = TopicSpec(
    "platform.connector-offsets",
    "Source offsets of the department connectors (like Kafka Connect's offsets topic)",
    TopicKey.SOURCE,
    compacted=True,
    partitions=3,
    writers=("connectors",),
    readers=("connectors",),
)
HTTP_INGEST_ANSWERS = TopicSpec(
    "platform.http-ingest-answers",
    "The HTTP ingest's answered requests (key: connector, department, request key; value:"
    " the request's SHA-256 and its answer), written in the batch's own transaction, so a"
    " retried Idempotency-Key is answered again and writes nothing twice",
    TopicKey.SOURCE,
    compacted=True,
    # How long a department may retry a request and get its first answer back: records
    # older than this are deleted even though compaction keeps the latest of each key.
    retention_ms=7 * DAY_MS,
    partitions=3,
    extra_config={"cleanup.policy": "compact,delete"},
    writers=("connectors",),
    readers=("connectors",),
)
BENCH = TopicSpec(
    "platform.bench",
    "Benchmark baselines: pre-encoded records sent by a bare producer (make bench)",
    TopicKey.USCC,
    retention_ms=3600 * 1000,
    writers=("connectors",),
)
HEARTBEATS = TopicSpec(
    "platform.heartbeats",
    "Liveness probes of the platform's services (and the stack's round-trip check)",
    TopicKey.SOURCE,
    partitions=1,
    retention_ms=1 * DAY_MS,
    writers=("connectors", "registry", "streams", "sink"),
    readers=("connectors", "registry", "streams", "sink"),
)

# The registry's reference data and subscriptions, for stream processors to hold as
# tables: compacted, so a processor that starts reads the latest record of every key and
# then follows changes without a restart. Only the registry writes them (from its
# outbox, registry/publisher.py); a deleted entry is a tombstone (a null value).

REGISTRY_DEPARTMENTS = _catalog(
    "registry.departments",
    "部门: every department, keyed by its code",
)
REGISTRY_APPROVAL_ITEMS = _catalog(
    "registry.approval-items",
    "后置审批事项: every approval item with its routes (区划→部门) and matching rules,"
    " keyed by the item's code",
)
REGISTRY_MEASURES = _catalog(
    "registry.measures",
    "失信惩戒措施: every joint-punishment measure, keyed by its code",
)
REGISTRY_LIST_TYPES = _catalog(
    "registry.list-types",
    "名单类型: every credit list and its term, keyed by its code",
)
REGISTRY_ASSISTANCE_ITEMS = _catalog(
    "registry.assistance-items",
    "行政协助事项清单: every assistance item (retired ones too, with retired_at), keyed by code",
)
REGISTRY_SUBSCRIPTIONS = _catalog(
    "registry.subscriptions",
    "订阅: every subscription in its current state (REVOKED and EXPIRED included), keyed by its id",
    partitions=3,
)

# 双告知 (streams/dual_notice/app.py): what the processor tells departments and applicants,
# and what departments did about it. Everything delivered to a department's inbox is also
# published here, so the sink and auditors see who was told what, and when; kept forever.

DUAL_NOTICE_PUSHES = _processor_output(
    "dualnotice.pushes",
    "双告知推送: every push to an approving department, republished at each change of state",
)
DUAL_NOTICE_APPLICANT_NOTICES = _processor_output(
    "dualnotice.applicant-notices",
    "告知书: per registration event, the permits the applicant needs and who grants them",
)
DUAL_NOTICE_MANUAL_ROUTING = _processor_output(
    "dualnotice.manual-routing",
    "分流失败: items with no department for the entity's division, until the registrar"
    " routes them by hand (手动分流)",
)
DUAL_NOTICE_CLAIMABLE = TopicSpec(
    "dualnotice.claimable",
    "待认领清单: the 分流失败 items still OPEN, for departments to find and claim (认领 naming"
    " the routing id); keyed by routing id and compacted, an item no longer OPEN (claimed,"
    " routed by hand, closed) is a tombstone, so the topic read whole is the list as it stands",
    TopicKey.ROUTING,
    compacted=True,
    partitions=3,
    writers=("streams",),
    # Every department reads it: registry/grants.py grants it with the department's inbox.
)
DUAL_NOTICE_ACTIONS = _processor_output(
    "dualnotice.actions",
    "Department actions on pushes (认领、退回、重新指派、终止推送、手动分流) as received from"
    " their inbound topics, with the acting department the topic names; keyed by USCC",
    readers=("streams", "sink"),
)
DUAL_NOTICE_REJECTED_ACTIONS = _processor_output(
    "dualnotice.rejected-actions",
    "Department actions that were not applied, each with the reason; keyed by department",
    key=TopicKey.SOURCE,
    partitions=3,
)
DUAL_NOTICE_ALERTS = _processor_output(
    "dualnotice.alerts",
    "逾期未认领 escalations and 无证经营 risk alerts, as sent to the departments",
)
DUAL_NOTICE_CLOSURE_NOTICES = _processor_output(
    "dualnotice.closure-notices",
    "注销/吊销 notices to the departments that issued the entity a still-valid licence",
)

# 一处违法、处处受限 (streams/joint_punishment/app.py): matters departments handle, and what the
# joint-punishment processor tells them. Everything delivered to a department's inbox is also
# published here, keyed by USCC, so the sink and auditors see who was told what, and when.

MATTER_EVENTS = TopicSpec(
    "credit.matter-events",
    "办理事项: a department handles a matter for an entity (许可申请、政府采购、财政补助、"
    "土地供应、债券发行 …), reported by its system (connectors) or by a credit check (the"
    " credit-check API)",
    TopicKey.USCC,
    writers=("connectors", "streams"),
    readers=("streams", "sink"),
)
PUNISHMENT_SANCTION_NOTICES = _processor_output(
    "punishment.sanction-notices",
    "惩戒告知: per listing, measure and implementing department, what to restrict and until when",
)
PUNISHMENT_LICENCE_REVIEWS = _processor_output(
    "punishment.licence-reviews",
    "许可审查告知: a licence-revoking penalty or a serious listing, to each department whose"
    " licence of the entity was valid",
)
PUNISHMENT_RESTRICTION_HITS = _processor_output(
    "punishment.restriction-hits",
    "限制命中: a matter for a listed entity that a measure restricts, republished at every change"
    " (feedback, withdrawal)",
)
PUNISHMENT_FEEDBACK = _processor_output(
    "punishment.feedback",
    "反馈: departments' feedback on restriction hits as received from their inbound topics, with"
    " the department the topic names; keyed by USCC",
    readers=("streams", "sink"),
)
PUNISHMENT_ALERTS = _processor_output(
    "punishment.alerts",
    "逾期未反馈督办: restriction hits without feedback by their deadline, as sent to the department"
    " and the credit authority",
)
PUNISHMENT_LIFT_NOTICES = _processor_output(
    "punishment.lift-notices",
    "解除惩戒告知: a listing ended (移出 or 期满); to every department told to restrict"
    " because of it",
)
PUNISHMENT_SERIOUS_LISTING_PROPOSALS = _processor_output(
    "punishment.serious-listing-proposals",
    "列入严重违法失信名单建议: an entity in the 经营异常名录 for three years, proposed to the"
    " listing authority, which decides (nothing is listed automatically)",
)

# 行政协助 (streams/assistance/): requests for assistance between departments, keyed by the
# request id, so that one request and everything done about it are on one partition.

ASSISTANCE_ACTIONS = _processor_output(
    "assistance.actions",
    "行政协助操作 (请求、受理、完成、否定报备、审核、互评) as received from the departments'"
    " inbound topics, with the acting department the topic names; keyed by request id",
    key=TopicKey.REQUEST,
    readers=("streams", "sink"),
)
ASSISTANCE_REQUESTS = _processor_output(
    "assistance.requests",
    "行政协助请求: every request, republished at each change of state; keyed by request id",
    key=TopicKey.REQUEST,
)
ASSISTANCE_ESCALATIONS = _processor_output(
    "assistance.escalations",
    "行政协助督查: requests still open at their deadline, as sent to the assisting department and"
    " the 编办",
    key=TopicKey.REQUEST,
)
ASSISTANCE_RATINGS = _processor_output(
    "assistance.ratings",
    "互评: the requesting department's rating of each completed request (配合程度, 协助成效)",
    key=TopicKey.REQUEST,
)
ASSISTANCE_REJECTED_ACTIONS = _processor_output(
    "assistance.rejected-actions",
    "行政协助 actions that were not applied, each with the reason; keyed by department",
    key=TopicKey.SOURCE,
    partitions=3,
)

# Webhooks (connectors/webhooks): what could not be pushed to a department's endpoint.

WEBHOOK_DEAD_LETTERS = TopicSpec(
    "webhooks.dead-letters",
    "Inbox items the webhook worker gave up pushing to a department's endpoint (a 4xx, or"
    " retries exhausted): the body as it was sent, the last HTTP status and the reason;"
    " keyed by department, read back by `xietong webhooks replay` and `status`",
    TopicKey.SOURCE,
    partitions=3,
    retention_ms=90 * DAY_MS,
    writers=("webhooks",),
    readers=("webhooks",),
)

TOPICS: tuple[TopicSpec, ...] = (
    REGISTRATIONS,
    LICENCES,
    PENALTIES,
    CREDIT_LIST_ENTRIES,
    DEAD_LETTER,
    CONNECTOR_OFFSETS,
    HTTP_INGEST_ANSWERS,
    HEARTBEATS,
    BENCH,
    REGISTRY_DEPARTMENTS,
    REGISTRY_APPROVAL_ITEMS,
    REGISTRY_MEASURES,
    REGISTRY_LIST_TYPES,
    REGISTRY_ASSISTANCE_ITEMS,
    REGISTRY_SUBSCRIPTIONS,
    DUAL_NOTICE_PUSHES,
    DUAL_NOTICE_APPLICANT_NOTICES,
    DUAL_NOTICE_MANUAL_ROUTING,
    DUAL_NOTICE_CLAIMABLE,
    DUAL_NOTICE_ACTIONS,
    DUAL_NOTICE_REJECTED_ACTIONS,
    DUAL_NOTICE_ALERTS,
    DUAL_NOTICE_CLOSURE_NOTICES,
    MATTER_EVENTS,
    PUNISHMENT_SANCTION_NOTICES,
    PUNISHMENT_LICENCE_REVIEWS,
    PUNISHMENT_RESTRICTION_HITS,
    PUNISHMENT_FEEDBACK,
    PUNISHMENT_ALERTS,
    PUNISHMENT_LIFT_NOTICES,
    PUNISHMENT_SERIOUS_LISTING_PROPOSALS,
    ASSISTANCE_ACTIONS,
    ASSISTANCE_REQUESTS,
    ASSISTANCE_ESCALATIONS,
    ASSISTANCE_RATINGS,
    ASSISTANCE_REJECTED_ACTIONS,
    WEBHOOK_DEAD_LETTERS,
)


# -- each department's own topics ----------------------------------------------------------


#: Topics of departments (``dept.<code>.…``): their ACLs are the registry's to reconcile.
DEPARTMENT_TOPIC_PREFIX = "dept."


@dataclass(frozen=True)
class DepartmentTopic:
    """A topic every onboarded department has, named ``dept.<code>.<suffix>``.

    The registry creates them when a department gets its Kafka credential and grants
    the department its side; the services' side is declared here. Their names are made
    and read only here::

        DepartmentTopic.inbox("hz-amr")                    # 'dept.hz-amr.inbox'
        DepartmentTopic.inbound("hz-amr")                  # 'dept.hz-amr.inbound'
        DepartmentTopic.INBOX.pattern()                    # every inbox, to subscribe to
        DepartmentTopic.INBOX.code_of("dept.hz-amr.inbox") # 'hz-amr' (None: not an inbox)
        DepartmentTopic.namespace("hz-amr")                # 'dept.hz-amr.', its own topics

    One more family is per resource: a department's view of a data resource it has a
    conditional subscription to (有条件共享, streams/sharing/), ``dept.<code>.shared.<resource>``::

        DepartmentTopic.shared("hz-xh-health", "credit_list_entry")
        # 'dept.hz-xh-health.shared.credit_list_entry'
        DepartmentTopic.SHARED.view_of("dept.hz-xh-health.shared.credit_list_entry")
        # ('hz-xh-health', 'credit_list_entry')
    """

    suffix: str
    description: str
    key: TopicKey
    retention_ms: int
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    #: A family of topics, one per data resource (``dept.<code>.<suffix>.<resource>``).
    per_resource: bool = False

    INBOX: ClassVar[DepartmentTopic]
    INBOUND: ClassVar[DepartmentTopic]
    SHARED: ClassVar[DepartmentTopic]

    @staticmethod
    def namespace(department_code: str) -> str:
        """The prefix of every topic of the department's own."""
        return f"{DEPARTMENT_TOPIC_PREFIX}{department_code}."

    @classmethod
    def inbox(cls, department_code: str) -> str:
        """The name of the department's inbox."""
        return cls.INBOX.name(department_code)

    @classmethod
    def inbound(cls, department_code: str) -> str:
        """The name of the department's inbound topic."""
        return cls.INBOUND.name(department_code)

    @classmethod
    def shared(cls, department_code: str, resource_code: str) -> str:
        """The department's view of a data resource: ``dept.<code>.shared.<resource>``."""
        return f"{cls.SHARED.name(department_code)}.{resource_code}"

    def name(self, department_code: str) -> str:
        return f"{self.namespace(department_code)}{self.suffix}"

    def view_of(self, topic: str) -> tuple[str, str] | None:
        """(department code, resource code) of a view topic of this family; None for any
        other topic."""
        match = _department_view_name(self.suffix).match(topic)
        return (match["code"], match["resource"]) if match else None

    def pattern(self) -> str:
        """This topic of every department, as a regex librdkafka subscribes to (``^…``)."""
        family = r"\..+" if self.per_resource else ""
        return rf"^{re.escape(DEPARTMENT_TOPIC_PREFIX)}[^.]+\.{re.escape(self.suffix)}{family}$"

    def code_of(self, topic: str) -> str | None:
        """The department code of this topic's name; None for any other topic."""
        if self.per_resource:
            view = self.view_of(topic)
            return view[0] if view else None
        match = _department_topic_name(self.suffix).match(topic)
        return match["code"] if match else None

    def spec(self, department_code: str, topic: str | None = None) -> TopicSpec:
        """The declaration of this topic of the department (``topic``: the name, for a
        family of per-resource topics such as :meth:`shared`)."""
        return TopicSpec(
            topic or self.name(department_code),
            self.description,
            self.key,
            retention_ms=self.retention_ms,
            partitions=1,  # one department's feed, in order; never joined
            writers=self.writers,
            readers=self.readers,
        )


@cache
def _department_topic_name(suffix: str) -> re.Pattern[str]:
    # Department codes are lower-case words joined by hyphens: never a dot.
    return re.compile(
        rf"^{re.escape(DEPARTMENT_TOPIC_PREFIX)}(?P<code>[^.]+)\.{re.escape(suffix)}$"
    )


@cache
def _department_view_name(suffix: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(DEPARTMENT_TOPIC_PREFIX)}(?P<code>[^.]+)\.{re.escape(suffix)}\.(?P<resource>.+)$"
    )


DEPARTMENT_INBOX = DepartmentTopic.INBOX = DepartmentTopic(
    "inbox",
    "What the platform delivers to the department (双告知 pushes, sanction notices …);"
    " only that department may read it",
    TopicKey.USCC,
    retention_ms=365 * DAY_MS,
    writers=("streams",),
    # The webhook worker (connectors/webhooks) pushes every item to the department's endpoint.
    readers=("sink", "webhooks"),
)
DEPARTMENT_INBOUND = DepartmentTopic.INBOUND = DepartmentTopic(
    "inbound",
    "What the department's own systems publish to the platform; only it may write it",
    TopicKey.SOURCE,
    retention_ms=30 * DAY_MS,
    # The inbox API writes a department's actions on its behalf (the topic names the
    # department, so the processors take the acting department from it as ever).
    writers=("inbox",),
    readers=("connectors", "streams"),  # the streams read 双告知 actions and 反馈 from it
)
#: Not one topic per department but one per conditional subscription: the registry's
#: reconciler creates it while the subscription is live and keeps it after (what was
#: shared, for audit); the sharing processor (svc-streams) writes it.
DEPARTMENT_SHARED = DepartmentTopic.SHARED = DepartmentTopic(
    "shared",
    "有条件共享: the department's view of a data resource it subscribed to on conditions —"
    " only the granted fields of the records about entities in the granted divisions;"
    " only that department may read it",
    TopicKey.USCC,
    retention_ms=365 * DAY_MS,
    writers=("streams",),
    per_resource=True,
)
#: The topics every onboarded department has.
DEPARTMENT_TOPICS: tuple[DepartmentTopic, ...] = (DEPARTMENT_INBOX, DEPARTMENT_INBOUND)


# -- who may use them -----------------------------------------------------------------------


def owned_by_declarations(grant: Grant) -> bool:
    """The grants ``topics apply`` reconciles: services' grants outside department topics."""
    return grant.principal.startswith("User:svc-") and not grant.name.startswith(
        DEPARTMENT_TOPIC_PREFIX
    )


#: Topics the stream processors create themselves: Faust names its internal topics (table
#: changelogs, repartition and deadline topics) after the app id, and every app id starts
#: with this prefix (``xietong.streams.dual-notice``).
STREAMS_INTERNAL_TOPIC_PREFIX = "xietong.streams."

#: The platform services that never consume, so have no consumer groups: the inbox API
#: only writes the departments' inbound topics (it reads the credit database).
PRODUCING_ONLY_SERVICES = ("inbox",)

#: The platform services that write with Kafka transactions, each under the transactional
#: ids ``xietong.<service>.…`` alone: the HTTP ingest writes a batch and its answer in one.
TRANSACTIONAL_SERVICES = ("connectors",)


def transactional_id(service: str, name: str) -> str:
    """The transactional id ``name`` of a platform service: ``xietong.<service>.<name>``,
    the only ones its ACLs let it use."""
    return f"xietong.{service}.{name}"


def service_grants(topics: Iterable[TopicSpec] = TOPICS) -> set[Grant]:
    """The ACLs of the platform's services: the declared readers and writers of each
    topic, each service's own consumer groups (``xietong.<service>.``), the transactional
    ids of the services that write transactions (:data:`TRANSACTIONAL_SERVICES`), and the
    stream processors' internal topics (``xietong.streams.``)."""
    grants: set[Grant] = set()
    for spec in topics:
        for service in spec.writers:
            grants |= topic_grants(f"User:{principal_name(service)}", spec.name, "WRITE")
        for service in spec.readers:
            grants |= topic_grants(f"User:{principal_name(service)}", spec.name, "READ")
    for service in SERVICES:
        if service not in ("admin", *PRODUCING_ONLY_SERVICES):
            principal = f"User:{principal_name(service)}"
            grants.add(group_grant(principal, f"xietong.{service}."))
    for service in TRANSACTIONAL_SERVICES:
        principal = f"User:{principal_name(service)}"
        for operation in ("WRITE", "DESCRIBE"):
            grants.add(
                Grant(
                    principal,
                    "TRANSACTIONAL_ID",
                    transactional_id(service, ""),
                    operation,
                    "PREFIXED",
                )
            )
    streams = f"User:{principal_name('streams')}"
    for operation in ("CREATE", "READ", "WRITE", "DESCRIBE"):
        grants.add(Grant(streams, "TOPIC", STREAMS_INTERNAL_TOPIC_PREFIX, operation, "PREFIXED"))
    return grants


# -- applying them ------------------------------------------------------------------------


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"  # needs a human: partition count differs


@dataclass(frozen=True)
class TopicChange:
    topic: str
    change: Change
    detail: str = ""


def apply_topics(
    admin: AdminClient, settings: Settings, topics: Iterable[TopicSpec] = TOPICS
) -> list[TopicChange]:
    """Create missing topics and correct drifted configuration; report each topic."""
    topics = list(topics)
    existing = admin.list_topics(timeout=15).topics
    changes: list[TopicChange] = []

    missing = [spec for spec in topics if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partition_count(settings),
                    replication_factor=settings.replication_factor,
                    config=spec.config(settings),
                )
                for spec in missing
            ],
            operation_timeout=30,
        )
        for spec in missing:
            try:
                futures[spec.name].result()
            except KafkaException as error:
                # Another apply may have created it in the meantime; anything else is real.
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise
            changes.append(
                TopicChange(
                    spec.name,
                    Change.CREATED,
                    f"{spec.partition_count(settings)} partitions,"
                    f" replication {settings.replication_factor}",
                )
            )

    present = [spec for spec in topics if spec.name in existing]
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in present]
        described = admin.describe_configs(resources)
        for spec, resource in zip(present, resources, strict=True):
            changes.append(
                _reconcile(admin, settings, spec, existing[spec.name], described[resource].result())
            )
    order = {spec.name: index for index, spec in enumerate(topics)}
    return sorted(changes, key=lambda change: order[change.topic])


def apply_service_acls(admin: AdminClient, topics: Iterable[TopicSpec] = TOPICS) -> Reconciled:
    """Make the broker grant each platform service exactly what the declarations say."""
    return reconcile(admin, service_grants(topics), owned_by_declarations)


def _reconcile(
    admin: AdminClient,
    settings: Settings,
    spec: TopicSpec,
    metadata: object,
    current: dict[str, ConfigEntry],
) -> TopicChange:
    partitions = len(metadata.partitions)  # type: ignore[attr-defined]
    wanted_partitions = spec.partition_count(settings)
    if partitions != wanted_partitions:
        return TopicChange(
            spec.name,
            Change.CONFLICT,
            f"has {partitions} partitions, declared {wanted_partitions}: repartitioning a keyed"
            " topic moves keys, so change it by a planned migration, not by apply",
        )
    drift = {
        name: value
        for name, value in spec.config(settings).items()
        if name not in current or current[name].value != value
    }
    if not drift:
        return TopicChange(spec.name, Change.UNCHANGED)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        spec.name,
        incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in drift.items()
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result()
    return TopicChange(
        spec.name, Change.UPDATED, ", ".join(f"{name}={value}" for name, value in drift.items())
    )
