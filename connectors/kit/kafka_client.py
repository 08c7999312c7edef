"""An example raw-Kafka client of a department system (confluent-kafka with its Avro serde
only, nothing of the platform's code): read the department's inbox ``dept.<code>.inbox``
in a consumer group of its own, and write 认领 / 反馈 to ``dept.<code>.inbound``. It uses
exactly the client settings of the guide (``connectors/kit/README.md``, "Raw Kafka").

Run it (the variables are the department's; the defaults are the local stack's)::

    export DEPT_CODE=hz-health
    export DEPT_KAFKA_PASSWORD=…       # xietong registry issue-kafka-password hz-health
    export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    export SCHEMA_REGISTRY_URL=http://127.0.0.1:8081/apis/ccompat/v7
    export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT   # SASL_SSL (the default) on a cluster,
    export KAFKA_SSL_CA_LOCATION=province-ca.pem    # with the CA that signed the brokers
    python connectors/kit/kafka_client.py read                      # items since the last commit
    python connectors/kit/kafka_client.py claim <push id> <uscc>    # DepartmentAction CLAIM
    python connectors/kit/kafka_client.py feedback <hit id> <uscc> APPLIED

``read`` prints one JSON line per item (its record name, the key, the record) and commits
each item's offset after printing it, so the next ``read`` starts after it; it stops after
``--idle`` seconds without a new item. ``claim`` and ``feedback`` print the action's id
once the broker acknowledged the record; the processor's verdict is the push's next
version, or ``GET /v1/actions/{id}`` on the inbox API.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

#: What a department writes, and the subjects (record name strategy) they are registered under.
DEPARTMENT_ACTION = "cn.gov.xietong.dualnotice.DepartmentAction"
RESTRICTION_FEEDBACK = "cn.gov.xietong.punishment.RestrictionFeedback"


class Department:
    """One department's Kafka clients, with the guide's settings."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.code = environ["DEPT_CODE"]
        protocol = environ.get("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        ca_file = environ.get("KAFKA_SSL_CA_LOCATION")
        self.kafka: dict[str, Any] = {
            "bootstrap.servers": environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            "security.protocol": protocol,
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": f"dept-{self.code}",
            "sasl.password": environ["DEPT_KAFKA_PASSWORD"],
            **({"ssl.ca.location": ca_file} if ca_file and protocol.endswith("SSL") else {}),
        }
        url = environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
        self.registry = SchemaRegistryClient(
            {
                "url": url,
                **({"ssl.ca.location": ca_file} if ca_file and url.startswith("https:") else {}),
            }
        )
        self.inbox = f"dept.{self.code}.inbox"
        self.inbound = f"dept.{self.code}.inbound"

    # -- reading the inbox ----------------------------------------------------------------
    def read(self, group: str, idle_seconds: float) -> int:
        """Print every inbox item after the group's committed offset; commit each."""
        consumer = Consumer(
            {
                **self.kafka,
                "group.id": f"{self.code}.{group}",  # the department's groups: "<code>." only
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        deserialize = AvroDeserializer(self.registry)
        names: dict[int, str] = {}
        count = 0
        consumer.subscribe([self.inbox])
        try:
            last = time.monotonic()
            while time.monotonic() - last < idle_seconds:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                if message.error() is not None:
                    raise KafkaException(message.error())
                last = time.monotonic()
                value = message.value()
                if not value:
                    continue
                schema_id = struct.unpack(">I", value[1:5])[0]  # the Confluent wire format
                if schema_id not in names:
                    schema = json.loads(self.registry.get_schema(schema_id).schema_str or "{}")
                    name = schema["name"]
                    names[schema_id] = name if "." in name else f"{schema['namespace']}.{name}"
                record = deserialize(value, SerializationContext(self.inbox, MessageField.VALUE))
                line = {
                    "record": names[schema_id],
                    "key": (message.key() or b"").decode(),
                    "offset": f"{message.partition()}:{message.offset()}",
                    "value": record,
                }
                print(json.dumps(line, ensure_ascii=False, default=str), flush=True)
                consumer.commit(message=message, asynchronous=False)
                count += 1
        finally:
            consumer.close()
        print(f"{count} items read from {self.inbox}", file=sys.stderr)
        return count

    # -- acting -----------------------------------------------------------------------------
    def send(self, record_name: str, uscc: str, record: dict[str, Any]) -> None:
        """``record`` on the inbound topic, keyed by the entity's USCC, acknowledged."""
        schema = self.registry.get_latest_version(record_name).schema
        serialize = AvroSerializer(
            self.registry,
            schema.schema_str,
            conf={
                "auto.register.schemas": False,  # the platform registers the schemas
                "subject.name.strategy": record_subject_name_strategy,
            },
        )
        producer = Producer({**self.kafka, "enable.idempotence": True, "acks": "all"})
        failures: list[str] = []
        producer.produce(
            self.inbound,
            key=uscc.encode(),
            value=serialize(record, SerializationContext(self.inbound, MessageField.VALUE)),
            on_delivery=lambda error, _: failures.append(str(error)) if error else None,
        )
        if producer.flush(30) or failures:
            raise RuntimeError(f"{self.inbound}: not acknowledged: {failures or 'timed out'}")

    def claim(self, push_id: str, uscc: str, action_id: str, operator: str | None) -> None:
        self.send(
            DEPARTMENT_ACTION,
            uscc,
            {
                "action_id": action_id,  # keep it when sending again: applied once
                "uscc": uscc,
                "push_id": push_id,
                "action": "CLAIM",
                "return_reason": None,
                "reason_text": None,
                "target_department_code": None,
                "acted_at": int(time.time() * 1000),
                "operator": operator,
            },
        )

    def feedback(
        self, hit_id: str, uscc: str, outcome: str, reason: str | None, feedback_id: str
    ) -> None:
        self.send(
            RESTRICTION_FEEDBACK,
            uscc,
            {
                "feedback_id": feedback_id,
                "uscc": uscc,
                "hit_id": hit_id,
                "outcome": outcome,
                "reason": reason,
                "fed_back_at": int(time.time() * 1000),
                "operator": None,
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A department's inbox and inbound topics.")
    commands = parser.add_subparsers(dest="command", required=True)
    reading = commands.add_parser("read", help="Print the inbox items after the last commit.")
    reading.add_argument("--group", default="kit-example", help="after '<code>.' (kit-example)")
    reading.add_argument("--idle", type=float, default=10.0, help="stop after S s without items")
    claiming = commands.add_parser("claim", help="认领 a push.")
    claiming.add_argument("push_id")
    claiming.add_argument("uscc")
    claiming.add_argument("--action-id", help="the same id when sending again (default: new)")
    claiming.add_argument("--operator")
    answering = commands.add_parser("feedback", help="反馈 on a restriction hit.")
    answering.add_argument("hit_id")
    answering.add_argument("uscc")
    answering.add_argument("outcome", choices=("APPLIED", "NOT_APPLICABLE"))
    answering.add_argument("--reason", help="说明 (required with NOT_APPLICABLE)")
    answering.add_argument("--feedback-id", help="the same id when sending again (default: new)")
    options = parser.parse_args(argv)

    department = Department(dict(os.environ))
    try:
        if options.command == "read":
            department.read(options.group, options.idle)
        elif options.command == "claim":
            action_id = options.action_id or str(uuid.uuid4())
            department.claim(options.push_id, options.uscc, action_id, options.operator)
            print(action_id)
        else:
            feedback_id = options.feedback_id or str(uuid.uuid4())
            department.feedback(
                options.hit_id, options.uscc, options.outcome, options.reason, feedback_id
            )
            print(feedback_id)
    except (KafkaException, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
