"""``xietong webhooks …``: departments' webhook endpoints and the worker that pushes to them.

xietong webhooks register CODE URL [--cloudevents] [--allow-http]   prints the secret once
xietong webhooks list [--json]
xietong webhooks rotate-secret ID       a new secret; the old one signs 24 h more
xietong webhooks delete ID
xietong webhooks run                    the delivery worker (svc-webhooks)
xietong webhooks status [--json]        per endpoint: backlog, last success/failure, dead letters
xietong webhooks dead-letters [--json]
xietong webhooks replay DEAD_LETTER_ID  POST it once more
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from xietong.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

webhooks_app = typer.Typer(
    help="Webhooks: push each department's inbox items to its registered HTTPS endpoint.",
    no_args_is_help=True,
)

console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


@contextmanager
def _registry() -> Iterator[Session]:
    """One transaction on the registry database; a refusal becomes one ``fail()`` line."""
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
            f"registry database {url.rsplit('@', 1)[-1]}: {str(error.orig).splitlines()[0]};"
            " is the stack up and the registry migrated (xietong registry migrate)?"
        )


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@webhooks_app.command("register")
def webhooks_register(
    department: Annotated[str, typer.Argument(help="The department's code.")],
    url: Annotated[
        str, typer.Argument(help="Its endpoint: https://… (http only with --allow-http).")
    ],
    cloudevents: Annotated[
        bool, typer.Option(help="POST CloudEvents 1.0 (structured mode) instead of the plain body.")
    ] = False,
    allow_http: Annotated[
        bool,
        typer.Option(
            help="Accept a plain http:// endpoint (a test host); default: the setting"
            " XIETONG_REGISTRY_WEBHOOK_ALLOW_HTTP."
        ),
    ] = False,
) -> None:
    """Register a department's endpoint; its signing secret is printed once (stdout)."""
    from registry.audit import Actor
    from registry.settings import get_registry_settings
    from registry.webhooks import register_webhook

    with _registry() as session:
        made = register_webhook(
            session,
            Actor.admin("cli"),
            department,
            url,
            cloudevents=cloudevents,
            allow_http=allow_http or get_registry_settings().webhook_allow_http,
        )
        endpoint_id = made.endpoint.id
    errors.print(f"webhook {endpoint_id} for {department}: {url}; its secret (shown once):")
    typer.echo(made.secret)


@webhooks_app.command("list")
def webhooks_list(as_json: JsonOption = False) -> None:
    """Every department's endpoint (never the secrets)."""
    from registry.audit import Actor
    from registry.contract import WebhookOut
    from registry.webhooks import list_webhooks

    with _registry() as session:
        rows = [WebhookOut.of(row) for row in list_webhooks(session, Actor.admin("cli"))]
    if as_json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return
    table = Table("id", "department", "url", "format", "secret rotated")
    for row in rows:
        rotated = row.secret_rotated_at.isoformat() if row.secret_rotated_at else ""
        table.add_row(
            str(row.id),
            row.department,
            row.url,
            "cloudevents" if row.cloudevents else "plain",
            rotated,
        )
    console.print(table)


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    endpoint_id: Annotated[int, typer.Argument(help="The webhook's id (xietong webhooks list).")],
) -> None:
    """A new secret, printed once; the previous one keeps signing (beside it) for 24 h."""
    from registry.audit import Actor
    from registry.webhooks import rotate_secret

    with _registry() as session:
        made = rotate_secret(session, Actor.admin("cli"), endpoint_id)
        until = made.endpoint.previous_secret_valid_until
    errors.print(
        f"webhook {endpoint_id}: new secret (shown once); the previous one signs until {until}"
    )
    typer.echo(made.secret)


@webhooks_app.command("delete")
def webhooks_delete(
    endpoint_id: Annotated[int, typer.Argument(help="The webhook's id.")],
) -> None:
    """Stop pushing to a department (its inbox keeps the items)."""
    from registry.audit import Actor
    from registry.webhooks import delete_webhook

    with _registry() as session:
        delete_webhook(session, Actor.admin("cli"), endpoint_id)
    console.print(f"webhook {endpoint_id} deleted")


@webhooks_app.command("run")
def webhooks_run() -> None:
    """Push every department inbox to its endpoint until SIGTERM/SIGINT (as svc-webhooks).

    In inbox order per department, at least once (offsets committed after delivery or
    dead letter), retried with backoff for XIETONG_WEBHOOKS_RETRY_WINDOW (24 h); metrics
    on XIETONG_WEBHOOKS_METRICS_PORT (9468). See connectors/webhooks/README.md.
    """
    import sqlalchemy as sa
    from prometheus_client import start_http_server

    from connectors.webhooks.settings import WebhookSettings
    from connectors.webhooks.worker import WebhookWorker
    from xietong.kafka import KafkaCredentialsError
    from xietong.logs import configure
    from xietong.processes import on_stop_signal

    configure()
    options = WebhookSettings()
    try:
        worker = WebhookWorker(get_settings(), options)
    except KafkaCredentialsError as error:
        fail(str(error))
    if options.metrics_port:
        start_http_server(options.metrics_port)
    on_stop_signal(worker.stop)
    try:
        worker.run()
    except sa.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        fail(
            f"the registry database does not answer or is not migrated ({reason}):"
            " xietong registry migrate, then start the worker again"
        )


def _metrics_url(metrics_url: str | None) -> str:
    from connectors.webhooks.settings import WebhookSettings

    return metrics_url or f"http://127.0.0.1:{WebhookSettings().metrics_port}/metrics"


MetricsOption = Annotated[
    str | None,
    typer.Option(help="The worker's /metrics (default: 127.0.0.1:XIETONG_WEBHOOKS_METRICS_PORT)."),
]


@webhooks_app.command("status")
def webhooks_status(metrics_url: MetricsOption = None, as_json: JsonOption = False) -> None:
    """Per endpoint: backlog (inbox records not yet delivered), last success, last failure
    and its reason, the oldest undelivered item's age (from the running worker), dead letters."""
    from connectors.webhooks.operations import endpoint_status
    from connectors.webhooks.settings import SERVICE
    from connectors.webhooks.worker import Endpoints
    from xietong.kafka import clients

    rows = endpoint_status(
        clients(SERVICE), Endpoints(get_settings().database_url, 0), _metrics_url(metrics_url)
    )
    if as_json:
        _print_json([asdict(row) for row in rows])
        return
    table = Table(
        "department",
        "url",
        "backlog",
        "last success",
        "last failure",
        "reason",
        "oldest (s)",
        "dead letters",
    )
    for row in rows:
        table.add_row(
            row.department,
            row.url,
            "" if row.backlog is None else str(row.backlog),
            row.last_success_at.isoformat(timespec="seconds") if row.last_success_at else "",
            row.last_failure_at.isoformat(timespec="seconds") if row.last_failure_at else "",
            row.last_failure_reason or row.last_dead_letter_reason,
            ""
            if row.oldest_undelivered_seconds is None
            else f"{row.oldest_undelivered_seconds:.0f}",
            str(row.dead_letters),
        )
    console.print(table)


@webhooks_app.command("dead-letters")
def webhooks_dead_letters(as_json: JsonOption = False) -> None:
    """Every dead-lettered delivery: its id (to replay), department, status and reason."""
    from connectors.webhooks.operations import dead_letters
    from connectors.webhooks.settings import SERVICE
    from xietong.kafka import clients

    rows = dead_letters(clients(SERVICE))
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "department", "webhook-id", "attempts", "status", "reason")
    for row in rows:
        table.add_row(
            row["dead_letter_id"],
            row["department"],
            row["webhook_id"],
            str(row["attempts"]),
            "" if row["last_status"] is None else str(row["last_status"]),
            row["reason"],
        )
    console.print(table)


@webhooks_app.command("replay")
def webhooks_replay(
    dead_letter_id: Annotated[str, typer.Argument(help="The dead letter's id (dead-letters).")],
) -> None:
    """POST a dead-lettered item once more, as it was sent, with the same webhook-id and
    a fresh signature, to the department's endpoint as registered now. Exits 1 unless
    the endpoint answers 2xx."""
    from connectors.webhooks.operations import ReplayError, replay
    from connectors.webhooks.settings import SERVICE, WebhookSettings
    from connectors.webhooks.worker import Endpoints
    from xietong.kafka import clients

    try:
        done = replay(
            clients(SERVICE),
            Endpoints(get_settings().database_url, 0),
            dead_letter_id,
            WebhookSettings().timeout,
        )
    except ReplayError as error:
        fail(str(error))
    if not done.delivered:
        fail(f"{done.url} answered {done.answer.reason}: not delivered; replay again later")
    console.print(f"delivered to {done.url}: {done.answer.reason}", highlight=False)
