"""The Grafana dashboards (deploy/grafana/dashboards/*.json): what deploy/grafana/dashboards.py
writes, each panel with at least one query, on the datasource of the dashboard's
``datasource`` variable (no datasource uid written in: they import into any Grafana).
That every query returns data from the running services is
tests/integration/test_monitoring.py's."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


def datasources(node: Any) -> Iterator[str]:
    """The uid of every datasource a dashboard names, anywhere in it."""
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]["uid"]
        for value in node.values():
            yield from datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasources(value)


def test_every_panel_and_variable_reads_the_dashboards_datasource_variable() -> None:
    """So a dashboard imports into an existing Grafana: no datasource uid is written in."""
    uids = set()
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uids.add(dashboard["uid"])
        variables = dashboard["templating"]["list"]
        assert variables[0]["name"] == "datasource", path.name
        assert variables[0]["type"] == "datasource"
        assert variables[0]["query"] == "prometheus"
        chosen = {"type": "prometheus", "uid": "${datasource}"}
        for variable in variables[1:]:
            assert variable["datasource"] == chosen, f"{path.name}: ${variable['name']}"
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, path.name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels:
            assert panel["datasource"] == chosen, f"{path.name}: {panel['title']}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            assert all(t["datasource"] == chosen for t in panel["targets"]), panel["title"]
        assert set(datasources(dashboard)) == {"${datasource}"}, path.name
    assert len(uids) == len(list((GRAFANA_DIR / "dashboards").glob("*.json")))


def test_the_provisioned_grafana_has_a_default_prometheus_for_the_variable_to_start_on() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    defaults = [d for d in provisioned["datasources"] if d.get("isDefault")]
    assert [d["type"] for d in defaults] == ["prometheus"]
