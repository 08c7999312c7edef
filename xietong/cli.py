"""The ``xietong`` command line.

    xietong stack up|down|status     the local stack (also make up / make down / make status)
    xietong topics apply|list        the platform's declared topics
    xietong demo round-trip          an Avro record through the real registry and broker

Every command reads :class:`xietong.settings.Settings`; ``--help`` on any command
explains its options.
"""

from __future__ import annotations

import sys
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
app.add_typer(stack_app, name="stack")
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


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


@topics_app.command("apply")
def topics_apply() -> None:
    """Create the declared topics that are missing and correct configuration drift.

    Never deletes a topic or changes a partition count; a partition mismatch is
    reported as a conflict and the command exits 2.
    """
    from xietong.kafka import clients
    from xietong.topics import Change, apply_topics

    settings = get_settings()
    try:
        changes = apply_topics(clients().admin(), settings)
    except Exception as error:
        fail(f"applying topics on {settings.kafka_bootstrap_servers} failed: {error}")
    table = Table("topic", "change", "detail")
    for change in changes:
        table.add_row(change.topic, change.change.value, change.detail)
    console.print(table)
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
        result = round_trip(clients())
    except Exception as error:
        fail(f"round trip failed: {error}")
    console.print(
        f"registered schema id {result.schema_id}; produced {result.wire_bytes} bytes to"
        f" platform.heartbeats[{result.partition}]@{result.offset}; decoded: {result.decoded};"
        f" stored as stack_round_trip.id={result.database_row_id}"
        f" ({result.elapsed_ms:.0f} ms)",
        highlight=False,
    )
