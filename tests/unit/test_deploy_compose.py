"""deploy/docker-compose.yml runs the whole platform, and is a valid Compose file.

The schema is the Compose specification's, as check-jsonschema vendors it (its builtin
``vendor.compose-spec``, taken from github.com/compose-spec/compose-spec,
``schema/compose-spec.json``; pinned through the check-jsonschema version in
pyproject.toml), so the check needs no network and no Docker.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.run import services
from deploy.local.stack.prometheus import PROMETHEUS_DIR
from xietong.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
PASSWORD_KEYS = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def scrape_targets() -> dict[str, list[str]]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_of_xietong_run_has_a_compose_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    names = {service.name for service in services(Settings(home=tmp_path), tmp_path)}
    assert names - set(compose["services"]) == set()


def test_every_scrape_target_is_a_compose_service_answering_on_that_port(
    compose: dict[str, Any],
) -> None:
    for job, targets in scrape_targets().items():
        for target in targets:
            host, port = target.rsplit(":", 1)
            assert host in compose["services"], f"job {job}: {host} is no compose service"
            probe = " ".join(compose["services"][host]["healthcheck"]["test"])
            assert f":{port}/" in probe, f"job {job}: {host}'s healthcheck is not on :{port}"


def test_every_long_running_platform_service_has_a_healthcheck_and_a_scrape_job(
    compose: dict[str, Any],
) -> None:
    scraped = {target.rsplit(":", 1)[0] for t in scrape_targets().values() for target in t}
    for name, service in compose["services"].items():
        if service.get("image") == "xietong" and service.get("restart") != "no":
            assert "healthcheck" in service, name
            assert name in scraped, f"{name} runs but Prometheus does not scrape it"


def test_setup_steps_run_once_and_what_needs_them_waits_for_their_success(
    compose: dict[str, Any],
) -> None:
    steps = {n for n, s in compose["services"].items() if s.get("restart") == "no"}
    assert steps >= {
        "topics",
        "schemas",
        "registry-migrate",
        "registry-catalog",
        "registry-onboard",
        "registry-publish",
        "sink-migrate",
    }
    for name, service in compose["services"].items():
        for needed, condition in service.get("depends_on", {}).items():
            if needed in steps:
                assert condition["condition"] == "service_completed_successfully", (
                    f"{name} waits for {needed} to start, not to succeed"
                )
    for name in set(compose["services"]) - steps:
        depends = compose["services"][name].get("depends_on", {})
        assert all(dependency in compose["services"] for dependency in depends), name


def test_no_password_is_written_in_the_file(compose: dict[str, Any]) -> None:
    """Every secret is interpolated from deploy/.env or the environment, and required."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for url in re.findall(r"postgresql\+psycopg2://[^\s]+", text):
        assert "${XIETONG_POSTGRES_PASSWORD:?" in url, url
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if PASSWORD_KEYS.search(key) and value:
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
