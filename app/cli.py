"""The ``xietong`` command line.

    xietong stack up|down|status     the local stack (also make up / make down / make status)
    xietong topics apply|list        the platform's declared topics
    xietong schemas register|list    the Avro schemas (BACKWARD_TRANSITIVE compatibility)
    xietong connect run|validate     department connectors and their mapping files
    xietong demo round-trip          an Avro record through the real registry and broker

Every command reads :class:`xietong.settings.Settings`; ``--help`` on any command
explains its options.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from deploy.local.stack import LocalStack, StackError
from xietong.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from registry.audit import Actor
    from registry.contract import SubscriptionOut

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


def fail(message: str) -> NoReturn:
    """Print one actionable line and exit non-zero."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


@stack_app.command("up")
def stack_up(
    with_prometheus: Annotated[
        bool,
        typer.Option(
            help="Also start Prometheus (Debian's) on XIETONG_PROMETHEUS_PORT, scraping the"
            " platform's services and evaluating deploy/prometheus/rules."
        ),
    ] = False,
    brokers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            help="Kafka nodes (KRaft broker and controller each; default XIETONG_KAFKA_BROKERS"
            " or 1). With 3, topics get 3 replicas and min.insync.replicas 2: give the same"
            " XIETONG_KAFKA_BROKERS to every command that uses this stack (make … BROKERS=3).",
        ),
    ] = None,
) -> None:
    """Start PostgreSQL, Kafka (KRaft) and the schema registry on loopback.

    Downloads the Kafka jars and the registry from Maven Central on the first run,
    formats storage once, waits until each service answers and writes the endpoints
    to .local/stack.env. Running it again is harmless.
    """
    if brokers is not None:
        import os

        os.environ["XIETONG_KAFKA_BROKERS"] = str(brokers)
        get_settings.cache_clear()
    try:
        LocalStack(get_settings()).up(
            report=lambda line: console.print(line, highlight=False),
            optional=["prometheus"] if with_prometheus else [],
        )
    except StackError as error:
        fail(str(error))


@stack_app.command("down")
def stack_down() -> None:
    """Stop the platform's services that `xietong run` started, then the local services
    (data stays in .local/)."""
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
    """Report each service: state, pid, endpoint, resident memory and log file; then the
    platform's services while `xietong run` (make run) runs them. The exit status is the
    stack's."""
    stack = LocalStack(get_settings())
    statuses = stack.status()
    if not quiet:
        table = Table("service", "state", "pid", "endpoint", "memory", "log")
        for status in statuses + stack.platform.status():
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
    from app.demo import round_trip
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
    """Register every schema under <topic>-value with BACKWARD_TRANSITIVE compatibility.

    Safe to repeat; an incompatible change is refused by the registry and reported.
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from schemas import register_all
    from xietong.kafka import clients

    try:
        ids = register_all(clients("admin").schema_registry())
    except SchemaRegistryError as error:
        if error.http_status_code in (401, 403):
            fail(
                f"the schema registry refused this client ({error.http_status_code}"
                f" {error.error_message}): set XIETONG_SCHEMA_REGISTRY_USERNAME and"
                " XIETONG_SCHEMA_REGISTRY_PASSWORD (or …_PASSWORD_FILE) to a user with the"
                " sr-developer role, or XIETONG_SCHEMA_REGISTRY_AUTH=true for the local stack's"
            )
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
    whether the run reconciles: read = published + dead_lettered and, for a file, its
    bytes (bytes_*) are the header's, the published records', the dead letters' and the
    blank lines', with no gap or overlap between records. Exits 1 when it does not.
    """
    from prometheus_client import start_http_server
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from connectors.config import ConnectorConfig, HttpIngestConfig
    from connectors.runner import run_connector
    from xietong.kafka import clients
    from xietong.logs import configure
    from xietong.processes import on_stop_signal

    try:
        config = ConnectorConfig.load(config_file)
    except ValueError as error:
        fail(str(error))
    configure()
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
        on_stop_signal(connector.stop)  # type: ignore[attr-defined]

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
        fail(f"connector {config.name}: the run does not reconcile (see the report)")


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
    failures: Annotated[
        int,
        typer.Option(
            min=0,
            help="The first N problems listed one a line: where (line N), the field, its"
            " column, the reason code and what was expected. 0: counts only.",
        ),
    ] = 20,
    encoding: Annotated[
        str | None,
        typer.Option(help="The sample's encoding (default: the connector's, else UTF-8)."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON document on stdout: the counts, the problems by code and the"
            " first --failures problems (no tables).",
        ),
    ] = False,
) -> None:
    """Show how a department's sample maps onto canonical fields, field by field.

    Every record of the sample is checked; the first LIMIT are shown in full, then the
    first FAILURES problems one a line (``line 17  field decided_on (column 处罚决定日期)
    date.invalid: '2024-13-01' is not a date in any of the formats …``), and a summary
    counts accepted records and problems by code. Nothing is published.
    """
    import itertools
    from collections import Counter

    from connectors.config import ConnectorConfig, FileSourceConfig
    from connectors.mapping import DepartmentMapping, MappingError
    from connectors.runner import PreviewProblem, preview_mapping, preview_problems

    delimiter = ","
    try:
        text = config_file.read_text(encoding="utf-8")
        if "record_type:" in text and "source:" not in text:
            mapping = DepartmentMapping.load(config_file)
        else:
            config = ConnectorConfig.load(config_file)
            if config.mapping is None:
                fail(f"{config_file} has no mapping: to validate against")
            mapping = DepartmentMapping.load(config.mapping)
            if isinstance(config.source, FileSourceConfig):
                encoding = encoding or config.source.encoding
                delimiter = config.source.delimiter
    except (ValueError, MappingError, OSError) as error:
        fail(str(error))

    accepted = 0
    total = 0
    codes: Counter[str] = Counter()
    listed: list[PreviewProblem] = []
    previews = preview_mapping(mapping, sample, encoding=encoding or "utf-8", delimiter=delimiter)
    try:
        first = next(previews, None)
    except (OSError, ValueError) as error:  # no such export, a header it cannot decode
        fail(str(error))
    for preview in itertools.chain([first] if first else [], previews):
        total += 1
        accepted += preview.accepted
        for failure in preview_problems(preview):
            codes[failure.code] += 1
            if len(listed) < failures:
                listed.append(failure)
        if total <= limit and not as_json:
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
    problems = sum(codes.values())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "sample": str(sample),
                    "records": total,
                    "accepted": accepted,
                    "dead_lettered": total - accepted,
                    "problems": problems,
                    "by_code": dict(codes.most_common()),
                    "failures": [failure.as_dict() for failure in listed],
                    "failures_not_listed": problems - len(listed),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    if listed:
        console.print(
            f"{problems} problems"
            + (f", the first {len(listed)}:" if problems > len(listed) else ":"),
            highlight=False,
        )
        for failure in listed:
            console.print(f"  {failure.line()}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"{total} records: {accepted} accepted, {total - accepted} would be dead-lettered",
        highlight=False,
    )
    for code, count in codes.most_common():
        console.print(f"  {code}: {count}", highlight=False)


@connect_app.command("replay")
def connect_replay(
    config_file: Annotated[Path, typer.Argument(help="The connector's configuration file.")],
) -> None:
    """Send the connector's dead letters through its mapping again, once it is fixed.

    Reads the connector's dead letters from platform.dead-letter (after where its last
    replay stopped, and those it left refused) and publishes each record its mapping now
    accepts, under the event id a first-time success would have had; the credit
    database then shows it REPLAYED. A record refused for the same reasons as before
    writes nothing; one refused for other reasons gets a new dead letter. Commits where
    it stopped, so a second replay changes nothing. Prints a JSON report: dead_letters,
    replayed, still_refused, dead_lettered (with their reasons) and not_replayable (no
    fields kept: the source must send it again).
    """
    from confluent_kafka import KafkaException

    from connectors.base import DeliveryFailed
    from connectors.config import ConnectorConfig
    from connectors.mapping import MappingError
    from connectors.replay import DeadLetterReplay
    from xietong.kafka import clients
    from xietong.logs import configure

    try:
        config = ConnectorConfig.load(config_file)
        replay = DeadLetterReplay(config, clients("connectors"))
    except (ValueError, MappingError, OSError) as error:
        fail(str(error))
    configure()
    try:
        report = replay.run()
    except (KafkaException, DeliveryFailed, TimeoutError) as error:
        fail(f"connector {config.name}: the replay did not complete ({error}); run it again")
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))


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
    from app.samples import generate_exports

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


@demo_app.command("share")
def demo_share() -> None:
    """有条件共享's example: hz-xh-health subscribes to the credit list entries with the
    fields uscc, list_type and the division 330106, and zj-drc approves (nothing is done
    when it has an open subscription to them already). The sharing processor
    (xietong streams sharing) then writes its view, dept.hz-xh-health.shared.credit_list_entry."""
    from app.demo import example_sharing

    with _registry_transaction() as session:
        subscription, made = example_sharing(session)
        shown = (subscription.id, subscription.status.value, subscription.fields)
    what = "approved" if made else "already there"
    console.print(
        f"subscription {shown[0]} of hz-xh-health to credit_list_entry {what} ({shown[1]},"
        f" fields {', '.join(shown[2] or [])}, division 330106)",
        highlight=False,
    )


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

    from app.demo import feed_samples
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


# -- the registry: departments, resources, subscriptions (registry/) ----------------------------

registry_app = typer.Typer(
    help="The registry: departments, data resources, subscriptions, catalogs and audit.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (the API's bodies).")]
ByOption = Annotated[
    str, typer.Option("--by", help="Who decides: the owning department's code, or admin.")
]
SubscriptionIdArgument = Annotated[int, typer.Argument(help="The subscription's id.")]


@contextmanager
def _registry_transaction() -> Iterator[Session]:
    """One transaction on the registry database; a refusal, or a database that is not
    there, becomes one ``fail()`` line."""
    import sqlalchemy as sa

    from registry.db import session_factory, transaction
    from registry.errors import RegistryError

    url = get_settings().database_url
    try:
        with transaction(session_factory(url)) as session:
            yield session
    except RegistryError as error:
        fail(error.message)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as error:
        fail(
            f"registry database {url.rsplit('@', 1)[-1]}:"
            f" {str(error.orig).splitlines()[0]}; is the stack up"
            " (xietong stack up) and the database migrated (xietong registry migrate)?"
        )


def _actor(by: str) -> Actor:
    from registry.audit import Actor

    return Actor.admin("cli") if by == "admin" else Actor.department(by)


def _print_json(models: object) -> None:
    from pydantic import BaseModel

    def dump(model: object) -> object:
        return model.model_dump(mode="json") if isinstance(model, BaseModel) else model

    data = [dump(model) for model in models] if isinstance(models, list) else dump(models)
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _until(text: str | None) -> datetime | None:
    """``2027-12-31`` is the end of that day in the province's time zone; or a full ISO
    time (in the province's zone when it names none)."""
    from datetime import date, datetime, timedelta

    from xietong.clock import business_clock

    if text is None:
        return None
    clock = business_clock()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            fail(f"--until {text!r}: expected a date (2027-12-31) or an ISO time with offset")
        return moment if moment.tzinfo else moment.replace(tzinfo=clock.zone)
    return clock.midnight(day + timedelta(days=1))


def _print_rows(
    rows: Sequence[Any],
    as_json: bool,
    columns: Sequence[str],
    cells: Callable[[Any], Sequence[str]],
) -> None:
    """Rows as JSON, or as a table of ``columns`` with ``cells(row)`` on each line."""
    if as_json:
        _print_json(list(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)


SUBSCRIPTION_COLUMNS = (
    "id",
    "subscriber",
    "resource",
    "owner",
    "status",
    "valid until",
    "decided by",
)


def _subscription_cells(row: SubscriptionOut) -> Sequence[str]:
    until = row.valid_until.isoformat() if row.valid_until else ""
    return (
        str(row.id),
        row.subscriber,
        row.resource,
        row.owner,
        row.status.value,
        until,
        row.decided_by or "",
    )


def _print_subscriptions(rows: Sequence[SubscriptionOut], as_json: bool = False) -> None:
    _print_rows(rows, as_json, SUBSCRIPTION_COLUMNS, _subscription_cells)


def _decide(decision: Callable[..., Any], subscription_id: int, by: str, **options: Any) -> None:
    """An owner's decision on a subscription (approve, reject, revoke); its new state."""
    from registry.contract import SubscriptionOut

    with _registry_transaction() as session:
        row = decision(session, _actor(by), subscription_id, **options)
        _print_subscriptions([SubscriptionOut.of(row)])


@registry_app.command("migrate")
def registry_migrate() -> None:
    """Bring the registry database (DATABASE_URL) to the newest schema (alembic upgrade head)."""
    from registry.db import current_revision, migrate

    url = get_settings().database_url
    try:
        migrate(url)
        revision = current_revision(url)
    except Exception as error:
        fail(f"migrating the registry database failed: {error}")
    console.print(f"registry database at revision {revision}", highlight=False)


@registry_app.command("load-catalog")
def registry_load_catalog() -> None:
    """Load the sample province's catalog: departments, approval items with routes and
    rules, credit lists, matter types, measures and the canonical data resources.

    Safe to repeat: only what differs from the seed is changed (and audited).
    """
    from registry.audit import Actor
    from registry.service import load_catalog

    with _registry_transaction() as session:
        report = load_catalog(session, Actor.system("load-catalog"))
    table = Table("table", "created", "updated", "deleted", "unchanged")
    for name, counts in report.counts.items():
        table.add_row(
            name, *(str(counts[k]) for k in ("created", "updated", "deleted", "unchanged"))
        )
    console.print(table)


@registry_app.command("departments")
def registry_departments(as_json: JsonOption = False) -> None:
    """List the departments: code, name, sector, level, division and Kafka principal."""
    from registry.contract import DepartmentOut
    from registry.service import list_departments

    with _registry_transaction() as session:
        rows = [DepartmentOut.of(row) for row in list_departments(session)]
    _print_rows(
        rows,
        as_json,
        ("code", "name", "sector", "level", "division", "principal"),
        lambda row: (
            row.code,
            row.name,
            row.sector,
            row.level.value,
            row.division,
            row.kafka_principal,
        ),
    )


@registry_app.command("resources")
def registry_resources(as_json: JsonOption = False) -> None:
    """List the data resources: topic, owner and sharing class (共享类型)."""
    from registry.contract import ResourceOut
    from registry.service import list_resources

    with _registry_transaction() as session:
        rows = [ResourceOut.of(row) for row in list_resources(session)]
    _print_rows(
        rows,
        as_json,
        ("code", "name", "topic", "owner", "sharing class", "fields"),
        lambda row: (
            row.code,
            row.name,
            row.topic,
            row.owner,
            row.sharing_class.value,
            str(len(row.fields)),
        ),
    )


@registry_app.command("subscriptions")
def registry_subscriptions(
    department: Annotated[
        str | None, typer.Option(help="Only those this department requested or owns.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="REQUESTED, APPROVED, REJECTED, REVOKED or EXPIRED.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List subscriptions, newest first."""
    from registry.audit import Actor
    from registry.contract import SubscriptionOut
    from registry.models import SubscriptionStatus
    from registry.service import list_subscriptions

    try:
        wanted = None if status is None else SubscriptionStatus(status.upper())
    except ValueError:
        fail(f"--status {status!r}: expected one of {', '.join(SubscriptionStatus)}")
    with _registry_transaction() as session:
        rows = [
            SubscriptionOut.of(row)
            for row in list_subscriptions(
                session, Actor.admin("cli"), department=department, status=wanted
            )
        ]
    _print_subscriptions(rows, as_json)


@registry_app.command("request")
def registry_request(
    department: Annotated[str, typer.Option(help="The requesting department's code.")],
    resource: Annotated[str, typer.Option(help="The data resource's code.")],
    purpose: Annotated[str, typer.Option(help="用途: what the data is for.")],
    legal_basis: Annotated[str, typer.Option(help="依据: the law or document that allows it.")],
    fields: Annotated[
        str | None, typer.Option(help="Comma-separated fields (required if CONDITIONAL).")
    ] = None,
    divisions: Annotated[
        str | None, typer.Option(help="Comma-separated GB/T 2260 division codes to filter on.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Requested end: 2027-12-31 (end of day, +08:00).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Request a data resource for a department."""
    from registry.contract import SubscriptionOut
    from registry.service import request_subscription

    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    with _registry_transaction() as session:
        row = SubscriptionOut.of(
            request_subscription(
                session,
                _actor(department),
                department=department,
                resource=resource,
                purpose=purpose,
                legal_basis=legal_basis,
                fields=None if fields is None else split(fields),
                filters=None if divisions is None else {"divisions": split(divisions)},
                valid_until=_until(until),
            )
        )
    if as_json:
        _print_json(row)
        return
    _print_subscriptions([row])


@registry_app.command("approve")
def registry_approve(
    subscription_id: SubscriptionIdArgument,
    by: ByOption,
    until: Annotated[
        str | None, typer.Option(help="End of access (default: the requested end).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
) -> None:
    """Approve a requested subscription (the resource's owner, or admin)."""
    from registry.service import approve_subscription

    _decide(approve_subscription, subscription_id, by, valid_until=_until(until), reason=reason)


@registry_app.command("reject")
def registry_reject(
    subscription_id: SubscriptionIdArgument,
    by: ByOption,
    reason: Annotated[str, typer.Option(help="Why; shown to the requester.")],
) -> None:
    """Reject a requested subscription (the resource's owner, or admin)."""
    from registry.service import reject_subscription

    _decide(reject_subscription, subscription_id, by, reason=reason)


@registry_app.command("revoke")
def registry_revoke(
    subscription_id: SubscriptionIdArgument,
    by: ByOption,
    reason: Annotated[str, typer.Option(help="Why; shown to the subscriber.")],
) -> None:
    """Revoke an approved subscription (the resource's owner, or admin)."""
    from registry.service import revoke_subscription

    _decide(revoke_subscription, subscription_id, by, reason=reason)


@registry_app.command("history")
def registry_history(
    subscription_id: SubscriptionIdArgument,
    as_json: JsonOption = False,
) -> None:
    """Every transition of one subscription: from, to, who, when, why."""
    from registry.audit import Actor
    from registry.contract import SubscriptionEventOut
    from registry.service import subscription_history

    with _registry_transaction() as session:
        rows = [
            SubscriptionEventOut.of(event)
            for event in subscription_history(session, Actor.admin("cli"), subscription_id)
        ]
    _print_rows(
        rows,
        as_json,
        ("at", "from", "to", "actor", "reason"),
        lambda row: (
            row.at.isoformat(),
            row.from_status.value if row.from_status else "",
            row.to_status.value,
            row.actor,
            row.reason or "",
        ),
    )


@registry_app.command("expire")
def registry_expire() -> None:
    """Expire every open subscription whose valid_until has passed."""
    from registry.service import expire_due, utcnow

    with _registry_transaction() as session:
        expired = [
            (row.id, row.subscriber.code, row.resource.code)
            for row in expire_due(session, utcnow())
        ]
    for subscription_id, subscriber, resource in expired:
        console.print(f"expired subscription {subscription_id} ({subscriber} → {resource})")
    console.print(f"{len(expired)} subscriptions expired", highlight=False)


@registry_app.command("issue-token")
def registry_issue_token(
    department: Annotated[
        str, typer.Argument(help="The department's code, or admin for an administrator token.")
    ],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="What the token may do on the inbox API: inbox:read, inbox:act (repeat the"
            " option for both). Without it: both."
        ),
    ] = None,
) -> None:
    """Issue an API token; it is printed once and only its SHA-256 is stored."""
    from registry.audit import Actor
    from registry.service import issue_token

    with _registry_transaction() as session:
        issued = issue_token(
            session,
            Actor.admin("cli"),
            None if department == "admin" else department,
            scopes=scope or None,
        )
        credential_id = issued.credential.id
    errors.print(f"credential {credential_id} for {department}; the token (shown once):")
    typer.echo(issued.token)


CredentialIdArgument = Annotated[
    int, typer.Argument(help="The credential's id (printed at issue; see registry tokens).")
]


@registry_app.command("tokens")
def registry_tokens(
    department: Annotated[
        str | None, typer.Option(help="Only this department's credentials.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The API credentials: id, department, scopes, when issued and revoked (never a token:
    only its SHA-256 is stored)."""
    from registry.contract import CredentialOut
    from registry.service import list_credentials

    with _registry_transaction() as session:
        rows = [
            row
            for row in (CredentialOut.of(c) for c in list_credentials(session))
            if department is None or row.department == department
        ]
    _print_rows(
        rows,
        as_json,
        ("id", "department", "scopes", "issued", "revoked"),
        lambda row: (
            str(row.id),
            row.department or "(admin)",
            ", ".join(row.scopes),
            row.issued_at.isoformat(timespec="seconds"),
            row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "",
        ),
    )


@registry_app.command("revoke-token")
def registry_revoke_token(credential_id: CredentialIdArgument) -> None:
    """Revoke an API credential: its token is refused from now on (the inbox API and the
    workbench ask again within their token cache, 5 s)."""
    from registry.audit import Actor
    from registry.service import revoke_credential

    with _registry_transaction() as session:
        credential = revoke_credential(session, Actor.admin("cli"), credential_id)
        owner = credential.department.code if credential.department else "admin"
    console.print(f"credential {credential_id} of {owner} revoked", highlight=False)


@registry_app.command("rotate-token")
def registry_rotate_token(credential_id: CredentialIdArgument) -> None:
    """Replace a credential by a new token with the same department and scopes, and revoke
    the old one, in one transaction. The new token is printed once, on stdout."""
    from registry.audit import Actor
    from registry.service import rotate_credential

    with _registry_transaction() as session:
        issued = rotate_credential(session, Actor.admin("cli"), credential_id)
        new_id = issued.credential.id
        owner = issued.credential.department.code if issued.credential.department else "admin"
    errors.print(
        f"credential {credential_id} of {owner} revoked; its replacement {new_id},"
        " the token (shown once):",
        highlight=False,
    )
    typer.echo(issued.token)


@registry_app.command("audit")
def registry_audit(
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The audit log: who changed what, when, before and after."""
    from registry.contract import AuditEntryOut
    from registry.service import audit_entries

    with _registry_transaction() as session:
        rows = [AuditEntryOut.of(row) for row in audit_entries(session, limit=limit)]

    def cells(row: AuditEntryOut) -> Sequence[str]:
        before, after = row.before or {}, row.after or {}
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        what = "created" if not before else "deleted" if not after else ", ".join(changed)
        at = row.at.isoformat(timespec="seconds")
        return (str(row.id), at, row.actor, row.action, f"{row.entity} {row.entity_id}", what)

    _print_rows(rows, as_json, ("id", "at", "actor", "action", "entity", "changed"), cells)


@registry_app.command("grants")
def registry_grants(as_json: JsonOption = False) -> None:
    """What each department may read and write on the broker now (the ACL reconciler's input)."""
    from registry.contract import GrantOut
    from registry.service import access_grants, utcnow

    with _registry_transaction() as session:
        rows = [GrantOut.of(grant) for grant in access_grants(session, utcnow())]
    _print_rows(
        rows,
        as_json,
        ("department", "principal", "read", "write", "groups"),
        lambda row: (
            row.department,
            row.principal,
            "\n".join(row.read_topics),
            "\n".join(row.write_topics),
            row.group_prefix + "*",
        ),
    )


# -- the ACL hook: registry/acl.py is the lead engineer's ----------------------------------
@registry_app.command("reconcile-acls")
def registry_reconcile_acls(
    watch: Annotated[
        bool, typer.Option(help="Keep the broker in step: reconcile every --interval seconds.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds with --watch.")] = 5.0,
) -> None:
    """Make the broker's department topics and ACLs what the registry's grants say.

    Expires due subscriptions first. With --watch it runs until interrupted, so a
    revocation or expiry is enforced within seconds (xietong registry serve does the
    same next to the API).
    """
    import threading

    from registry.enforcer import AccessEnforcer
    from xietong.kafka import clients

    settings = get_settings()
    enforcer = AccessEnforcer(settings.database_url, settings, clients("admin").admin(), interval)
    if watch:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            enforcer.run(stop)
        except KeyboardInterrupt:
            return
        return
    try:
        report = enforcer.enforce_once()
    except Exception as error:
        fail(f"reconciling access on {settings.kafka_bootstrap_servers} failed: {error}")
    console.print(
        f"{report.departments} departments ({report.onboarded} with a Kafka credential):"
        f" {len(report.acls.created)} ACLs created, {len(report.acls.deleted)} removed,"
        f" {sum(change.change != 'unchanged' for change in report.topics)} topics changed",
        highlight=False,
    )


@registry_app.command("issue-kafka-password")
def registry_issue_kafka_password(
    department: Annotated[str, typer.Argument(help="The department's code.")],
) -> None:
    """Create or rotate the department's Kafka credential (principal dept-<code>).

    The password is printed once; the broker keeps only a salted SCRAM hash. The
    department's topics and ACLs follow on the next reconciliation.
    """
    from registry.acl import issue_kafka_password
    from registry.service import get_department
    from xietong.kafka import clients

    with _registry_transaction() as session:
        get_department(session, department)
    password = issue_kafka_password(clients("admin").admin(), department)
    console.print(f"principal: dept-{department}\npassword:  {password}", highlight=False)
    errors.print("store it now: it is not shown again", highlight=False)


@registry_app.command("revoke-kafka-password")
def registry_revoke_kafka_password(
    department: Annotated[str, typer.Argument(help="The department's code.")],
) -> None:
    """Delete the department's Kafka credential (principal dept-<code>): every new login
    is refused; a connection already open stays until it reconnects. Its grants stay in
    the registry; issue-kafka-password gives it a credential again."""
    from registry.acl import revoke_kafka_password
    from registry.service import get_department
    from xietong.kafka import clients

    with _registry_transaction() as session:
        get_department(session, department)
    try:
        revoke_kafka_password(clients("admin").admin(), department)
    except ValueError as error:
        fail(str(error))
    console.print(f"principal dept-{department}: its Kafka credential is deleted", highlight=False)


@registry_app.command("onboard")
def registry_onboard(
    credentials: Annotated[
        Path,
        typer.Option(help="JSON file (mode 0600) the new principals' passwords are added to."),
    ],
    department: Annotated[
        list[str] | None,
        typer.Argument(help="Department codes (default: every department not onboarded yet)."),
    ] = None,
) -> None:
    """Give departments their Kafka credentials (principals dept-<code>) in one go; the
    passwords go to CREDENTIALS, not the terminal. Departments that have one keep it.
    Their topics and ACLs follow on the next reconciliation (`registry reconcile-acls`)."""
    import sqlalchemy as sa

    from registry.acl import issue_kafka_passwords, onboarded_departments
    from registry.models import Department
    from registry.service import get_department
    from xietong.kafka import clients

    admin = clients("admin").admin()
    with _registry_transaction() as session:
        if department:
            codes = [get_department(session, code).code for code in department]
        else:
            codes = list(session.scalars(sa.select(Department.code).order_by(Department.code)))
    missing = sorted(set(codes) - onboarded_departments(admin))
    passwords = issue_kafka_passwords(admin, missing)
    known = json.loads(credentials.read_text()) if credentials.exists() else {}
    known.update({f"dept-{code}": password for code, password in passwords.items()})
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.touch(mode=0o600, exist_ok=True)
    credentials.chmod(0o600)
    credentials.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    console.print(
        f"{len(passwords)} departments onboarded, {len(codes) - len(passwords)} were already;"
        f" passwords in {credentials}",
        highlight=False,
    )


# -- end of the ACL hook ---------------------------------------------------------------------


# -- 行政协助事项清单 (registry/assistance.py) -------------------------------------------------

assistance_items_app = typer.Typer(
    help="The assistance list (行政协助事项清单): list, add, change, retire, history.",
    no_args_is_help=True,
)
registry_app.add_typer(assistance_items_app, name="assistance-items")
ItemFileArgument = Annotated[
    Path,
    typer.Argument(
        help="A YAML (or JSON) file of one item, as in the sample province's assistance_items.",
        exists=True,
        dir_okay=False,
    ),
]
ItemByOption = Annotated[
    str, typer.Option("--by", help="Who changes the list: the item's 编办 (its code), or admin.")
]


def _listed_item(path: Path) -> Any:
    import yaml
    from pydantic import ValidationError

    from registry.assistance import ListedItem

    try:
        return ListedItem.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as error:
        fail(f"{path}: not an assistance item: {error}")


def _item_row(row: Any) -> tuple[str, ...]:
    requester = row.requesting_sector_code or (
        row.requesting_department.code if row.requesting_department else "(any)"
    )
    limit = f"{row.time_limit_days} {'working days' if row.working_days else 'days'}"
    retired = row.retired_at.date().isoformat() if row.retired_at else ""
    return (
        row.code,
        row.name,
        requester,
        row.assisting_department.code,
        limit,
        row.cadence or "",
        str(row.version),
        retired,
    )


ITEM_COLUMNS = ("code", "name", "requester", "assisting", "limit", "cadence", "v", "retired")


@assistance_items_app.command("list")
def assistance_items_list(
    active: Annotated[bool, typer.Option(help="Only the items still listed.")] = False,
) -> None:
    """The assistance list: each item, who may ask, who assists, its time limit."""
    from registry.assistance import list_assistance_items

    with _registry_transaction() as session:
        rows = [
            _item_row(row) for row in list_assistance_items(session, include_retired=not active)
        ]
    _print_rows(rows, False, ITEM_COLUMNS, lambda row: row)


@assistance_items_app.command("add")
def assistance_items_add(item_file: ItemFileArgument, by: ItemByOption) -> None:
    """List a new item (version 1)."""
    from registry.assistance import add_assistance_item

    item = _listed_item(item_file)
    with _registry_transaction() as session:
        row = add_assistance_item(session, _actor(by), item)
        _print_rows([_item_row(row)], False, ITEM_COLUMNS, lambda row: row)


@assistance_items_app.command("change")
def assistance_items_change(item_file: ItemFileArgument, by: ItemByOption) -> None:
    """Change what a listed item says (its next version); unchanged, nothing is written."""
    from registry.assistance import change_assistance_item

    item = _listed_item(item_file)
    with _registry_transaction() as session:
        row, changed = change_assistance_item(session, _actor(by), item)
        _print_rows([_item_row(row)], False, ITEM_COLUMNS, lambda row: row)
    if not changed:
        console.print(f"{item.code}: unchanged")


@assistance_items_app.command("retire")
def assistance_items_retire(
    code: Annotated[str, typer.Argument(help="The item's code.")],
    by: ItemByOption,
    reason: Annotated[str, typer.Option(help="Why it leaves the list (退出理由).")],
) -> None:
    """Take an item off the list: no new request is taken on it."""
    from registry.assistance import retire_assistance_item

    with _registry_transaction() as session:
        row = retire_assistance_item(session, _actor(by), code, reason)
        _print_rows([_item_row(row)], False, ITEM_COLUMNS, lambda row: row)


@assistance_items_app.command("history")
def assistance_items_history(
    code: Annotated[str, typer.Argument(help="The item's code.")],
    as_json: JsonOption = False,
) -> None:
    """Every version of one item, oldest first: when, who, which operation, the version."""
    from registry.assistance import assistance_item_history

    with _registry_transaction() as session:
        entries = [
            {
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action,
                "before": entry.before,
                "after": entry.after,
            }
            for entry in assistance_item_history(session, code)
        ]
    _print_rows(
        entries,
        as_json,
        ("at", "actor", "action", "version"),
        lambda row: (
            row["at"],
            row["actor"],
            row["action"],
            str((row["after"] or {}).get("version")),
        ),
    )


@registry_app.command("serve")
def registry_serve() -> None:
    """Run the registry API (OpenAPI at /docs) on XIETONG_REGISTRY_HOST:XIETONG_REGISTRY_PORT."""
    import logging

    import uvicorn

    from registry.api import create_app
    from registry.settings import get_registry_settings
    from xietong.logs import configure

    configure(service="registry")
    registry_settings = get_registry_settings()
    if registry_settings.admin_token_sha256 is None:
        logging.getLogger("registry").warning(
            "no XIETONG_REGISTRY_ADMIN_TOKEN_SHA256: only administrator credentials issued"
            " with `xietong registry issue-token admin` can administer"
        )
    from registry.db import session_factory
    from registry.enforcer import AccessEnforcer
    from registry.publisher import OutboxRelay
    from xietong.kafka import clients

    settings = get_settings()
    # Beside the API: the broker follows the registry (access), and so do the compacted
    # reference topics (outbox); both act at once after a change, and on a timer.
    enforcer = AccessEnforcer(settings.database_url, settings, clients("admin").admin())
    relay = OutboxRelay(session_factory(settings.database_url), clients("registry"))
    _, stop_enforcer = enforcer.start()
    _, stop_relay = relay.start()

    def after_change() -> None:
        relay.nudge()
        enforcer.nudge()

    app_ = create_app(settings.database_url, registry_settings.admin_token_sha256, after_change)
    try:
        uvicorn.run(app_, host=registry_settings.host, port=registry_settings.port, log_config=None)
    finally:
        stop_enforcer.set()
        stop_relay.set()


# -- the registry's compacted topics: the outbox relay (registry/publisher.py) --------------

if TYPE_CHECKING:
    from registry.publisher import OutboxRelay


@contextmanager
def _relay() -> Iterator[OutboxRelay]:
    """The outbox relay of the registry database, as svc-registry; a failure becomes one
    ``fail()`` line saying what to do."""
    import sqlalchemy as sa

    from registry.db import session_factory
    from registry.publisher import OutboxPublishError, OutboxRelay
    from xietong.kafka import KafkaCredentialsError, clients

    url = get_settings().database_url
    try:
        yield OutboxRelay(session_factory(url), clients("registry"))
    except (OutboxPublishError, KafkaCredentialsError) as error:
        fail(str(error))
    except sa.exc.SQLAlchemyError as error:
        fail(
            f"registry database {url.rsplit('@', 1)[-1]}:"
            f" {str(getattr(error, 'orig', error)).splitlines()[0]}; is the stack up"
            " (xietong stack up) and the database migrated (xietong registry migrate)?"
        )


@registry_app.command("publish")
def registry_publish(
    watch: Annotated[
        bool, typer.Option(help="Keep publishing every --interval seconds until interrupted.")
    ] = False,
    republish: Annotated[
        bool,
        typer.Option(
            help="First write a fresh snapshot of everything to the outbox (for a new topic,"
            " or after a restore)."
        ),
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds with --watch.")] = 1.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="With --watch, serve /metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Publish the registry's outbox to its compacted topics, as svc-registry.

    registry.departments, registry.approval-items, registry.measures, registry.list-types
    and registry.subscriptions: every change since the last run, in order. Without
    --watch it publishes what is pending and stops. The topics' schemas must be
    registered (xietong schemas register).
    """
    import threading

    from prometheus_client import start_http_server

    from xietong.logs import configure

    with _relay() as relay:
        if republish:
            written = relay.republish_all()
            console.print(f"{written} snapshots written to the outbox", highlight=False)
        if watch:
            configure()
            if metrics_port:
                start_http_server(metrics_port, addr="127.0.0.1")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            relay.run(stop, interval)
            return
        published = 0
        while batch := relay.publish_pending():
            published += batch
        left = sum(topic.rows for topic in relay.pending())
    console.print(
        f"{published} records published"
        + (f"; {left} still pending (another relay is publishing them)" if left else ""),
        highlight=False,
    )


@registry_app.command("outbox")
def registry_outbox(as_json: JsonOption = False) -> None:
    """What waits in the outbox to be published, per topic, and since when."""
    with _relay() as relay:
        pending = relay.pending()
    if as_json:
        _print_json(
            [{"topic": p.topic, "pending": p.rows, "oldest": p.oldest.isoformat()} for p in pending]
        )
        return
    table = Table("topic", "pending", "oldest")
    for topic in pending:
        table.add_row(topic.topic, str(topic.rows), topic.oldest.isoformat(timespec="seconds"))
    console.print(table)
    console.print(f"{sum(p.rows for p in pending)} records pending", highlight=False)


# -- stream processors -----------------------------------------------------------------------

streams_app = typer.Typer(
    help="The stream processors (faust-streaming, and the sharing processor).", no_args_is_help=True
)
app.add_typer(streams_app, name="streams")

#: ``--history-until``: the cut-over of a province's first day, overriding the setting.
HistoryUntilOption = Annotated[
    datetime | None,
    typer.Option(
        "--history-until",
        parser=datetime.fromisoformat,
        metavar="ISO-INSTANT|DATE",
        help="The cut-over: an ISO instant or date (00:00), in the province's time zone"
        " unless it names one. A deadline that passed before it is recorded, not sent or"
        " alerted (streams/README.md). Default: XIETONG_<PROCESSOR>_HISTORY_UNTIL, else none.",
    ),
]


def _run_processor(processor: Any, history_until: datetime | None, log_level: str) -> None:
    """One worker of a stream processor (a ``ProcessorApp``) until SIGTERM or Ctrl-C, its
    rules from its settings, with the history cut-over given on the command line."""
    rules = None
    if history_until is not None:
        rules = processor.settings_type(history_until=history_until)
    processor.run_worker(get_settings(), rules, loglevel=log_level)


@streams_app.command("dual-notice")
def streams_dual_notice(
    log_level: Annotated[
        str, typer.Option(help="Faust's own log level (the processor's events are JSON lines)")
    ] = "info",
    history_until: HistoryUntilOption = None,
) -> None:
    """Run a 双告知 worker: pushes to approving departments, 告知书, claims and deadlines.

    Runs until SIGTERM or Ctrl-C; start more workers to share the partitions. The rules
    come from XIETONG_DUAL_NOTICE_* (claim period, licence period, working days,
    history cut-over, metrics port); see streams/dual_notice/app.py.
    """
    from streams.dual_notice.app import DualNoticeProcessor

    _run_processor(DualNoticeProcessor, history_until, log_level)


@streams_app.command("joint-punishment")
def streams_joint_punishment(
    log_level: Annotated[
        str, typer.Option(help="Faust's own log level (the processor's events are JSON lines)")
    ] = "info",
    history_until: HistoryUntilOption = None,
) -> None:
    """Run a 联合惩戒 worker: sanction notices, licence reviews, restriction hits, 反馈 and
    lift notices.

    Runs until SIGTERM or Ctrl-C; start more workers to share the partitions. The rules
    come from XIETONG_JOINT_PUNISHMENT_* (matter window, licence-review lists, history
    cut-over, metrics port); see streams/joint_punishment/app.py.
    """
    from streams.joint_punishment.app import JointPunishmentProcessor

    _run_processor(JointPunishmentProcessor, history_until, log_level)


@streams_app.command("assistance")
def streams_assistance(
    log_level: Annotated[
        str, typer.Option(help="Faust's own log level (the processor's events are JSON lines)")
    ] = "info",
    history_until: HistoryUntilOption = None,
) -> None:
    """Run a 行政协助 worker: requests by the assistance list, answers, 否定报备, 督查, 互评.

    Runs until SIGTERM or Ctrl-C; start more workers to share the partitions. The rules
    come from XIETONG_ASSISTANCE_* (the time limit outside the list, working days, clock
    skew, metrics port); see streams/assistance/app.py.
    """
    from streams.assistance.app import AssistanceProcessor

    _run_processor(AssistanceProcessor, history_until, log_level)


@streams_app.command("sharing")
def streams_sharing(
    log_level: Annotated[
        str,
        typer.Option(help="Level of the libraries' logs (the processor's events are JSON lines)"),
    ] = "info",
) -> None:
    """Run the sharing processor (有条件共享): each conditional subscription's view.

    Follows registry.subscriptions and, for every APPROVED, unexpired subscription with
    chosen fields or division filters, writes only the granted fields of the records
    about entities in the granted divisions to dept.<code>.shared.<resource>, under a
    schema of the view's own. Runs until SIGTERM or Ctrl-C. Settings: XIETONG_SHARING_*
    (batch size, retry interval, metrics port); see streams/sharing/processor.py.
    """
    import logging

    from prometheus_client import start_http_server

    from streams.sharing.processor import SharingProcessor
    from streams.sharing.settings import SharingSettings
    from xietong.logs import configure
    from xietong.processes import on_stop_signal

    logging.getLogger().setLevel(log_level.upper())
    configure()
    options = SharingSettings()
    processor = SharingProcessor(get_settings(), options)
    if options.metrics_port:
        start_http_server(options.metrics_port)
    on_stop_signal(processor.stop)
    processor.run()


# -- monitoring: consumer lag (app/lag.py) ------------------------------------------------

lag_app = typer.Typer(
    help="Consumer lag of the platform's consumer groups (Prometheus exporter).",
    no_args_is_help=True,
)
app.add_typer(lag_app, name="lag")

GroupPrefixOption = Annotated[
    list[str] | None,
    typer.Option(
        "--group-prefix",
        help="Measure the groups whose id starts with this (repeatable); default: xietong.",
    ),
]


@lag_app.command("serve")
def lag_serve(
    port: Annotated[
        int | None, typer.Option(help="Serve /metrics here (default XIETONG_LAG_EXPORTER_PORT).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    interval: Annotated[
        float | None,
        typer.Option(help="Seconds between measurements (default XIETONG_LAG_EXPORTER_INTERVAL)."),
    ] = None,
    group_prefix: GroupPrefixOption = None,
) -> None:
    """Serve every platform consumer group's lag per topic and partition to Prometheus.

    Measures committed and end offsets with the admin client every few seconds, until
    SIGTERM or Ctrl-C: xietong_consumer_lag{group,topic,partition}, …_committed_offset,
    …_end_offset, xietong_consumer_group_members and xietong_topic_end_offset.
    """
    import threading

    from prometheus_client import start_http_server

    from app.lag import PLATFORM_GROUP_PREFIXES, LagExporter, logger
    from xietong.kafka import clients
    from xietong.logs import configure, log_event
    from xietong.processes import on_stop_signal

    settings = get_settings()
    configure()
    exporter = LagExporter(
        clients("admin").admin(),
        group_prefix or PLATFORM_GROUP_PREFIXES,
        interval or settings.lag_exporter_interval,
    ).register()
    port = port or settings.lag_exporter_port
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        fail(f"cannot serve metrics on {host}:{port} ({error}): choose another --port")
    log_event(logger, "lag_exporter_serving", host=host, port=port, groups=exporter.prefixes)
    stop = threading.Event()
    on_stop_signal(stop.set)
    exporter.run(stop)


@lag_app.command("show")
def lag_show(group_prefix: GroupPrefixOption = None, as_json: JsonOption = False) -> None:
    """Measure once and print each group's lag per topic and partition."""
    from confluent_kafka import KafkaException

    from app.lag import PLATFORM_GROUP_PREFIXES, measure
    from xietong.kafka import clients

    try:
        measured = measure(clients("admin").admin(), group_prefix or PLATFORM_GROUP_PREFIXES)
    except KafkaException as error:
        fail(f"the broker at {get_settings().kafka_bootstrap_servers} did not answer: {error}")
    members = {g.group: g for g in measured.groups}
    if as_json:
        _print_json(
            [
                {
                    "group": p.group,
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "end": p.end,
                    "lag": p.lag,
                }
                for p in measured.partitions
            ]
        )
        return
    table = Table("group", "state", "members", "topic", "partition", "committed", "end", "lag")
    for p in measured.partitions:
        group = members.get(p.group)
        table.add_row(
            p.group,
            group.state if group else "",
            str(group.members) if group else "",
            p.topic,
            str(p.partition),
            str(p.committed),
            str(p.end),
            str(p.lag),
        )
    console.print(table)
    for group_id in sorted({p.group for p in measured.partitions}):
        console.print(f"{group_id}: lag {measured.total_lag(group_id)}", highlight=False)


# -- the credit check (嵌入式联合奖惩) ----------------------------------------------------------

credit_check_app = typer.Typer(
    help="The synchronous credit check departments' systems call (嵌入式联合奖惩).",
    no_args_is_help=True,
)
app.add_typer(credit_check_app, name="credit-check")


@credit_check_app.command("serve")
def credit_check_serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default XIETONG_CREDIT_CHECK_PORT, 8420).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address (default XIETONG_CREDIT_CHECK_HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Serve GET /v1/checks (OpenAPI at /docs), /ready and /metrics.

    Loads credit.list-entries, registry.measures and registry.list-types into memory
    (/ready answers 503 until they are read to their end), then follows them; department
    tokens are verified against the registry database; every check is recorded on
    credit.matter-events. Settings: XIETONG_CREDIT_CHECK_*; see streams/credit_check/.
    """
    from streams.credit_check.api import run_service
    from streams.credit_check.settings import CreditCheckSettings
    from xietong.kafka import KafkaCredentialsError

    rules = CreditCheckSettings()
    overrides = {name: value for name, value in (("port", port), ("host", host)) if value}
    try:
        run_service(get_settings(), rules.model_copy(update=overrides))
    except (KafkaCredentialsError, RuntimeError) as error:
        fail(str(error))


# -- the inbox API (connectors/inbox) --------------------------------------------------------

inbox_app = typer.Typer(
    help="The inbox API: department systems read their inbox and act on it over HTTP.",
    no_args_is_help=True,
)
app.add_typer(inbox_app, name="inbox")


@inbox_app.command("serve")
def inbox_serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default XIETONG_INBOX_PORT, 8430).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address (default XIETONG_INBOX_HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Serve /v1/inbox, /v1/pushes/…, /v1/hits/…, /v1/actions/… (OpenAPI at /v1/docs),
    /health, /ready and /metrics.

    Reads the credit database (CREDIT_DATABASE_URL) read-only, writes departments'
    actions to their inbound topics as svc-inbox (acknowledged before answering 202),
    verifies department tokens (scopes inbox:read, inbox:act) against the registry
    database. Settings: XIETONG_INBOX_*; the guide is connectors/inbox/README.md.
    """
    from connectors.inbox.api import run_service
    from connectors.inbox.settings import InboxSettings
    from xietong.kafka import KafkaCredentialsError

    overrides = {name: value for name, value in (("port", port), ("host", host)) if value}
    try:
        run_service(get_settings(), InboxSettings().model_copy(update=overrides))
    except (KafkaCredentialsError, RuntimeError) as error:
        fail(str(error))


# -- the credit database (connectors/sink) ---------------------------------------------------

from connectors.sink.cli import audit_app, sink_app  # noqa: E402 - sub-apps of their own module

app.add_typer(sink_app, name="sink")
app.add_typer(audit_app, name="audit")

# -- webhooks (connectors/webhooks) ------------------------------------------------------------

from connectors.webhooks.cli import webhooks_app  # noqa: E402 - a sub-app of its own module

app.add_typer(webhooks_app, name="webhooks")

# -- the clerk's workbench (app/workbench) ------------------------------------------------------

from app.workbench.cli import workbench_app  # noqa: E402 - a sub-app of its own module

app.add_typer(workbench_app, name="workbench")


# -- the whole platform: make run ---------------------------------------------------------------


@app.command("simulate")
def simulate(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the departments' exports go (default XIETONG_SIMULATOR_EXPORTS_DIR,"
            " else .local/run/exports)."
        ),
    ] = None,
) -> None:
    """Play the province's departments: exports through the department connectors, and
    clerks who claim pushes, answer restriction hits and check credit (app/simulator.py;
    rates from XIETONG_SIMULATOR_*). Runs until stopped; a restart goes on where it was."""
    from prometheus_client import start_http_server

    from app.simulator import (
        CreditChecks,
        DepartmentSimulator,
        DepartmentTokens,
        InboxClerks,
        SimulatorSettings,
    )
    from app.webhook_receivers import WebhookReceivers
    from xietong.kafka import clients
    from xietong.logs import configure
    from xietong.processes import on_stop_signal
    from xietong.settings import get_settings

    configure()
    settings = get_settings()
    rules = SimulatorSettings()
    if rules.metrics_port:
        start_http_server(rules.metrics_port, addr=rules.metrics_host)
    tokens = DepartmentTokens(settings.database_url)  # each department's own, for the APIs
    simulator = DepartmentSimulator(
        rules,
        out or rules.exports_dir or settings.home / "run" / "exports",
        clients("admin"),
        clients("connectors"),
        CreditChecks(rules, tokens),
        InboxClerks(rules, tokens),
        tokens,
        WebhookReceivers(rules.webhook_departments, settings.database_url),
    )
    stopped = threading.Event()
    on_stop_signal(stopped.set)
    simulator.start()
    while not stopped.wait(1.0):
        if not simulator.alive():
            simulator.stop()
            fail("a simulator thread stopped; see the log above")
    simulator.stop()


@app.command("run")
def run_platform(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: at Ctrl-C).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between two summaries.")] = 5.0,
) -> None:
    """Run the whole platform on the local stack: every service as a process, the
    department simulator feeding it, a live summary; Ctrl-C, SIGTERM or SIGHUP stops it
    (app/run.py), and the services end with it even when it is killed. `make run`
    prepares the stack and the registry first, then calls this."""
    from app.run import SupervisorError, run
    from xietong.settings import get_settings

    try:
        raise typer.Exit(run(get_settings(), duration=duration, interval=interval))
    except SupervisorError as error:
        fail(str(error))


if __name__ == "__main__":
    app()
