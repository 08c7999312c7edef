"""``xietong workbench serve``: the clerk's workbench as a process of its own."""

from __future__ import annotations

from typing import Annotated

import typer

workbench_app = typer.Typer(
    help="The clerk's workbench: a department's inbox in the browser (经办人工作台).",
    no_args_is_help=True,
)


@workbench_app.command("serve")
def serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default XIETONG_WORKBENCH_PORT, 8440).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address (default XIETONG_WORKBENCH_HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Serve the workbench's pages on http://HOST:PORT/ (and /metrics, /ready).

    A clerk signs in with the department's registry token and works the department's
    inbox: 双告知 pushes (认领, 退回, 终止推送), restriction hits (反馈), the department's
    figures. It reads and acts through the inbox's read and act sides (connectors/inbox:
    the credit database, the department's inbound topic); tokens are verified against
    the registry database. Settings: XIETONG_WORKBENCH_*; see app/README.md.
    """
    from app.workbench.server import run_service
    from app.workbench.settings import WorkbenchSettings
    from xietong.kafka import KafkaCredentialsError
    from xietong.settings import get_settings

    rules = WorkbenchSettings()
    overrides = {name: value for name, value in (("port", port), ("host", host)) if value}
    try:
        run_service(get_settings(), rules.model_copy(update=overrides))
    except (KafkaCredentialsError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
