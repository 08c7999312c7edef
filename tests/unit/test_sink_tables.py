"""The credit sink without services: every mapping turns a record of its type into a row
COPY accepts, and the tamper-evident log's verification names what was done to it."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.records import event_time
from connectors.sink.chain import GENESIS, Candidate, Entry, entry_hash, verify_chain
from connectors.sink.tables import (
    TABLES_BY_RECORD,
    TABLES_BY_TOPIC,
    AuditFact,
)
from connectors.sink.writer import Batch, line_formatter, row_kinds
from schemas import (
    ASSISTANCE_RECORD_TYPES,
    DUAL_NOTICE_RECORD_TYPES,
    JOINT_PUNISHMENT_RECORD_TYPES,
)
from tests.sink_records import decoded_records
from xietong.clock import business_clock
from xietong.topics import DepartmentTopic


@pytest.mark.parametrize("topic", sorted(TABLES_BY_TOPIC))
def test_every_mapped_record_becomes_a_copy_line_with_its_lineage(topic: str) -> None:
    mapping = TABLES_BY_TOPIC[topic]
    batch = Batch()
    for offset, record in enumerate(decoded_records(mapping.record.schema, 20)):
        batch.add(topic, 2, offset, mapping, record)
    rows = batch.tables[mapping.table]
    assert len(rows.rows) == 20
    for row in rows.rows.values():
        line = line_formatter(row_kinds(rows.columns))(row)
        fields = line.rstrip("\n").split("\t")
        assert len(fields) == len(mapping.all_columns) + 3
        assert fields[-3:-1] == [topic, "2"]
    assert batch.next_offsets == {(topic, 2): 20}


def test_a_record_read_twice_in_a_batch_is_one_row_and_one_log_entry() -> None:
    mapping = TABLES_BY_TOPIC["punishment.feedback"]
    (record,) = decoded_records(mapping.record.schema, 1)
    batch = Batch()
    batch.add("punishment.feedback", 0, 7, mapping, record)
    batch.add("punishment.feedback", 0, 8, mapping, record)
    assert len(batch.tables[mapping.table].rows) == 1
    # The log drops the second candidate when it appends (same entry id).
    assert len({c.fact.entry_id for c in batch.candidates}) == 1


def test_copy_text_escapes_tabs_newlines_backslashes_and_array_quotes() -> None:
    line = line_formatter(("text", "text[]", "text"))(["a\tb\nc\\d", ['x"y', "p,q"], None])
    # In the array literal the quote is \", which COPY's own escaping makes \\".
    assert line == 'a\\tb\\nc\\\\d\t{"x\\\\"y","p,q"}\t\\N\n'


def test_a_text_reading_backslash_n_is_that_text_not_a_null() -> None:
    formatted = line_formatter(("text", "text", "text"))
    assert formatted(["\\N", None, "x"]) == "\\\\N\t\\N\tx\n"
    assert formatted([None, "a\\", None]) == "\\N\ta\\\\\t\\N\n"
    assert formatted(["中文", None, "é"]) == "中文\t\\N\té\n"


@pytest.mark.parametrize("table", sorted({m.table for m in TABLES_BY_RECORD.values()}))
def test_a_compiled_row_holds_what_each_columns_getter_reads(table: str) -> None:
    (mapping,) = {id(m): m for m in TABLES_BY_RECORD.values() if m.table == table}.values()
    for record in decoded_records(mapping.record.schema, 30):
        assert mapping.row(record, "t", 1, 9) == (
            *(c.get(record) for c in mapping.all_columns),
            "t",
            1,
            9,
        )
        if mapping.current is not None:
            columns = mapping.current.columns
            assert mapping.current.row(record, "t", 1, 9) == (
                *(c.get(record) for c in columns),
                "t",
                1,
                9,
            )


def test_inbox_topics_are_recognised_by_name_and_pattern() -> None:
    import re

    assert DepartmentTopic.INBOX.code_of("dept.hz-xh-amr.inbox") == "hz-xh-amr"
    assert DepartmentTopic.INBOX.code_of("dept.hz-xh-amr.inbound") is None
    assert DepartmentTopic.INBOX.code_of("dualnotice.pushes") is None
    assert re.match(DepartmentTopic.INBOX.pattern(), "dept.hz-xh-amr.inbox")
    assert not re.match(DepartmentTopic.INBOX.pattern(), "dept.hz-xh-amr.inbound")


def test_inboxes_carry_the_processors_records_by_their_schema_names() -> None:
    for name in (
        "cn.gov.xietong.dualnotice.DualNoticePush",
        "cn.gov.xietong.dualnotice.DualNoticeAlert",
        "cn.gov.xietong.dualnotice.EntityClosureNotice",
        "cn.gov.xietong.punishment.SanctionNotice",
        "cn.gov.xietong.punishment.RestrictionHit",
        "cn.gov.xietong.punishment.LiftNotice",
        "cn.gov.xietong.punishment.SeriousListingProposal",
        "cn.gov.xietong.assistance.AssistanceRequest",
        "cn.gov.xietong.assistance.AssistanceEscalation",
        "cn.gov.xietong.assistance.AssistanceRating",
    ):
        assert name in TABLES_BY_RECORD


def test_every_record_a_processor_publishes_has_a_table_so_none_is_a_sink_dead_letter() -> None:
    """Whatever a processor sends to an inbox is one of its outputs: without a table the sink
    would dead-letter its delivery. The 待认领清单 is the one exception: a compacted view of
    the 分流失败 records (stored as dual_notice_routing_failures), never in an inbox."""
    published = {
        *JOINT_PUNISHMENT_RECORD_TYPES,
        *DUAL_NOTICE_RECORD_TYPES,
        *ASSISTANCE_RECORD_TYPES,
    }
    stored = {mapping.record.name for mapping in TABLES_BY_RECORD.values()}
    missing = published - stored - {"dual_notice_claimable_item"}
    assert missing == set()


# -- the tamper-evident log -------------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()


def chain_of(count: int) -> tuple[list[Entry], tuple[int, str, str]]:
    """A valid chain of ``count`` entries and its signed head, made as the appender does."""
    from connectors.sink.chain import head_message

    entries: list[Entry] = []
    prev = GENESIS
    moment = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for position in range(1, count + 1):
        candidate = Candidate(
            AuditFact(
                "CLAIM",
                f"event-{position}",
                "91330106MA2CD7Q4XU",
                "hz-xh-amr",
                moment + dt.timedelta(minutes=position),
                {"push_id": f"push-{position}", "version": 2},
            ),
            "dualnotice.pushes",
            3,
            100 + position,
        )
        fact = candidate.fact
        unsigned = Entry(
            candidate.chain, position, fact.entry_id, fact.kind, fact.event_id, fact.uscc,
            fact.department_code, fact.occurred_at, candidate.topic, candidate.partition,
            candidate.offset, fact.details, prev, "", "",
        )  # fmt: skip
        hash_ = entry_hash(unsigned.body(), prev)
        entries.append(
            replace(unsigned, hash=hash_, signature=KEY.sign(bytes.fromhex(hash_)).hex())
        )
        prev = hash_
    head = (count, prev, KEY.sign(head_message("dualnotice.pushes/3", count, prev)).hex())
    return entries, head


def test_an_intact_chain_verifies() -> None:
    entries, head = chain_of(5)
    assert verify_chain(KEY.public_key(), "dualnotice.pushes/3", entries, head) is None


def test_a_modified_entry_is_named() -> None:
    entries, head = chain_of(5)
    entries[2] = replace(entries[2], department_code="hz-other")
    finding = verify_chain(KEY.public_key(), "dualnotice.pushes/3", entries, head)
    assert finding is not None
    assert (finding.problem, finding.position, finding.entry_id) == (
        "modified",
        3,
        entries[2].entry_id,
    )


def test_a_deleted_entry_is_named_by_its_place() -> None:
    entries, head = chain_of(5)
    del entries[1]
    finding = verify_chain(KEY.public_key(), "dualnotice.pushes/3", entries, head)
    assert finding is not None
    assert (finding.problem, finding.position) == ("deleted", 2)


def test_a_deleted_last_entry_is_caught_by_the_signed_head() -> None:
    entries, head = chain_of(5)
    finding = verify_chain(KEY.public_key(), "dualnotice.pushes/3", entries[:-1], head)
    assert finding is not None
    assert (finding.problem, finding.position) == ("deleted", 5)


def test_reordered_entries_are_named() -> None:
    entries, head = chain_of(5)
    swapped = entries[:]
    swapped[1], swapped[2] = (
        replace(entries[2], position=2),
        replace(entries[1], position=3),
    )
    finding = verify_chain(KEY.public_key(), "dualnotice.pushes/3", swapped, head)
    assert finding is not None
    assert (finding.problem, finding.position, finding.entry_id) == (
        "reordered",
        2,
        entries[2].entry_id,
    )


def test_a_signature_by_another_key_is_a_modification() -> None:
    entries, head = chain_of(3)
    other = Ed25519PrivateKey.generate()
    entries[0] = replace(entries[0], signature=other.sign(bytes.fromhex(entries[0].hash)).hex())
    finding = verify_chain(KEY.public_key(), "dualnotice.pushes/3", entries, head)
    assert finding is not None and finding.problem == "modified"


def test_hashes_do_not_depend_on_the_order_of_keys() -> None:
    body = {"b": 1, "a": {"y": "记录", "x": None}}
    shuffled = dict(random.Random(1).sample(list(body.items()), 2))
    assert entry_hash(body, GENESIS) == entry_hash(shuffled, GENESIS)


# -- day columns, on either side of midnight in China ------------------------------------------


@pytest.mark.parametrize(
    "instant",
    [
        dt.datetime(2026, 12, 6, 15, 30, tzinfo=dt.UTC),  # 23:30 in China, 6 December
        dt.datetime(2026, 12, 6, 16, 30, tzinfo=dt.UTC),  # 00:30 in China, 7 December
        dt.datetime(2026, 12, 6, 23, 30, tzinfo=dt.UTC),  # 07:30 in China, 7 December
    ],
    ids=["15:30Z", "16:30Z", "23:30Z"],
)
def test_a_licence_decided_today_is_stored_on_the_province_s_day(instant: dt.datetime) -> None:
    with time_machine.travel(instant, tick=False):
        clock = business_clock()
        today = clock.today()
        happened = event_time("licence", {"decided_on": today})
    mapping = TABLES_BY_TOPIC["permits.licences"]
    (record,) = decoded_records(mapping.record.schema, 1)
    record["decided_on"] = record["valid_from"] = today
    record["envelope"]["event_time"] = dt.datetime.fromtimestamp(happened / 1000, dt.UTC)

    row = mapping.row(record, "permits.licences", 0, 1)
    fields = dict(
        zip(
            (c.name for c in mapping.all_columns),
            line_formatter(row_kinds(mapping.all_columns))(row).split("\t"),
            strict=False,
        )
    )

    assert fields["decided_on"] == fields["valid_from"] == today.isoformat()
    stored = dt.datetime.fromisoformat(fields["event_time"])
    assert stored == clock.midnight(today)
    assert clock.day_of(stored) == today
