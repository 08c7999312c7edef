"""The integration kit's worked mapping files (``connectors/kit/examples/``), each run over
the sample export next to it, as ``xietong connect validate`` runs them: every record is
accepted and reads as the reference (``connectors/kit/MAPPING.md``) says, so the examples
and the reference cannot drift from the code."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.config import ConnectorConfig, FileSourceConfig
from connectors.mapping import DepartmentMapping
from connectors.runner import RecordPreview, preview_mapping

KIT = Path(__file__).parents[2] / "connectors" / "kit"
EXAMPLES = KIT / "examples"
CONNECTORS = sorted(EXAMPLES.glob("*.connector.yaml"))


def previews(connector_file: Path) -> list[RecordPreview]:
    config = ConnectorConfig.load(connector_file)
    assert isinstance(config.source, FileSourceConfig) and config.mapping is not None
    return list(
        preview_mapping(
            DepartmentMapping.load(config.mapping),
            config.source.path,
            encoding=config.source.encoding,
            delimiter=config.source.delimiter,
        )
    )


def column(connector_file: Path, field: str) -> list[Any]:
    return [
        next(f.value for f in preview.fields if f.field == field)
        for preview in previews(connector_file)
    ]


def test_every_example_mapping_has_a_connector_file_and_a_sample() -> None:
    mappings = {p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith(".connector.yaml")}
    assert len(CONNECTORS) >= 3
    read = {ConnectorConfig.load(c).mapping for c in CONNECTORS}
    assert read == mappings
    for connector_file in CONNECTORS:
        source = ConnectorConfig.load(connector_file).source
        assert isinstance(source, FileSourceConfig) and source.path.exists(), connector_file


@pytest.mark.parametrize("connector_file", CONNECTORS, ids=lambda path: path.name)
def test_every_record_of_an_example_s_sample_is_accepted(connector_file: Path) -> None:
    found = previews(connector_file)
    assert len(found) >= 3
    problems = [
        (preview.position, p.field, p.message)
        for preview in found
        for p in preview.record_problems + [p for f in preview.fields for p in f.problems]
    ]
    assert problems == []


@pytest.mark.parametrize("connector_file", CONNECTORS, ids=lambda path: path.name)
def test_the_reference_shows_every_example(connector_file: Path) -> None:
    reference = (KIT / "MAPPING.md").read_text(encoding="utf-8")
    mapping = ConnectorConfig.load(connector_file).mapping
    assert mapping is not None
    assert f"examples/{mapping.name}" in reference
    assert f"examples/{connector_file.name}" in reference


def test_the_gbk_export_is_gb18030_bytes_with_characters_beyond_gb2312() -> None:
    raw = (EXAMPLES / "gbk-licence.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gb18030")
    assert "龘犇" in text
    with pytest.raises(UnicodeEncodeError):
        "龘".encode("gb2312")
    connector_file = EXAMPLES / "gbk-licence.connector.yaml"
    assert column(connector_file, "holder_name")[1] == "杭州龘犇美容美发店（个体）"
    assert column(connector_file, "valid_to") == [date(2028, 3, 4), None, None]  # 长期, empty


def test_two_date_formats_side_by_side_in_one_column_read_as_the_same_day() -> None:
    connector_file = EXAMPLES / "mixed-dates-penalty.connector.yaml"
    sample = (EXAMPLES / "mixed-dates-penalty.csv").read_text(encoding="utf-8")
    assert ",2024年3月5日," in sample and ",2024/3/5," in sample
    assert column(connector_file, "decided_on") == [
        date(2024, 3, 5),
        date(2024, 3, 5),
        date(2024, 12, 30),
    ]
    assert column(connector_file, "publicity_until") == [date(2024, 6, 5), date(2024, 6, 5), None]


def test_amounts_with_thousands_separators_read_as_exact_decimals() -> None:
    connector_file = EXAMPLES / "thousands-penalty.connector.yaml"
    assert column(connector_file, "fine_amount") == [
        Decimal("1250.5"),
        Decimal("8.5"),
        Decimal("12000"),
    ]
    assert column(connector_file, "confiscated_amount") == [Decimal("3000"), None, None]
