"""Sample department exports (app/samples.py), as a specification.

The generated exports must read like the departments' own: every good record maps through
the shipped mapping files with no problem and gives back exactly the canonical fields it
was generated from; every bad record is dead-lettered with exactly the reason codes its
defect calls for.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.samples import (
    DEPARTMENTS_DIR,
    EXPECTED_REASONS,
    Defect,
    DepartmentExport,
    ExportManifest,
    SampleGenerator,
    SampleRecord,
    SampleSet,
    generate_exports,
    load_exports,
)
from connectors.file_source import FileSource
from connectors.records import SourceRecord
from connectors.validation import validate
from registry.seed import load_sample_province
from xietong.uscc import is_valid_uscc
from xietong.versions import DIGEST, RecordVersion, is_later

TODAY = date(2026, 11, 1)
EXPORTS = load_exports()
PROVINCE = load_sample_province()

WRITTEN_SEED, WRITTEN_RECORDS, WRITTEN_BAD_SHARE = 11, 6000, 0.1


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return SampleGenerator(seed=7, bad_share=0.08, today=TODAY).generate(12_000)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportManifest, SampleSet]:
    """Exports written to disk, and the same records generated again from the same seed."""
    out_dir = tmp_path_factory.mktemp("exports")
    manifest = generate_exports(
        out_dir, WRITTEN_RECORDS, WRITTEN_SEED, WRITTEN_BAD_SHARE, today=TODAY
    )
    again = SampleGenerator(seed=WRITTEN_SEED, bad_share=WRITTEN_BAD_SHARE, today=TODAY).generate(
        WRITTEN_RECORDS
    )
    return out_dir, manifest, again


def read_back(export: DepartmentExport, path: Path) -> list[SourceRecord]:
    source = FileSource(path, export.file_format, encoding=export.encoding)
    return [record for record in source.read(None) if record is not None]


def outcome(export: DepartmentExport, read: SourceRecord) -> tuple[Any, set[str]]:
    """The mapped record (None if unreadable) and the codes of every problem found."""
    if read.fields is None:
        assert read.read_problem is not None
        return None, {read.read_problem.code}
    mapped = export.mapping.map(read.fields)
    problems = mapped.problems + validate(export.record_type, mapped.fields)
    return mapped, {problem.code for problem in problems}


def good(records: list[SampleRecord]) -> list[SampleRecord]:
    return [record for record in records if record.good]


# -- the shipped exports ------------------------------------------------------------------


def test_every_shipped_export_pairs_a_connector_file_with_a_mapping_of_a_sample_department() -> (
    None
):
    assert set(EXPORTS) == {
        "hz-amr-registration",
        "nb-amr-registration",
        "hz-health-licence",
        "zj-drc-licence",
        "zj-amr-penalty",
        "zj-drc-penalty",
        "zj-drc-credit-list",
    }
    for name, export in EXPORTS.items():
        department = PROVINCE.department_by_uscc(export.mapping.department.uscc)
        assert name.startswith(department.code + "-"), name
        assert department.name == export.mapping.department.name, name
        assert (DEPARTMENTS_DIR / f"{name}.yaml").exists()
        assert export.file_name == f"{name}.{export.file_format.value}"


def test_the_exports_come_in_the_formats_departments_send() -> None:
    formats = {name: (e.file_format.value, e.encoding) for name, e in EXPORTS.items()}
    assert formats["hz-amr-registration"] == ("csv", "gb18030")
    assert formats["nb-amr-registration"] == ("csv", "utf-8-sig")
    assert formats["hz-health-licence"][0] == "jsonl"
    assert formats["zj-amr-penalty"][0] == "xlsx"
    assert formats["zj-drc-credit-list"] == ("csv", "utf-8")


def test_every_shipped_mapping_has_a_version_column_that_orders_the_rows_it_writes(
    sample: SampleSet,
) -> None:
    """A correction orders by the source's own version (xietong/versions.py): every export
    names its version column, and the versions it writes sort as the rows were written."""
    for name, export in EXPORTS.items():
        column = export.mapping.spec.record_version
        assert column, f"{name} declares no record_version column"
        rows = [record for record in good(sample.records) if record.export == name]
        versions = [version_of_row(export, record) for record in rows]
        assert versions, name
        for earlier, later in itertools.pairwise(versions):
            assert is_later(later, earlier), (name, earlier, later)


def version_of_row(export: DepartmentExport, record: SampleRecord) -> RecordVersion:
    mapped = export.mapping.map(record.row)
    assert DIGEST.fullmatch(mapped.record_version) is None, "a digest orders nothing"
    return {
        "record_version": mapped.record_version,
        "source_partition": "",
        "source_offset": "",
        "content": mapped.record_version,
    }


# -- determinism and the share of bad records ---------------------------------------------


def test_the_same_seed_gives_the_same_records_and_another_seed_others() -> None:
    def snapshot(seed: int) -> list[tuple[Any, ...]]:
        generated = SampleGenerator(seed=seed, bad_share=0.1, today=TODAY).generate(1500)
        return [(r.export, r.canonical, r.row, r.defect) for r in generated.records]

    assert snapshot(3) == snapshot(3)
    assert snapshot(3) != snapshot(4)


@pytest.mark.parametrize(("records", "bad_share"), [(10_000, 0.05), (3_000, 0.2), (2_000, 0.0)])
def test_exactly_the_requested_share_of_records_is_bad(records: int, bad_share: float) -> None:
    generated = SampleGenerator(seed=5, bad_share=bad_share, today=TODAY).generate(records)
    assert len(generated.records) == records
    bad = [record for record in generated.records if not record.good]
    assert len(bad) == round(records * bad_share)


def test_every_kind_of_defect_occurs_with_its_reason_codes(sample: SampleSet) -> None:
    defects = Counter(record.defect for record in sample.records if record.defect)
    assert set(defects) == set(Defect)
    for record in sample.records:
        if record.defect:
            assert record.expected_reasons == EXPECTED_REASONS[record.defect]
    encodings = {r.export for r in sample.records if r.defect is Defect.WRONG_ENCODING}
    assert encodings <= {name for name, e in EXPORTS.items() if e.file_format.value == "csv"}


# -- the round trip through the files and the mappings --------------------------------------


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_good_records_map_back_to_their_fields_and_bad_ones_fail_for_their_reasons(
    name: str, written: tuple[Path, ExportManifest, SampleSet]
) -> None:
    out_dir, _, again = written
    export = EXPORTS[name]
    expected = again.exports[name]
    read = read_back(export, out_dir / export.file_name)
    assert len(read) == len(expected) > 0
    for record, meant in zip(read, expected, strict=True):
        mapped, codes = outcome(export, record)
        if meant.good:
            assert codes == set(), (record.position, meant.row)
            assert mapped.source_record_id == meant.source_record_id
            for field_name, value in mapped.fields.items():
                assert value == meant.canonical[field_name], (record.position, field_name)
        else:
            assert codes == set(meant.expected_reasons), (record.position, meant.defect)


def test_the_manifest_counts_what_each_file_holds(
    written: tuple[Path, ExportManifest, SampleSet],
) -> None:
    out_dir, manifest, again = written
    on_disk = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest.as_dict()))
    assert on_disk["records"] == WRITTEN_RECORDS
    assert on_disk["bad"] == round(WRITTEN_RECORDS * WRITTEN_BAD_SHARE)
    for entry in manifest.files:
        records = again.exports[entry.connector]
        bad = [record for record in records if not record.good]
        assert (
            entry.records
            == len(records)
            == len(read_back(EXPORTS[entry.connector], out_dir / entry.file))
        )
        assert entry.good == len(records) - len(bad)
        assert entry.bad == dict(Counter(c for r in bad for c in r.expected_reasons))
        assert (
            entry.department
            == PROVINCE.department_by_uscc(EXPORTS[entry.connector].mapping.department.uscc).code
        )


# -- what the records say -------------------------------------------------------------------


def test_about_30_percent_of_registrations_need_a_permit_of_the_catalog(sample: SampleSet) -> None:
    registrations = good(sample.of_type("registration"))
    needing = 0
    for record in registrations:
        permit = [
            i["text"] for i in record.canonical["business_scope_items"] if i["kind"] == "PERMIT"
        ]
        if permit:
            needing += 1
            assert PROVINCE.items_for_scope(permit), permit
            assert all(PROVINCE.items_for_scope([text]) for text in permit), permit
    assert 0.25 <= needing / len(registrations) <= 0.35


def test_registrations_carry_valid_usccs_of_their_kind_and_registrar(sample: SampleSet) -> None:
    prefixes = {"INDIVIDUAL_BUSINESS": "92", "FARMERS_COOPERATIVE": "93"}
    for record in good(sample.of_type("registration")):
        fields = record.canonical
        assert is_valid_uscc(fields["uscc"])
        assert fields["uscc"][:2] == prefixes.get(fields["entity_type"], "91")
        registrar = PROVINCE.department_by_uscc(fields["registering_authority_uscc"])
        assert registrar.sector == "market_regulation"
        assert fields["uscc"][2:8] == registrar.division
        assert fields["address"].startswith("浙江省")
        assert PROVINCE.division(fields["division_code"]).level.value == "county"


def test_licences_penalties_and_listings_concern_registered_entities(sample: SampleSet) -> None:
    registered = {
        r.canonical["uscc"]
        for r in good(sample.of_type("registration"))
        if r.canonical["event_kind"] == "ESTABLISH"
    }
    for record_type in ("licence", "penalty", "credit_list_entry"):
        records = good(sample.of_type(record_type))
        assert records, record_type
        assert {r.canonical["uscc"] for r in records} <= registered, record_type


def test_licences_mostly_come_from_the_department_the_catalog_routes_to(
    sample: SampleSet,
) -> None:
    division_of = {
        r.canonical["uscc"]: r.canonical["division_code"] for r in sample.of_type("registration")
    }
    licences = good(sample.of_type("licence"))
    routed = 0
    for record in licences:
        fields = record.canonical
        division = division_of[fields["uscc"]]
        department = PROVINCE.route(fields["approval_item_code"], division)
        assert department is not None, "nothing is issued where routing fails"
        routed += fields["authority_uscc"] == department.uscc
        authority = PROVINCE.department_by_uscc(fields["authority_uscc"])
        assert authority.sector == PROVINCE.approval_item(fields["approval_item_code"]).sector
    assert routed / len(licences) >= 0.85


def test_some_penalties_revoke_a_licence_the_entity_holds_from_its_issuer(
    sample: SampleSet,
) -> None:
    licences = {
        (r.canonical["uscc"], r.canonical["licence_number"]): r.canonical
        for r in sample.of_type("licence")
    }
    revoking = [r for r in good(sample.of_type("penalty")) if r.canonical["affected_licence"]]
    assert revoking
    for record in revoking:
        fields = record.canonical
        assert "LICENCE_SUSPENSION_OR_REVOCATION" in fields["categories"]
        number = fields["affected_licence"].split()[-1]
        licence = licences[(fields["uscc"], number)]
        assert fields["authority_uscc"] == licence["authority_uscc"]
        assert fields["decided_on"] > licence["decided_on"]


def test_penalty_amounts_are_decimal_wan_yuan_with_decimals(sample: SampleSet) -> None:
    fines = [
        r.canonical["fine_amount"]
        for r in good(sample.of_type("penalty"))
        if r.canonical["fine_amount"] is not None
    ]
    assert fines and all(isinstance(fine, Decimal) and fine > 0 for fine in fines)
    assert any(fine != fine.to_integral_value() for fine in fines)
    for record in good(sample.of_type("penalty")):
        assert record.canonical["decided_on"] <= TODAY
        assert record.canonical["legal_basis"].startswith("《")


def test_removals_follow_a_listing_with_the_same_entry(sample: SampleSet) -> None:
    entries = sample.of_type("credit_list_entry")
    listed = {
        r.canonical["entry_id"]: r.canonical for r in entries if r.canonical["action"] == "LISTED"
    }
    removals = [r.canonical for r in good(entries) if r.canonical["action"] == "REMOVED"]
    assert removals
    for removal in removals:
        listing = listed[removal["entry_id"]]
        assert listing["uscc"] == removal["uscc"]
        assert listing["listed_on"] <= removal["removed_on"] <= TODAY
        assert removal["removal_reason"] in ("EXPIRY", "CREDIT_REPAIR", "CORRECTION")


def test_a_bad_registration_leaves_no_trace_of_its_entity(sample: SampleSet) -> None:
    unregistered = {
        r.canonical["uscc"]
        for r in sample.of_type("registration")
        if not r.good and r.canonical["event_kind"] == "ESTABLISH"
    }
    assert unregistered
    others = [r for r in sample.records if r.record_type != "registration"]
    assert not {r.canonical["uscc"] for r in others} & unregistered


def test_generating_100_000_records_gives_as_many() -> None:
    # how fast is a benchmark's question (make bench), never a test's
    generated = SampleGenerator(seed=1, bad_share=0.05, today=TODAY).generate(100_000)
    assert len(generated.records) == 100_000
