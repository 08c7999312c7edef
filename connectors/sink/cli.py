"""``xietong sink …`` and ``xietong audit …``: the credit database and what auditors ask it.

xietong sink migrate                      the credit database's schema (Alembic)
xietong sink run                          follow every topic into it (svc-sink)
xietong sink backfill [--from-beginning | --since T] [--database URL]
xietong audit verify                      the tamper-evident log is intact, or where not
xietong audit entity USCC [--format table|json|csv]
xietong audit department CODE [--from D] [--to D] [--format table|json|csv]
xietong audit public-key                  the key that verifies the log
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from xietong.settings import get_settings

sink_app = typer.Typer(
    help="The credit database: the sink from every topic into it.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="Audit the credit database: reports and the tamper-evident log.", no_args_is_help=True
)

console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", help="A credit database URL (default: CREDIT_DATABASE_URL)."),
]


def _database(url: str | None) -> str:
    return url or get_settings().credit_database_url


@sink_app.command("migrate")
def sink_migrate(database: DatabaseOption = None) -> None:
    """Bring the credit database's schema (tables, auditor views and role) up to date."""
    from connectors.sink import db

    url = _database(database)
    db.create_database(url)
    db.migrate(url)
    console.print("credit database migrated")


@sink_app.command("run")
def sink_run(database: DatabaseOption = None) -> None:
    """Follow every canonical and derived topic and every department inbox into the
    credit database until SIGTERM/SIGINT. Offsets live in the database: a restart, even
    after kill -9, resumes after the last committed batch."""
    from prometheus_client import start_http_server

    from connectors.sink.sink import CreditSink, SinkSettings
    from xietong.logs import configure
    from xietong.processes import on_stop_signal

    configure()
    options = SinkSettings()
    sink = CreditSink(get_settings(), options, database_url=database)
    sink.start()
    if options.metrics_port:
        start_http_server(options.metrics_port)
    on_stop_signal(sink.stop)
    try:
        sink.run()
    finally:
        sink.close()


@sink_app.command("backfill")
def sink_backfill(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Read every topic from its first record.")
    ] = False,
    since: Annotated[
        dt.datetime | None,
        typer.Option(help="Read from this moment (ISO 8601; UTC unless it says otherwise)."),
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Rebuild a credit database from the topics, up to their ends now, with a progress
    bar. Without --from-beginning or --since it continues from the stored offsets. The
    database is created and migrated when missing; rows already there are kept (every
    write is idempotent), so the result equals what live processing made."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from connectors.sink import db
    from connectors.sink.sink import CreditSink, SinkSettings

    if from_beginning and since is not None:
        raise typer.BadParameter("give --from-beginning or --since, not both")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    url = _database(database)
    db.create_database(url)
    sink = CreditSink(get_settings(), SinkSettings(), database_url=url)
    sink.start()
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
    )
    task = bar.add_task("backfill", total=None)
    try:
        with bar:
            done = sink.backfill(
                from_beginning=from_beginning,
                since=since,
                progress_bar=lambda n, total: bar.update(task, completed=n, total=total),
            )
    finally:
        sink.close()
    rows = ", ".join(f"{table} {n}" for table, n in sorted(done.rows.items()) if n)
    console.print(
        f"{done.messages} messages in {done.batches} batches;"
        f" {done.dead_lettered} dead-lettered; rows written: {rows or 'none'}",
        highlight=False,
    )


# -- audit ------------------------------------------------------------------------------------


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOption = Annotated[Format, typer.Option("--format", help="table, json or csv.")]


def _key_path() -> tuple[object, object]:
    from connectors.sink.chain import public_key_path
    from connectors.sink.sink import SinkSettings

    private = SinkSettings().audit_key_path(get_settings())
    return private, public_key_path(private)


@audit_app.command("verify")
def audit_verify(
    database: DatabaseOption = None,
    public_key: Annotated[
        str | None, typer.Option(help="The platform's public key (PEM); default: the exported one.")
    ] = None,
) -> None:
    """Check every hash chain of the tamper-evident log: each entry's hash and signature,
    each link, each signed head. Exit 1 naming the first modified, deleted or reordered
    entry of every broken chain."""
    from pathlib import Path

    from connectors.sink import db
    from connectors.sink.chain import load_public_key, verify

    _, exported = _key_path()
    key = load_public_key(Path(public_key) if public_key else Path(str(exported)))
    conn = db.connect(_database(database))
    try:
        result = verify(conn, key)
    finally:
        conn.close()
    for finding in result.findings:
        errors.print(f"[red]✗[/red] {finding}", highlight=False)
    if not result.intact:
        raise typer.Exit(1)
    console.print(
        f"[green]✓[/green] {result.entries} entries in {result.chains} chains: intact",
        highlight=False,
    )


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the platform's public key (PEM), made with the signing key on first use."""
    from pathlib import Path

    from connectors.sink.chain import export_public_key, load_or_create_key

    private, _ = _key_path()
    typer.echo(export_public_key(load_or_create_key(Path(str(private)))).decode(), nl=False)


@audit_app.command("entity")
def audit_entity(
    uscc: Annotated[str, typer.Argument(help="统一社会信用代码 of the entity")],
    output: FormatOption = Format.table,
    database: DatabaseOption = None,
) -> None:
    """An entity's credit profile: its status, licences, penalties, listings, 双告知
    pushes and every delivery about it."""
    from connectors.sink import reports

    report = reports.entity_report(_database(database), uscc)
    if report is None:
        errors.print(f"no entity {uscc} in the credit database")
        raise typer.Exit(1)
    reports.render(report, output.value, console)


@audit_app.command("department")
def audit_department(
    code: Annotated[str, typer.Argument(help="The department's code, e.g. hz-xh-amr")],
    date_from: Annotated[
        dt.datetime | None, typer.Option("--from", help="From this moment (inclusive).")
    ] = None,
    date_to: Annotated[
        dt.datetime | None, typer.Option("--to", help="Up to this moment (exclusive).")
    ] = None,
    output: FormatOption = Format.table,
    database: DatabaseOption = None,
) -> None:
    """A department's record over a period: 双告知 claim rate, median time to claim,
    overdue pushes, sanction feedback, and every delivery to it."""
    from connectors.sink import reports

    def utc(moment: dt.datetime | None) -> dt.datetime | None:
        return moment.replace(tzinfo=dt.UTC) if moment and moment.tzinfo is None else moment

    report = reports.department_report(_database(database), code, utc(date_from), utc(date_to))
    reports.render(report, output.value, console)
