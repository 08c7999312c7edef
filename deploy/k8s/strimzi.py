"""The platform's topics and Kafka users as Strimzi resources, from the declarations.

    .venv/bin/python deploy/k8s/strimzi.py     # after changing xietong/topics.py

``xietong topics apply`` is how the platform declares its topics and its services' ACLs
on a cluster it administers. Under Strimzi the Topic Operator and the User Operator own
them instead, so this script writes the same declarations (:data:`xietong.topics.TOPICS`
and :func:`xietong.topics.service_grants`) as ``KafkaTopic`` and ``KafkaUser`` resources
to ``strimzi/topics.yaml`` and ``strimzi/users.yaml``, with the production layout
(replication 3, min ISR 2). ``tests/unit/test_deploy_k8s.py`` checks that both files
are what this script writes, and validates them against Strimzi's own CRD schemas.

Department topics and users are not here: they follow the registry's subscriptions.
The registry makes the department topics itself (its User Operator permitting it:
see :data:`REGISTRY_MAKES_DEPARTMENT_TOPICS`), and with the registry's ACL reconciler
switched off (``XIETONG_REGISTRY_ACL_RECONCILER=false``) each department's
``KafkaUser`` is written from the registry's grants, and applied again after every
change of a subscription (deploy/README.md)::

    xietong registry grants --json | .venv/bin/python deploy/k8s/strimzi.py departments \
        | kubectl -n xietong apply -f -
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from registry.acl import department_acls
from registry.grants import DepartmentGrant
from xietong.access import Grant
from xietong.kafka import ADMIN_PRINCIPAL, SERVICES, principal_name
from xietong.settings import Settings
from xietong.topics import (
    DEPARTMENT_SHARED,
    DEPARTMENT_TOPIC_PREFIX,
    DEPARTMENT_TOPICS,
    TOPICS,
    service_grants,
)

STRIMZI_DIR = Path(__file__).parent / "strimzi"
#: The ``Kafka`` resource's name (strimzi/kafka.yaml): every topic and user names it.
CLUSTER = "xietong"
#: The production layout of every declared topic.
PRODUCTION = Settings(replication_factor=3, min_insync_replicas=2, uscc_partitions=6)

#: What the registry needs besides its declared grants to make the department topics
#: (:func:`registry.acl.reconcile_departments`): create and configure ``dept.*`` topics,
#: and list the SCRAM users to know which departments are onboarded.
_REGISTRY = f"User:{principal_name('registry')}"
REGISTRY_MAKES_DEPARTMENT_TOPICS = frozenset(
    {
        Grant(_REGISTRY, "TOPIC", DEPARTMENT_TOPIC_PREFIX, operation, "PREFIXED")
        for operation in ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")
    }
    | {Grant(_REGISTRY, "CLUSTER", "kafka-cluster", "DESCRIBE")}
)

_RESOURCE = {
    "TOPIC": "topic",
    "GROUP": "group",
    "CLUSTER": "cluster",
    "TRANSACTIONAL_ID": "transactionalId",
}
_PATTERN = {"LITERAL": "literal", "PREFIXED": "prefix"}


def _operation(name: str) -> str:
    """Kafka's ACL operation (``DESCRIBE_CONFIGS``) as Strimzi spells it (``DescribeConfigs``)."""
    return "".join(part.capitalize() for part in name.split("_"))


def _resource_name(topic: str) -> str:
    """A Kubernetes object name for a topic: lower case, dots and dashes only."""
    return re.sub(r"[^a-z0-9.-]", "-", topic.lower()).strip("-.")


def department_topic_grants() -> set[Grant]:
    """The services' side of every department's topics, as prefixed grants on ``dept.``:
    a literal ACL per department is the registry's to make, and under Strimzi it makes
    none."""
    grants: set[Grant] = set()
    for topic in (*DEPARTMENT_TOPICS, DEPARTMENT_SHARED):
        for operation, services in (("WRITE", topic.writers), ("READ", topic.readers)):
            for service in services:
                principal = f"User:{principal_name(service)}"
                for op in (operation, "DESCRIBE"):
                    grants.add(Grant(principal, "TOPIC", DEPARTMENT_TOPIC_PREFIX, op, "PREFIXED"))
    return grants


def kafka_topics() -> list[dict[str, Any]]:
    """One ``KafkaTopic`` per declared topic, in the production layout."""
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": {
                "name": _resource_name(spec.name),
                "labels": {"strimzi.io/cluster": CLUSTER, "app.kubernetes.io/part-of": "xietong"},
            },
            "spec": {
                "topicName": spec.name,
                "partitions": spec.partition_count(PRODUCTION),
                "replicas": PRODUCTION.replication_factor,
                "config": spec.config(PRODUCTION),
            },
        }
        for spec in TOPICS
    ]


def _acls(grants: Iterable[Grant]) -> list[dict[str, Any]]:
    operations: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for grant in grants:
        operations[(grant.resource, grant.name, grant.pattern)].add(_operation(grant.operation))
    acls = []
    for (resource, name, pattern), ops in sorted(operations.items()):
        target: dict[str, str] = {"type": _RESOURCE[resource]}
        if resource != "CLUSTER":
            target |= {"name": name, "patternType": _PATTERN[pattern]}
        acls.append({"resource": target, "operations": sorted(ops), "host": "*"})
    return acls


def _kafka_user(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {
            "name": name,
            "labels": {"strimzi.io/cluster": CLUSTER, "app.kubernetes.io/part-of": "xietong"},
        },
        "spec": spec,
    }


def department_users(grants: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A SCRAM ``KafkaUser`` per department, with the ACLs its grant gives, from the rows
    of ``xietong registry grants --json``. The User Operator makes its password and keeps
    it in the Secret of the user's name, for the department to be given."""
    users = []
    for row in grants:
        grant = DepartmentGrant(
            department_code=row["department"],
            principal=row["principal"],
            read_topics=frozenset(row["read_topics"]),
            write_topics=frozenset(row["write_topics"]),
            group_prefix=row["group_prefix"],
        )
        spec = {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": _acls(department_acls(grant))},
        }
        users.append(_kafka_user(grant.principal.removeprefix("User:"), spec))
    return users


def kafka_users() -> list[dict[str, Any]]:
    """A SCRAM ``KafkaUser`` per platform service, with the ACLs its declarations give;
    ``xietong-admin`` has none, being the cluster's super user (strimzi/kafka.yaml)."""
    grants = service_grants() | department_topic_grants() | REGISTRY_MAKES_DEPARTMENT_TOPICS
    users = []
    for service in SERVICES:
        principal = principal_name(service)
        spec: dict[str, Any] = {"authentication": {"type": "scram-sha-512"}}
        if principal != ADMIN_PRINCIPAL:
            mine = [g for g in grants if g.principal == f"User:{principal}"]
            spec["authorization"] = {"type": "simple", "acls": _acls(mine)}
        users.append(_kafka_user(principal, spec))
    return users


HEADER = (
    "# Written by deploy/k8s/strimzi.py from xietong/topics.py: edit the declarations and\n"
    "# run `.venv/bin/python deploy/k8s/strimzi.py`, never this file.\n"
)


def render(documents: list[dict[str, Any]], header: str = HEADER) -> str:
    return header + yaml.safe_dump_all(
        documents, sort_keys=False, allow_unicode=True, explicit_start=True
    )


def files() -> dict[Path, str]:
    """What this script writes: path → text."""
    return {
        STRIMZI_DIR / "topics.yaml": render(kafka_topics()),
        STRIMZI_DIR / "users.yaml": render(kafka_users()),
    }


def main() -> None:
    if sys.argv[1:] == ["departments"]:
        header = "# The departments' KafkaUsers, from `xietong registry grants --json`.\n"
        sys.stdout.write(render(department_users(json.load(sys.stdin)), header))
        return
    for path, text in files().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
