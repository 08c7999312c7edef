"""The sample province's departments, end to end: every export through its connector.

Each export has its own format (GB18030 and UTF-8 CSV, JSON Lines, xlsx) and carries
deliberately bad records of every class; the manifest says which dead-letter reasons
each must produce.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from app.demo import FeedResult, feed_samples
from schemas import CANONICAL_RECORD_TYPES, register_all
from tests.kafka_helpers import TopicWindow
from xietong.kafka import KafkaClients


@pytest.fixture(scope="module")
def fed(
    kafka: KafkaClients, tmp_path_factory: pytest.TempPathFactory, connectors_kafka: KafkaClients
):
    register_all(kafka.schema_registry())
    out = tmp_path_factory.mktemp("exports")
    windows = {
        name: TopicWindow(kafka, record.topic.name)
        for name, record in CANONICAL_RECORD_TYPES.items()
    }
    dead_letters = TopicWindow(kafka, "platform.dead-letter")
    results = feed_samples(connectors_kafka, out, records=3000, seed=11, bad_share=0.08)
    events = {name: window.read() for name, window in windows.items()}
    return out, results, events, dead_letters.read()


def test_every_department_export_reconciles_with_its_manifest(fed) -> None:
    out, results, _, _ = fed
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {r.export.file for r in results} == {f["file"] for f in manifest["files"]}
    for result in results:
        report, export = result.report, result.export
        assert report.reconciles, export.file
        assert report.read == export.records, export.file
        assert report.published == export.good, export.file
        assert report.dead_lettered == export.records - export.good, export.file


def test_every_class_of_bad_input_is_dead_lettered_with_its_reason(fed) -> None:
    out, results, _, letters = fed
    seen_defects = Counter()
    for result in results:
        export = result.export
        partition = f"file:{(out / export.file).resolve()}"
        mine = [m.value for m in letters if m.value["source_partition"] == partition]
        observed = Counter(
            code for letter in mine for code in {r["code"] for r in letter["reasons"]}
        )
        assert dict(observed) == export.bad, export.file
        assert all(letter["payload"] for letter in mine)
        assert all(letter["reasons"][0]["message"] for letter in mine)
        seen_defects.update(export.defects)
    assert set(seen_defects) >= {
        "uscc_check_character",
        "organization_check",
        "impossible_date",
        "date_order",
        "missing_required",
        "negative_amount",
        "unknown_code",
        "wrong_encoding",
    }


def test_published_events_are_keyed_by_uscc_and_traceable_to_their_source(fed) -> None:
    out, results, events, _ = fed
    by_partition: Counter[str] = Counter()
    for record_type, messages in events.items():
        for message in messages:
            envelope = message.value["envelope"]
            assert message.key == message.value["uscc"].encode(), record_type
            by_partition[envelope["source_partition"]] += 1
    for result in results:
        partition = f"file:{(out / result.export.file).resolve()}"
        assert by_partition[partition] == result.export.good, result.export.file


def test_feeding_the_same_exports_again_publishes_nothing_twice(
    fed, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    out, _, _, _ = fed
    again: list[FeedResult] = feed_samples(
        connectors_kafka, out, records=3000, seed=11, bad_share=0.08
    )
    assert all(result.report.read == 0 for result in again)
