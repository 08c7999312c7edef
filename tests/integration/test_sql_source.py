"""The SQL source: a department's own database, polled by its increasing 记录编号.

A throwaway PostgreSQL database on the stack stands in for 杭州市卫生健康委员会's
卫生许可审批系统; its ``licence_export`` table has the department's Chinese column names
and real ``date`` columns, mapped by ``tests/fixtures/sql-health-licence.yaml``.
Connector runs publish to the stack's real Kafka.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from connectors.base import RunReport
from connectors.config import ConnectorConfig, SqlSourceConfig
from connectors.records import SourceRecord
from connectors.runner import run_connector
from connectors.sql_source import SqlSourceError, SqlSourceUnavailable, SqlTableSource
from tests.kafka_helpers import TopicWindow
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER, LICENCES

MAPPING = Path(__file__).parent.parent / "fixtures" / "sql-health-licence.yaml"

DEPARTMENT_TABLES = sa.MetaData()
LICENCE_EXPORT = sa.Table(
    "licence_export",
    DEPARTMENT_TABLES,
    sa.Column("记录编号", sa.BigInteger, primary_key=True),
    sa.Column("版本", sa.Integer, nullable=False),
    sa.Column("统一社会信用代码", sa.String(18)),
    sa.Column("行政相对人名称", sa.Text),
    sa.Column("法定代表人", sa.Text),
    sa.Column("许可文书号", sa.Text),
    sa.Column("许可类别", sa.Text),
    sa.Column("许可证编号", sa.Text),
    sa.Column("许可内容", sa.Text),
    sa.Column("许可决定日期", sa.Date),
    sa.Column("有效期自", sa.Date),
    sa.Column("有效期至", sa.Date),  # NULL: 长期
    sa.Column("当前状态", sa.Text),
)
LICENCE_CHANGES = sa.Table(
    "licence_change_log",
    DEPARTMENT_TABLES,
    sa.Column("变更时间", sa.DateTime),
    sa.Column("记录编号", sa.BigInteger),
    sa.Column("变更内容", sa.Text),
)

#: The export of a system that keeps more than text: a JSON column, a NUMERIC version, and
#: columns the mapping does not read but a dead letter's payload must still show.
LICENCE_EXPORT_WITH_ATTACHMENTS = sa.Table(
    "licence_export_with_attachments",
    DEPARTMENT_TABLES,
    *(
        sa.Column(column.name, column.type, primary_key=column.primary_key)
        for column in LICENCE_EXPORT.columns
        if column.name not in ("版本", "法定代表人")
    ),
    sa.Column("版本", sa.Numeric),
    sa.Column("法定代表人", postgresql.JSONB),
    sa.Column("许可决定书扫描件", sa.LargeBinary),  # bytea
    sa.Column("经办人标识", postgresql.UUID),
    sa.Column("办理时长", sa.Interval),
)

# Valid USCCs (check characters computed with xietong.uscc.make_uscc).
SWIMMING_POOL = "91330106MA2CD7Q4XU"
HOTEL = "91330106MA27U8QX8B"
BARBER = "92330102L5A8RF2N6M"
BATHHOUSE = "91330106MA2H0K1E1U"


def licence_row(record_id: int, uscc: str = SWIMMING_POOL, **columns: Any) -> dict[str, Any]:
    """A well-formed row of the department's licence export; ``columns`` override it."""
    row = {
        "记录编号": record_id,
        "版本": 1,
        "统一社会信用代码": uscc,
        "行政相对人名称": f"杭州西湖第{record_id}公共场所经营有限公司",
        "法定代表人": "王芳",
        "许可文书号": f"杭卫公许〔2026〕{record_id:04d}号",
        "许可类别": "普通",
        "许可证编号": f"杭卫公证字〔2026〕第{record_id:06d}号",
        "许可内容": "游泳场所",
        "许可决定日期": date(2026, 3, 2),
        "有效期自": date(2026, 3, 2),
        "有效期至": date(2030, 3, 1),
        "当前状态": "有效",
    }
    return {**row, **columns}


#: Three good rows and one bad row for each kind of fault.
FIRST_EXPORT = [
    licence_row(1, SWIMMING_POOL),
    licence_row(2, HOTEL, 许可内容="住宿场所", 有效期至=None),
    licence_row(3, BARBER, 许可内容="美容美发场所"),
    licence_row(4, "91330106MA2CD7Q4XA"),  # wrong check character
    licence_row(5, BATHHOUSE, 有效期至=date(2026, 3, 1)),  # ends before it starts
    licence_row(6, HOTEL, 许可类别="临时"),  # not a 许可类别 of the mapping
]


@dataclass(frozen=True)
class DepartmentDatabase:
    """A throwaway database standing in for a department's approval system."""

    url: str
    engine: sa.Engine

    admin: sa.Engine

    @property
    def licence_partition(self) -> str:
        return self.partition_of("licence_export")

    def partition_of(self, table: str) -> str:
        return f"sql:{self.engine.url.host}/{self.engine.url.database}/{table}"

    def drop_connections(self) -> int:
        """End every session on the database (as a firewall or a restart would); how many."""
        with self.admin.connect() as connection:
            return len(
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.engine.url.database},
                ).all()
            )

    def accept_connections(self, accept: bool) -> None:
        with self.admin.connect() as connection:
            connection.execute(
                sa.text(
                    f'ALTER DATABASE "{self.engine.url.database}"'
                    f" ALLOW_CONNECTIONS {str(accept).lower()}"
                )
            )

    def insert(self, table: sa.Table, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(table.insert(), list(rows))


@pytest.fixture
def department(stack_settings: Settings) -> Iterator[DepartmentDatabase]:
    name = f"dept_sim_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        stack_settings.local_database_url("postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = stack_settings.local_database_url(name)
    engine = sa.create_engine(url)
    try:
        DEPARTMENT_TABLES.create_all(engine)
        yield DepartmentDatabase(url, engine, admin)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def licence_connector(
    department: DepartmentDatabase, table: str = "licence_export"
) -> ConnectorConfig:
    """A connector on the licence export, named afresh so that it starts with no offset.

    Small fetches and batches make even a handful of rows take several of each.
    """
    return ConnectorConfig(
        name=f"test-sql-licences-{uuid.uuid4().hex[:8]}",
        mapping=MAPPING,
        batch_size=2,
        source=SqlSourceConfig(
            url=department.url, table=table, incrementing_column="记录编号", fetch_size=2
        ),
    )


def from_source(window: TopicWindow, source_partition: str) -> list[dict[str, Any]]:
    """What the window's topic received from one source partition (topics are shared)."""
    return [
        message.value
        for message in window.read()
        if message.value.get("envelope", message.value)["source_partition"] == source_partition
    ]


def until_idle(reading: Iterator[SourceRecord | None]) -> list[SourceRecord]:
    """The records a source yields before it says it is caught up."""
    records = []
    for record in reading:
        if record is None:
            break
        records.append(record)
    return records


# -- publishing through a connector --------------------------------------------------------------


def test_a_run_publishes_every_good_row_and_dead_letters_every_bad_one_naming_the_field(
    department: DepartmentDatabase, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT)
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    report = run_connector(licence_connector(department), connectors_kafka)

    assert (report.read, report.published, report.dead_lettered) == (6, 3, 3)
    assert report.reconciles
    assert report.committed_offset == "6"

    partition = department.licence_partition
    published = {
        event["envelope"]["source_record_id"]: event for event in from_source(licences, partition)
    }
    assert sorted(published) == ["1", "2", "3"]
    hotel = published["2"]
    assert (hotel["uscc"], hotel["content"], hotel["category"]) == (HOTEL, "住宿场所", "ORDINARY")
    assert (hotel["decided_on"], hotel["valid_to"]) == (date(2026, 3, 2), None)  # NULL: 长期
    assert hotel["envelope"]["source_offset"] == "2"

    dead_lettered = {letter["position"]: letter for letter in from_source(dead_letters, partition)}
    reasons = {
        position: {(reason["field"], reason["code"]) for reason in letter["reasons"]}
        for position, letter in dead_lettered.items()
    }
    assert reasons == {
        "row 记录编号=4": {("uscc", "uscc.check_character")},
        "row 记录编号=5": {("valid_to", "date.order")},
        "row 记录编号=6": {("category", "code.unknown")},
    }
    for letter in dead_lettered.values():
        assert all(reason["message"].startswith(reason["field"]) for reason in letter["reasons"])
    assert "临时" in dead_lettered["row 记录编号=6"]["payload"].decode()


def test_a_second_run_publishes_only_the_rows_added_since_the_committed_offset(
    department: DepartmentDatabase, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT)
    connector = licence_connector(department)
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)
    run_connector(connector, connectors_kafka)

    department.insert(
        LICENCE_EXPORT, licence_row(7, BATHHOUSE, 许可内容="公共浴室"), licence_row(8, "")
    )
    report = run_connector(connector, connectors_kafka)

    assert (report.read, report.published, report.dead_lettered) == (2, 1, 1)
    assert report.committed_offset == "8"
    partition = department.licence_partition
    published = [
        event["envelope"]["source_record_id"] for event in from_source(licences, partition)
    ]
    assert sorted(published) == ["1", "2", "3", "7"]  # each row once over both runs
    dead_lettered = [letter["source_offset"] for letter in from_source(dead_letters, partition)]
    assert sorted(dead_lettered) == ["4", "5", "6", "8"]


def test_a_value_the_mapping_cannot_take_is_a_dead_letter_whatever_type_the_driver_returned(
    department: DepartmentDatabase, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    scan = b"%PDF-1.4\x00\xff"
    extras = {
        "许可决定书扫描件": scan,
        "经办人标识": "6f1c2e9a-3b1d-4f5e-9a7c-2d8e4b6a1c30",
        "办理时长": timedelta(days=3, hours=2),
    }
    department.insert(
        LICENCE_EXPORT_WITH_ATTACHMENTS,
        licence_row(1, SWIMMING_POOL, 版本=Decimal(1), 法定代表人="王芳", **extras),
        licence_row(2, HOTEL, 版本=Decimal(1), 法定代表人={"姓名": "王芳"}, **extras),
        licence_row(3, BARBER, 版本=Decimal("1.5"), 法定代表人="李娜", **extras),
        licence_row(4, BATHHOUSE, 版本=Decimal(2), 法定代表人="赵磊", **extras),
    )
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    report = run_connector(
        licence_connector(department, "licence_export_with_attachments"), connectors_kafka
    )

    assert (report.read, report.published, report.dead_lettered) == (4, 2, 2)
    partition = department.partition_of("licence_export_with_attachments")
    published = {e["envelope"]["source_record_id"]: e for e in from_source(licences, partition)}
    assert sorted(published) == ["1", "4"]  # the row after the bad ones too
    assert published["4"]["envelope"]["record_version"] == "2"
    assert published["1"]["legal_representative"] == "王芳"  # a JSON string is text
    letters = {letter["position"]: letter for letter in from_source(dead_letters, partition)}
    reasons = {
        position: [(reason["field"], reason["code"]) for reason in letter["reasons"]]
        for position, letter in letters.items()
    }
    assert reasons == {
        "row 记录编号=2": [("legal_representative", "text.invalid")],
        "row 记录编号=3": [("record_version", "id.invalid")],
    }
    assert "an object with 1 key where text is expected" in str(letters["row 记录编号=2"])
    assert "column '版本' holds 1.5" in str(letters["row 记录编号=3"])
    payload = letters["row 记录编号=3"]["payload"].decode("utf-8")
    assert f'"许可决定书扫描件": "\\\\x{scan.hex()}"' in payload  # bytea, as PostgreSQL writes it
    assert '"经办人标识": "6f1c2e9a-3b1d-4f5e-9a7c-2d8e4b6a1c30"' in payload
    assert '"办理时长": "3 days, 2:00:00"' in payload


def refuse_connections_after_the_first_batch(
    department: DepartmentDatabase,
) -> Callable[[RunReport, int], None]:
    """An ``on_batch`` that, once the first batch is committed, makes the database refuse
    every connection and ends those it has: the source loses its database mid-run."""

    def on_batch(report: RunReport, records: int) -> None:
        if report.committed_offset == "2":
            department.accept_connections(False)
            department.drop_connections()

    return on_batch


def test_a_lost_database_stops_the_run_saying_what_to_do_and_the_next_run_resumes(
    department: DepartmentDatabase, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    usccs = [SWIMMING_POOL, HOTEL, BARBER, BATHHOUSE]
    department.insert(LICENCE_EXPORT, *(licence_row(n, usccs[n % 4]) for n in range(1, 7)))
    connector = licence_connector(department)
    licences = TopicWindow(kafka, LICENCES.name)

    try:
        with pytest.raises(SqlSourceUnavailable) as raised:
            run_connector(
                connector,
                connectors_kafka,
                on_batch=refuse_connections_after_the_first_batch(department),
            )
    finally:
        department.accept_connections(True)

    message = str(raised.value)
    assert message.startswith(f"table licence_export in {department.engine.url.host}/")
    assert "the database cannot be reached or the connection was lost" in message
    assert "not currently accepting connections" in message  # what PostgreSQL said
    assert "the run stops reading after offset 2" in message
    assert "Check that the database is up" in message
    assert "it resumes after its last committed offset" in message

    report = run_connector(connector, connectors_kafka)

    assert (report.read, report.published, report.committed_offset) == (4, 4, "6")
    published = [
        event["envelope"]["source_record_id"]
        for event in from_source(licences, department.licence_partition)
    ]
    assert sorted(published, key=int) == ["1", "2", "3", "4", "5", "6"]


def test_a_connection_dropped_between_polls_is_opened_again(
    department: DepartmentDatabase, kafka: KafkaClients, connectors_kafka: KafkaClients
) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT[:3], licence_row(4, BATHHOUSE))
    dropped: list[int] = []

    report = run_connector(
        licence_connector(department),
        connectors_kafka,
        on_batch=lambda report, records: dropped.append(department.drop_connections()),
    )

    assert dropped[0] >= 1  # the source's pooled connection was among them
    assert (report.read, report.published, report.committed_offset) == (4, 4, "4")


# -- the source on its own -----------------------------------------------------------------------


def test_lag_counts_the_rows_beyond_the_offset(department: DepartmentDatabase) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT)
    source = SqlTableSource(department.url, "记录编号", table="licence_export")

    assert source.lag(None) == (6.0, "rows")
    assert source.lag("4") == (2.0, "rows")
    assert source.lag("6") == (0.0, "rows")
    source.close()


def test_a_caught_up_source_yields_idle_and_reads_new_rows_on_the_next_poll(
    department: DepartmentDatabase,
) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT[:3])
    source = SqlTableSource(department.url, "记录编号", table="licence_export", fetch_size=2)
    reading = source.read(None)

    first = until_idle(reading)
    assert [record.source_offset for record in first] == ["1", "2", "3"]
    assert first[0].fields is not None
    assert first[0].fields["有效期自"] == date(2026, 3, 2)  # a date, as the database has it

    department.insert(LICENCE_EXPORT, licence_row(10))
    assert [record.source_offset for record in until_idle(reading)] == ["10"]
    source.close()


def test_a_timestamp_column_resumes_after_the_stored_iso_timestamp(
    department: DepartmentDatabase,
) -> None:
    changed_at = [datetime(2026, 3, 2, 9, 0, 0, 250_000), datetime(2026, 3, 2, 9, 0, 1)]
    department.insert(
        LICENCE_CHANGES,
        *({"变更时间": at, "记录编号": 1, "变更内容": "变更负责人"} for at in changed_at),
        {"变更时间": datetime(2026, 3, 2, 10, 30), "记录编号": 2, "变更内容": "注销"},
    )
    source = SqlTableSource(department.url, "变更时间", table="licence_change_log")

    first = next(source.read(None))
    assert first is not None and first.source_offset == "2026-03-02T09:00:00.250000"
    rest = until_idle(source.read(first.source_offset))
    assert [record.position for record in rest] == [
        "row 变更时间=2026-03-02T09:00:01",
        "row 变更时间=2026-03-02T10:30:00",
    ]
    source.close()


def test_a_query_source_is_named_by_a_digest_of_its_text_and_reads_only_its_rows(
    department: DepartmentDatabase,
) -> None:
    department.insert(LICENCE_EXPORT, *FIRST_EXPORT, licence_row(7, 当前状态="注销"))
    query = "SELECT * FROM licence_export WHERE 当前状态 = '注销'"
    source = SqlTableSource(department.url, "记录编号", query=query)
    reindented = SqlTableSource(
        department.url, "记录编号", query=query.replace(" WHERE", "\n  WHERE")
    )

    url = department.engine.url
    assert source.source_partition.startswith(f"sql:{url.host}/{url.database}/query:")
    assert source.source_partition == reindented.source_partition
    assert [record.source_offset for record in until_idle(source.read("0"))] == ["7"]
    source.close()
    reindented.close()


def test_the_source_partition_names_host_database_and_table_but_never_the_password(
    department: DepartmentDatabase,
) -> None:
    source = SqlTableSource(department.url, "记录编号", table="licence_export")

    assert source.source_partition == department.licence_partition
    assert str(department.engine.url.password) not in source.source_partition
    source.close()


def test_a_missing_incrementing_column_is_an_error_naming_the_table_and_its_columns(
    department: DepartmentDatabase,
) -> None:
    config = SqlSourceConfig(
        url=department.url, table="licence_export", incrementing_column="许可编号"
    )

    with pytest.raises(SqlSourceError) as raised:
        SqlTableSource.from_config(config)

    message = str(raised.value)
    assert "table licence_export" in message
    assert "no column '许可编号' (incrementing_column)" in message
    assert "its columns are 记录编号, 版本, 统一社会信用代码" in message
    assert "\n" not in message


def test_a_date_column_is_refused_as_incrementing_column(department: DepartmentDatabase) -> None:
    with pytest.raises(SqlSourceError, match=r"'许可决定日期' of table licence_export .* is DATE"):
        SqlTableSource(department.url, "许可决定日期", table="licence_export")
