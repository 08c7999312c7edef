"""``make fuzz``: a large seeded fuzz run against the local stack, its table printed and
written as JSON.

    python -m tests.fuzz --records 100000 --seed 12 --out .local/fuzz

The records are shared out over the formats (HTTP, whose requests are the slowest, gets a
smaller share); the stack must be up (``make up``). Exits 1 when a count that must be zero
is not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from registry.audit import Actor
from registry.db import engine, migrate, session_factory, transaction
from registry.service import load_catalog
from schemas import register_all
from tests.fuzz.generator import Format, mutations_for
from tests.fuzz.harness import FuzzResult, FuzzRun, Services, result_json, run_formats
from xietong.kafka import KafkaClients
from xietong.settings import Settings, get_settings
from xietong.topics import apply_service_acls, apply_topics

#: Each format's share of the records.
SHARES = {
    Format.CSV_UTF8: 0.18,
    Format.CSV_GB18030: 0.18,
    Format.JSONL: 0.18,
    Format.XLSX: 0.16,
    Format.SQL: 0.18,
    Format.HTTP: 0.12,
}


def shared_out(records: int) -> dict[Format, int]:
    counts = {fmt: int(records * share) for fmt, share in SHARES.items()}
    counts[Format.CSV_UTF8] += records - sum(counts.values())
    return counts


@contextmanager
def registry_database(settings: Settings) -> Iterator[str]:
    """A throwaway registry database with the sample province's catalog."""
    name = f"registry_fuzz_{uuid.uuid4().hex[:12]}"
    server = sa.make_url(settings.database_url)
    maintenance = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with maintenance.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        with transaction(session_factory(url)) as session:
            load_catalog(session, Actor.system("fuzz-setup"))
        yield url
    finally:
        engine(url).dispose()
        with maintenance.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maintenance.dispose()


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path(".local/fuzz"))
    parser.add_argument(
        "--isolate",
        type=int,
        metavar="N",
        help="instead: N records of each format for each category alone (finds what fails)",
    )
    args = parser.parse_args(argv)

    settings = get_settings()
    kafka = KafkaClients(settings)
    admin = kafka.admin()
    apply_topics(admin, settings)
    apply_service_acls(admin)
    register_all(kafka.schema_registry())
    run = FuzzRun(args.seed, shared_out(args.records))
    with registry_database(settings) as url, tempfile.TemporaryDirectory() as workdir:
        services = Services(
            kafka, KafkaClients(settings, "connectors"), settings, url, Path(workdir)
        )
        if args.isolate:
            result = FuzzResult(args.seed)
            for fmt in Format:
                for mutation in mutations_for(fmt):
                    alone = FuzzRun(args.seed, {fmt: args.isolate}, frozenset({mutation.category}))
                    run_formats(alone, services, result)
        else:
            result = run_formats(run, services, progress=say)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"isolated-{args.isolate}" if args.isolate else str(args.records)
    path = args.out / f"fuzz-{args.seed}-{name}.json"
    path.write_text(result_json(result) + "\n", encoding="utf-8")
    print(result.markdown())
    print(f"written to {path}")
    failures = result.failures()
    for (format_name, category), counts in sorted(failures.items()):
        print(f"FAIL {format_name} {category}: {counts}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
