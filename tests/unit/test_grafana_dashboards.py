"""The Grafana dashboards (deploy/grafana/dashboards/*.json): what deploy/grafana/dashboards.py
writes, each panel on the provisioned Prometheus datasource with at least one query.
That every query returns data from the running services is
tests/integration/test_monitoring.py's."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import yaml

GRAFANA_DIR = Path(__file__).parents[2] / "deploy" / "grafana"


def dashboards_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboards", GRAFANA_DIR / "dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_json_files_are_what_the_generator_writes() -> None:
    module = dashboards_module()
    files = {path.stem for path in (GRAFANA_DIR / "dashboards").glob("*.json")}
    assert files == set(module.DASHBOARDS)
    for name, dashboard in module.DASHBOARDS.items():
        written = (GRAFANA_DIR / "dashboards" / f"{name}.json").read_text(encoding="utf-8")
        assert written == module.render(dashboard), (
            f"{name}.json is stale: run .venv/bin/python deploy/grafana/dashboards.py"
        )


def test_every_panel_queries_the_provisioned_prometheus_datasource() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    uids = set()
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uids.add(dashboard["uid"])
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, path.name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels:
            assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    assert len(uids) == len(list((GRAFANA_DIR / "dashboards").glob("*.json")))
