"""The ``xietong`` command line.

    xietong stack up|down|status     the local stack (also make up / make down / make status)
    xietong topics apply|list        the platform's declared topics
    xietong schemas register|list    the Avro schemas, registered with BACKWARD compatibility
    xietong connect run|validate     department connectors and their mapping files
    xietong demo round-trip          an Avro record through the real registry and broker

Every command reads :class:`xietong.settings.Settings`; ``--help`` on any command
explains its options.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from xietong.settings import get_settings
from xietong.stack import LocalStack, StackError

app = typer.Typer(
    help="Xietong (协同): streaming data sharing between government departments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="Start, stop and inspect the local stack.", no_args_is_help=True)
topics_app = typer.Typer(
    help="The platform's topics, declared in xietong.topics.", no_args_is_help=True
)
demo_app = typer.Typer(help="Demonstrations on the running stack.", no_args_is_help=True)
schemas_app = typer.Typer(help="The Avro schemas in schemas/avro/.", no_args_is_help=True)
connect_app = typer.Typer(
    help="Department connectors: run them, check mappings.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(connect_app, name="connect")
app.add_typer(topics_app, name="topics")
app.add_typer(demo_app, name="demo")

console = Console()
errors = Console(stderr=True)


def fail(message: str) -> None:
    """Print one actionable line and exit non-zero."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


@stack_app.command("up")
def stack_up() -> None:
    """Start PostgreSQL, Kafka (KRaft) and the schema registry on loopback.

    Downloads the Kafka jars and the registry from Maven Central on the first run,
    formats storage once, waits until each service answers and writes the endpoints
    to .local/stack.env. Running it again is harmless.
    """
    try:
        LocalStack(get_settings()).up(report=lambda line: console.print(line, highlight=False))
    except StackError as error:
        fail(str(error))


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local services (data stays in .local/)."""
    try:
        LocalStack(get_settings()).down(report=lambda line: console.print(line, highlight=False))
    except StackError as error:
        fail(str(error))


@stack_app.command("status")
def stack_status(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No table; exit 0 only when all run.")
    ] = False,
) -> None:
    """Report each service: state, pid, endpoint, resident memory and log file."""
    stack = LocalStack(get_settings())
    statuses = stack.status()
    if not quiet:
        table = Table("service", "state", "pid", "endpoint", "memory", "log")
        for status in statuses:
            table.add_row(
                status.name,
                status.state,
                str(status.pid or ""),
                status.endpoint,
                f"{status.rss_mib:.0f} MiB" if status.rss_mib else "",
                str(status.log or ""),
            )
        console.print(table)
    if any(status.state not in ("running", "external") for status in statuses):
        raise typer.Exit(3)


@topics_app.command("apply")
def topics_apply() -> None:
    """Create the declared topics that are missing and correct configuration drift.

    Never deletes a topic or changes a partition count; a partition mismatch is
    reported as a conflict and the command exits 2.
    """
    from xietong.kafka import clients
    from xietong.topics import Change, apply_service_acls, apply_topics

    settings = get_settings()
    secured = settings.kafka_security_protocol.startswith("SASL")
    try:
        admin = clients("admin").admin()
        changes = apply_topics(admin, settings)
        acls = apply_service_acls(admin) if secured else None
    except Exception as error:
        fail(f"applying topics on {settings.kafka_bootstrap_servers} failed: {error}")
    table = Table("topic", "change", "detail")
    for change in changes:
        table.add_row(change.topic, change.change.value, change.detail)
    console.print(table)
    if acls is not None:
        console.print(
            f"service ACLs: {len(acls.created)} created, {len(acls.deleted)} removed",
            highlight=False,
        )
    if any(change.change is Change.CONFLICT for change in changes):
        raise typer.Exit(2)


@topics_app.command("list")
def topics_list() -> None:
    """Show the declared topics: key, partitions, cleanup policy and retention."""
    from xietong.topics import FOREVER, TOPICS

    settings = get_settings()
    table = Table("topic", "key", "partitions", "cleanup", "retention", "description")
    for spec in TOPICS:
        retention = (
            "forever" if spec.retention_ms == FOREVER else f"{spec.retention_ms // 86_400_000} d"
        )
        table.add_row(
            spec.name,
            spec.key.value,
            str(spec.partition_count(settings)),
            "compact" if spec.compacted else "delete",
            retention,
            spec.description,
        )
    console.print(table)


@demo_app.command("round-trip")
def demo_round_trip() -> None:
    """Send one Avro record through the schema registry and Kafka, read it back, store it."""
    from xietong.demo import round_trip
    from xietong.kafka import clients

    try:
        result = round_trip(clients("connectors"))
    except Exception as error:
        fail(f"round trip failed: {error}")
    console.print(
        f"registered schema id {result.schema_id}; produced {result.wire_bytes} bytes to"
        f" platform.heartbeats[{result.partition}]@{result.offset}; decoded: {result.decoded};"
        f" stored as stack_round_trip.id={result.database_row_id}"
        f" ({result.elapsed_ms:.0f} ms)",
        highlight=False,
    )


@schemas_app.command("register")
def schemas_register() -> None:
    """Register every schema under <topic>-value with BACKWARD compatibility.

    Safe to repeat; an incompatible change is refused by the registry and reported.
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from schemas import register_all
    from xietong.kafka import clients

    try:
        ids = register_all(clients("admin").schema_registry())
    except SchemaRegistryError as error:
        fail(f"the schema registry refused a schema: {error.error_message}")
    table = Table("subject", "schema id")
    for subject, schema_id in ids.items():
        table.add_row(subject, str(schema_id))
    console.print(table)


@schemas_app.command("list")
def schemas_list() -> None:
    """Show each record type, its topic, subject and schema file."""
    from schemas import ALL_RECORD_TYPES

    table = Table("record type", "名称", "topic", "subject", "file")
    for record in ALL_RECORD_TYPES:
        table.add_row(
            record.name,
            record.label,
            record.topic.name,
            record.subject,
            f"schemas/avro/{record.schema_file}.avsc",
        )
    console.print(table)


@connect_app.command("run")
def connect_run(
    config_file: Annotated[Path, typer.Argument(help="Connector configuration (YAML).")],
    follow: Annotated[
        bool, typer.Option(help="Keep polling for new records instead of stopping when caught up.")
    ] = False,
    progress: Annotated[
        bool | None, typer.Option(help="Show a progress bar (default: when on a terminal).")
    ] = None,
) -> None:
    """Run a connector: read its source from the committed offset, publish, commit.

    Prints a JSON report at the end: read, published, dead_lettered by reason, and
    whether the counts reconcile (read = published + dead_lettered).
    """
    from prometheus_client import start_http_server
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from connectors.config import ConnectorConfig, HttpIngestConfig
    from connectors.runner import run_connector
    from xietong.kafka import clients

    try:
        config = ConnectorConfig.load(config_file)
    except ValueError as error:
        fail(str(error))
    if config.metrics_port:
        start_http_server(config.metrics_port, addr="127.0.0.1")
    if isinstance(config.source, HttpIngestConfig):
        from connectors.http_ingest import serve

        try:
            serve(config, clients("connectors"))
        except ValueError as error:
            fail(f"connector {config.name}: {error}")
        return

    show = errors.is_terminal if progress is None else progress
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "records",
        TimeRemainingColumn(),
        console=errors,
        disable=not show,
    )
    total = _record_estimate(config)
    task = bar.add_task(config.name, total=total)

    def stop_gracefully(connector: object) -> None:
        signal.signal(signal.SIGTERM, lambda *_: connector.stop())  # type: ignore[attr-defined]
        signal.signal(signal.SIGINT, lambda *_: connector.stop())  # type: ignore[attr-defined]

    try:
        with bar:
            report = run_connector(
                config,
                clients("connectors"),
                once=not follow,
                on_batch=lambda report, records: bar.update(task, advance=records),
                connector_hook=stop_gracefully,
            )
    except Exception as error:
        fail(f"connector {config.name}: {error}")
    console.print_json(json.dumps(report.as_dict(), ensure_ascii=False))
    if not report.reconciles:
        fail(f"connector {config.name}: counts do not reconcile")


def _record_estimate(config: object) -> int | None:
    """A rough record count for the progress bar: lines of a text export."""
    from connectors.config import ConnectorConfig, FileSourceConfig

    assert isinstance(config, ConnectorConfig)
    source = config.source
    if isinstance(source, FileSourceConfig) and source.path.suffix.lower() in (".csv", ".jsonl"):
        with source.path.open("rb") as handle:
            return max(
                0, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1
            )
    return None


@connect_app.command("validate")
def connect_validate(
    config_file: Annotated[
        Path, typer.Argument(help="Connector configuration, or a mapping file.")
    ],
    sample: Annotated[Path, typer.Argument(help="A sample export (CSV, JSON Lines, xlsx).")],
    limit: Annotated[int, typer.Option(help="Records shown field by field.")] = 3,
    encoding: Annotated[
        str | None,
        typer.Option(help="The sample's encoding (default: the connector's, else UTF-8)."),
    ] = None,
) -> None:
    """Show how a department's sample maps onto canonical fields, field by field.

    Every record of the sample is checked; the first LIMIT are shown in full, and a
    summary counts accepted records and problems by code. Nothing is published.
    """
    from collections import Counter

    from connectors.config import ConnectorConfig, FileSourceConfig
    from connectors.mapping import DepartmentMapping, MappingError
    from connectors.runner import preview_mapping

    delimiter = ","
    try:
        text = config_file.read_text(encoding="utf-8")
        if "record_type:" in text and "source:" not in text:
            mapping = DepartmentMapping.load(config_file)
        else:
            config = ConnectorConfig.load(config_file)
            if config.mapping is None:
                fail(f"{config_file} has no mapping: to validate against")
            mapping = DepartmentMapping.load(config.mapping)  # type: ignore[arg-type]
            if isinstance(config.source, FileSourceConfig):
                encoding = encoding or config.source.encoding
                delimiter = config.source.delimiter
    except (ValueError, MappingError, OSError) as error:
        fail(str(error))

    accepted = 0
    total = 0
    codes: Counter[str] = Counter()
    for preview in preview_mapping(
        mapping, sample, encoding=encoding or "utf-8", delimiter=delimiter
    ):
        total += 1
        accepted += preview.accepted
        for problem in preview.record_problems + [p for f in preview.fields for p in f.problems]:
            codes[problem.code] += 1
        if total <= limit:
            verdict = "[green]accepted[/]" if preview.accepted else "[red]rejected[/]"
            table = Table(
                "field",
                "column",
                "read",
                "canonical",
                "problem",
                title=f"{preview.position}: {verdict}",
            )
            for field in preview.fields:
                table.add_row(
                    field.field,
                    field.column,
                    str(field.raw),
                    str(field.value),
                    "; ".join(p.message for p in field.problems),
                )
            for problem in preview.record_problems:
                table.add_row(problem.field or "(record)", "", "", "", problem.message)
            console.print(table)
    console.print(
        f"{total} records: {accepted} accepted, {total - accepted} would be dead-lettered",
        highlight=False,
    )
    for code, count in codes.most_common():
        console.print(f"  {code}: {count}", highlight=False)


samples_app = typer.Typer(help="Sample data of the sample province.", no_args_is_help=True)
app.add_typer(samples_app, name="samples")


@samples_app.command("generate")
def samples_generate(
    out: Annotated[Path, typer.Option(help="Directory for the exports and manifest.json.")] = Path(
        ".local/samples/exports"
    ),
    records: Annotated[int, typer.Option(help="Records in all, across departments.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Same seed, same records.")] = 2026,
    bad_share: Annotated[float, typer.Option(help="Share of deliberately bad records.")] = 0.05,
) -> None:
    """Write the sample departments' exports (CSV GB18030/UTF-8, JSON Lines, xlsx).

    Each export matches a department mapping in connectors/departments/; manifest.json
    says per file how many records are good and which dead-letter reasons the bad ones
    must produce.
    """
    from connectors.samples import generate_exports

    manifest = generate_exports(out, records, seed, bad_share)
    table = Table("file", "connector", "record type", "format", "records", "bad")
    for export in manifest.files:
        table.add_row(
            export.file,
            export.connector,
            export.record_type,
            f"{export.format} {export.encoding}",
            str(export.records),
            str(export.records - export.good),
        )
    console.print(table)
    console.print(f"manifest: {out / 'manifest.json'}", highlight=False)


@demo_app.command("feed")
def demo_feed(
    out: Annotated[Path, typer.Option(help="Where the sample exports are (or go).")] = Path(
        ".local/samples/exports"
    ),
    records: Annotated[int, typer.Option(help="Records to generate if there are none.")] = 10_000,
) -> None:
    """Run every sample department connector over the sample exports, and report.

    Generates the exports first if the directory has none. Offsets are kept, so a
    second feed of the same exports publishes nothing twice.
    """
    from collections import Counter

    from xietong.demo import feed_samples
    from xietong.kafka import clients

    table = Table("connector", "record type", "read", "published", "dead-lettered", "reconciles")
    results = feed_samples(clients("connectors"), out, records)
    reasons: Counter[str] = Counter()
    for result in results:
        report = result.report
        reasons.update(report.reasons)
        table.add_row(
            result.export.connector,
            result.export.record_type,
            str(report.read),
            str(report.published),
            str(report.dead_lettered),
            "yes" if report.reconciles else "[red]NO[/]",
        )
    console.print(table)
    if reasons:
        console.print(
            "dead-letter reasons: " + ", ".join(f"{c} {n}" for c, n in reasons.most_common()),
            highlight=False,
        )
    if not all(result.report.reconciles for result in results):
        fail("a connector's counts do not reconcile")


if __name__ == "__main__":
    app()
