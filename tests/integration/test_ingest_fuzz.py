"""No bad record stops a department's feed, and none is lost (issue 12): the fuzz suite.

A seeded run of a few thousand records across every format the connectors read (CSV in
UTF-8 and GB18030, JSON Lines, Excel, a SQL table, HTTP ingest batches), each mutated
record followed by a valid one, goes through the real connectors to the real broker
(:mod:`tests.fuzz`). For every format and category of mutation: every record is published,
dead-lettered or (a broken HTTP body) refused — exactly what it must be, once; every dead
letter names the record's position and a field or a record-level reason code; no run
crashes, no answer is 5xx; the valid record after each mutated one is published.

A hypothesis-driven test puts arbitrary values (any text, surrogates and NUL included,
huge integers, NaN, lists, objects) into arbitrary columns of valid records and asserts
the same, without judging which of the values are valid.

``make fuzz`` runs the same at 100,000 records (``tests/fuzz/__main__.py``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import register_all
from tests.fuzz.generator import (
    CSV_FORMATS,
    EXPORT_OF,
    SPREADING,
    VALID,
    Format,
    FuzzRecord,
    Outcome,
    exports,
    generate,
    mutations_for,
    neighbours,
)
from tests.fuzz.harness import FuzzResult, FuzzRun, Services, run_formats, run_records
from xietong.kafka import KafkaClients
from xietong.settings import Settings

SEED = int(os.environ.get("FUZZ_SEED", "20261207"))
RECORDS_PER_FORMAT = 500


@pytest.fixture(scope="module")
def services(
    kafka: KafkaClients,
    connectors_kafka: KafkaClients,
    stack_settings: Settings,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Services:
    register_all(kafka.schema_registry())
    workdir = tmp_path_factory.mktemp("fuzz")
    return Services(kafka, connectors_kafka, stack_settings, registry_url, workdir)


@pytest.fixture(scope="module")
def seeded_run(services: Services) -> FuzzResult:
    result = run_formats(FuzzRun(SEED, dict.fromkeys(Format, RECORDS_PER_FORMAT)), services)
    print(result.markdown())
    return result


def _cases() -> list[Any]:
    cases = []
    for fmt in Format:
        mutated = [m.category for m in mutations_for(fmt)]
        spread = [neighbours(category) for category in mutated if category in SPREADING]
        for category in [VALID, *mutated, *spread]:
            cases.append(pytest.param(fmt, category, id=f"{fmt}:{category}"))
    return cases


def _examples(result: FuzzResult, fmt: Format, category: str) -> list[Any]:
    return [
        e
        for e in result.failures_seen
        if e.get("format") == fmt.value and e.get("category") == category
    ][:5]


@pytest.mark.parametrize(("fmt", "category"), _cases())
def test_every_record_of_a_category_becomes_what_it_must_and_is_named(
    seeded_run: FuzzResult, fmt: Format, category: str
) -> None:
    counts = seeded_run.counts.get((fmt.value, category))
    assert counts and counts["in"], f"the run made no {category} record in {fmt}"
    assert counts["in"] == counts["published"] + counts["dead_lettered"] + counts["refused"], (
        counts,
        _examples(seeded_run, fmt, category),
    )
    failed = seeded_run.failures().get((fmt.value, category))
    crashes = [c for c in seeded_run.crashes if c["format"] == fmt.value]
    assert failed is None, (failed, _examples(seeded_run, fmt, category), crashes[:2])


@pytest.mark.parametrize("fmt", list(Format), ids=str)
def test_a_run_writes_nothing_that_is_not_one_of_its_records(
    seeded_run: FuzzResult, fmt: Format
) -> None:
    stray = seeded_run.counts.get((fmt.value, "(unmatched)"), {}).get("stray", 0)
    assert stray == 0, [e for e in seeded_run.failures_seen if "stray" in e and e["format"] == fmt]


# -- hypothesis: any value, any column ----------------------------------------------------------

JSON_VALUES = st.one_of(
    st.text(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
#: What a CSV cell can hold: text, with no surrogate (it has no bytes in either encoding).
CSV_VALUES = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"])),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers().map(str),
)
HYPOTHESIS_FORMATS = [Format.JSONL, Format.CSV_UTF8, Format.CSV_GB18030, Format.HTTP]
RECORDS_PER_EXAMPLE = 12


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fmt=st.sampled_from(HYPOTHESIS_FORMATS), data=st.data())
def test_any_value_in_any_column_is_published_or_dead_lettered_and_the_next_record_published(
    services: Services, fmt: Format, data: st.DataObject
) -> None:
    columns = list(exports()[EXPORT_OF[fmt]].columns)
    values = CSV_VALUES if fmt in CSV_FORMATS else JSON_VALUES
    records = generate(fmt, RECORDS_PER_EXAMPLE, SEED, mutated_share=0.0)
    # every other record gets a value: each changed one is followed by a valid one
    for record in records[:-1:2]:
        if data.draw(st.booleans(), label=f"change record {record.index}"):
            _change(record, data.draw(st.sampled_from(columns)), data.draw(values))
    result = FuzzResult(SEED)

    run_records(fmt, records, services, result)

    assert result.failures() == {}, (result.failures(), result.failures_seen[:5], result.crashes)


def _change(record: FuzzRecord, column: str, value: Any) -> None:
    record.row[column] = value
    record.category, record.expected = f"hypothesis:{column}", Outcome.ANY
    record.mutated = True
