"""The alert rules and the Prometheus configuration, checked by Prometheus's own promtool.

Every alert in ``deploy/prometheus/rules/`` has a unit test in
``deploy/prometheus/tests/`` (series in, alerts out, at given times), and
``promtool test rules`` runs them. promtool comes with Debian's ``prometheus`` package,
which ``make system`` installs; in CI these tests must run, elsewhere they are skipped
without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.local.stack.prometheus import PROMETHEUS_DIR, prometheus_config

RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
README = PROMETHEUS_DIR.parent / "README.md"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: make system installs Debian's prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus, or make system)")
    return path


def run(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alerts_in(files: list[Path]) -> set[str]:
    return {
        rule["alert"]
        for file in files
        for group in yaml.safe_load(file.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    fired = {
        case["alertname"]
        for file in RULE_TESTS
        for test in yaml.safe_load(file.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts_in(RULES) - fired == set()


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and GitLab make them."""
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_alert_links_its_runbook_section_in_the_deploy_readme() -> None:
    sections = anchors(README.read_text(encoding="utf-8"))
    for file in RULES:
        for group in yaml.safe_load(file.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule.get("annotations", {}).get("runbook_url")
                assert url, f"{file.name}: {rule['alert']} has no runbook_url"
                document, _, anchor = url.partition("#")
                assert document == "deploy/README.md", f"{rule['alert']}: {url}"
                assert anchor == rule["alert"].lower(), f"{rule['alert']}: {url}"
                assert anchor in sections, f"{rule['alert']}: no section #{anchor} in {README}"


def test_each_runbook_says_what_the_alert_means_what_to_check_and_what_to_do() -> None:
    runbooks = README.read_text(encoding="utf-8").partition("\n## Runbooks\n")[2]
    assert runbooks, "deploy/README.md has no Runbooks section"
    sections = re.split(r"^### ", runbooks, flags=re.MULTILINE)[1:]
    assert {section.split("\n", 1)[0].strip() for section in sections} == alerts_in(RULES)
    for section in sections:
        for part in ("**Means.**", "**Check.**", "**Do.**"):
            assert part in section, f"{section.split(chr(10), 1)[0]}: no {part}"


def test_the_rule_files_are_valid(promtool: str) -> None:
    run(promtool, "check", "rules", *RULES)


def test_the_alerts_fire_when_and_only_when_their_tests_say(promtool: str) -> None:
    output = run(promtool, "test", "rules", *RULE_TESTS)
    assert output.count("SUCCESS") == len(RULE_TESTS)


def test_the_docker_and_the_local_configurations_are_valid(promtool: str, tmp_path: Path) -> None:
    run(promtool, "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(prometheus_config()), encoding="utf-8")
    run(promtool, "check", "config", local)


def test_the_local_configuration_scrapes_each_job_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XIETONG_REGISTRY_PORT", "18410")
    monkeypatch.delenv("XIETONG_DUAL_NOTICE_METRICS_PORT", raising=False)
    config = prometheus_config()
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["registry"] == ["127.0.0.1:18410"]
    assert targets["dual-notice"] == ["127.0.0.1:9465"]
    assert all(t.startswith("127.0.0.1:") for job in targets.values() for t in job)
    assert config["rule_files"] == [str(PROMETHEUS_DIR / "rules" / "*.yml")]
