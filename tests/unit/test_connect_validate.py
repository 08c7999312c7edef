"""`xietong connect validate`: a department's sample, mapped field by field, nothing published."""

from __future__ import annotations

import random
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from app.samples import DEPARTMENTS_DIR, SampleGenerator, write_export


def test_validate_shows_each_field_and_counts_what_would_be_dead_lettered(tmp_path: Path) -> None:
    generator = SampleGenerator(None, seed=random.Random(4).randrange(1 << 20), bad_share=0.2)
    records = generator.generate(400).exports["hz-amr-registration"][:60]
    export = generator.exports["hz-amr-registration"]
    sample = tmp_path / "sample.csv"
    write_export(sample, export, records)
    bad = sum(1 for record in records if not record.good)

    result = CliRunner().invoke(
        app,
        [
            "connect",
            "validate",
            str(DEPARTMENTS_DIR / "hz-amr-registration.connector.yaml"),
            str(sample),
            "--limit",
            "2",
        ],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert "统一社会信用代码" in result.output  # the department's column, shown per field
    assert "uscc" in result.output and "business_scope_items" in result.output
    assert (
        f"{len(records)} records: {len(records) - bad} accepted, {bad} would be dead-lettered"
        in result.output
    )
