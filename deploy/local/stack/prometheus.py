"""Prometheus from the Debian packages, as an optional service of the local stack.

``xietong stack up --with-prometheus`` starts it on ``XIETONG_PROMETHEUS_PORT`` (9090)
with its data in ``.local/prometheus/``. Its configuration is written from
``deploy/prometheus/prometheus.yml`` — the Docker deployment's — at every start: the
same jobs and alert rules, every target moved to 127.0.0.1 on the port the service's
own settings object gives (:func:`local_ports`). The UI, with the alerts, is at
``http://127.0.0.1:9090``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from deploy.local.stack.base import LocalService, require_tool
from xietong.settings import LOOPBACK, Settings

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "prometheus"
PROMETHEUS_HINT = "install Prometheus (Debian: apt-get install prometheus, or make system)"


def local_ports(settings: Settings | None = None) -> dict[str, int | None]:
    """Where each service listens on this machine, by its Prometheus job name: the port of
    its own settings object (``XIETONG_REGISTRY_PORT``, ``XIETONG_SINK_METRICS_PORT`` …),
    read afresh from the environment; None where a service serves no metrics. The one
    table of them: ``xietong run`` reads it too. (The Docker deployment uses the defaults.)
    """
    from app.workbench.settings import WorkbenchSettings
    from connectors.inbox.settings import InboxSettings
    from connectors.sink.sink import SinkSettings
    from connectors.webhooks.settings import WebhookSettings
    from registry.settings import RegistrySettings
    from streams.assistance.settings import AssistanceSettings
    from streams.credit_check.settings import CreditCheckSettings
    from streams.dual_notice.settings import DualNoticeSettings
    from streams.joint_punishment.settings import JointPunishmentSettings
    from streams.sharing.settings import SharingSettings

    settings = settings or Settings()
    return {
        "prometheus": settings.prometheus_port,
        "registry": RegistrySettings().port,
        "lag-exporter": settings.lag_exporter_port,
        "dual-notice": DualNoticeSettings().metrics_port,
        "joint-punishment": JointPunishmentSettings().metrics_port,
        "assistance": AssistanceSettings().metrics_port,
        "sharing": SharingSettings().metrics_port,
        "sink": SinkSettings().metrics_port,
        "credit-check": CreditCheckSettings().port,
        "inbox": InboxSettings().port,
        "webhooks": WebhookSettings().metrics_port,
        "workbench": WorkbenchSettings().port,
    }


def prometheus_config(
    targets: Mapping[str, Sequence[str]] | None = None,
    scrape_interval: str | None = None,
    template: Path = PROMETHEUS_DIR / "prometheus.yml",
) -> dict[str, Any]:
    """The template's configuration for processes on this machine.

    Every job keeps its name and path; its targets become ``127.0.0.1:<port>`` — or
    exactly ``targets[job]`` when given (tests scrape services on ports of their own).
    The rule files are the template's, by absolute path. A job without a port of its own
    (:func:`local_ports`) keeps the template's.
    """
    ports = local_ports()
    config: dict[str, Any] = yaml.safe_load(template.read_text(encoding="utf-8"))
    config["rule_files"] = [str(template.parent / pattern) for pattern in config["rule_files"]]
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if targets is not None and name in targets:
            job["static_configs"] = [{"targets": list(targets[name])}]
            continue
        for static in job.get("static_configs", []):
            static["targets"] = [
                f"{LOOPBACK}:{ports.get(name) or target.rsplit(':', 1)[1]}"
                for target in static["targets"]
            ]
    return config


class PrometheusServer(LocalService):
    """The Debian ``prometheus`` binary, scraping the platform's services on loopback."""

    name = "prometheus"
    port_setting = "XIETONG_PROMETHEUS_PORT"
    start_timeout = 60.0
    optional = True

    def __init__(
        self,
        settings: Settings,
        targets: Mapping[str, Sequence[str]] | None = None,
        scrape_interval: str | None = None,
    ) -> None:
        super().__init__(settings)
        self.targets = targets
        self.scrape_interval = scrape_interval

    @property
    def port(self) -> int:
        return self.settings.prometheus_port

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "prometheus.yml"

    def prepare(self) -> None:
        require_tool("prometheus", PROMETHEUS_HINT)
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        config = prometheus_config(self.targets, self.scrape_interval)
        # Prometheus scrapes itself where it really listens.
        for job in config["scrape_configs"]:
            if job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": [f"{LOOPBACK}:{self.port}"]}]
        self.config_file.write_text(
            "# Written by `xietong stack up --with-prometheus` from deploy/prometheus/;"
            " edit that instead.\n" + yaml.safe_dump(config, sort_keys=False),
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return [
            require_tool("prometheus", PROMETHEUS_HINT),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--storage.tsdb.retention.time=7d",
            "--web.enable-lifecycle",  # POST /-/reload reads the configuration again
        ]

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
