"""deploy/k8s/ runs every platform service, and every manifest is valid.

Core kinds are validated by kubernetes-validate, which ships the Kubernetes API's JSON
schemas (no cluster, no network); Strimzi's kinds against the ``v1`` schemas of
Strimzi 1.2.0's CRDs, vendored in ``deploy/k8s/schemas/`` (its README gives the source).
A CRD schema lets unknown fields through (the API server prunes them without a word),
so here every object that declares its properties accepts no other: a misspelt field
fails the test instead of vanishing on the cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.run import services
from deploy.k8s import strimzi
from deploy.local.stack.prometheus import local_ports
from xietong.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
#: The oldest Kubernetes the manifests are for (podFailurePolicy needs 1.26), and the newest
#: whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
#: What each service's HTTP server really serves besides /metrics, from its source.
HTTP_ENDPOINTS = {
    "registry": ROOT / "registry" / "api.py",
    "credit-check": ROOT / "streams" / "credit_check" / "api.py",
    "inbox": ROOT / "connectors" / "inbox" / "api.py",
    "workbench": ROOT / "app" / "workbench" / "web.py",
}
#: Started by `xietong run` but not in Kubernetes: the local stack's demonstration.
NOT_DEPLOYED = {"simulator"}


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                yield path, document


def documents(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever an object lists its
    properties and neither allows more nor keeps unknown fields."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@cache
def strimzi_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}-v1.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    return validator_class(closed(schema))


@pytest.mark.parametrize(
    ("path", "document"),
    [
        pytest.param(p, d, id=f"{p.relative_to(K8S)}:{d['kind']}/{d['metadata']['name']}")
        for p, d in manifests()
    ],
)
def test_every_manifest_is_valid_under_its_schema(path: Path, document: dict[str, Any]) -> None:
    if document["apiVersion"].startswith("kafka.strimzi.io/"):
        assert document["apiVersion"] == "kafka.strimzi.io/v1", "the vendored schemas are v1"
        errors = sorted(strimzi_validator(document["kind"]).iter_errors(document), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelt_strimzi_field_fails_the_check() -> None:
    (user,) = [u for u in documents("KafkaUser") if u["metadata"]["name"] == "svc-sink"]
    wrong = json.loads(json.dumps(user))
    wrong["spec"]["authorization"]["acls"][0]["operation"] = "Read"  # v1 says operations
    assert list(strimzi_validator("KafkaUser").iter_errors(wrong))


def test_every_kustomization_names_files_that_exist_and_patches_what_it_builds() -> None:
    def build(folder: Path) -> list[dict[str, Any]]:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        built: list[dict[str, Any]] = []
        for resource in kustomization["resources"]:
            target = (folder / resource).resolve()
            assert target.exists(), f"{folder}: {resource} does not exist"
            if target.is_dir():
                built += build(target)
            else:
                built += [d for d in yaml.safe_load_all(target.read_text()) if d]
        for patch in kustomization.get("patches", []):
            wanted = patch["target"]
            assert any(
                d["kind"] == wanted["kind"] and d["metadata"]["name"] == wanted["name"]
                for d in built
            ), f"{folder}: the patch of {wanted} matches nothing"
        return built

    for folder in ("base", "strimzi", "existing-cluster"):
        assert build(K8S / folder)


def test_the_strimzi_resources_are_what_the_declarations_say() -> None:
    for path, text in strimzi.files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale: run .venv/bin/python deploy/k8s/strimzi.py"
        )


def test_under_strimzi_the_registry_acl_reconciler_is_switched_off() -> None:
    kustomization = yaml.safe_load((K8S / "strimzi" / "kustomization.yaml").read_text())
    operations = [
        op
        for patch in kustomization["patches"]
        if patch["target"]["kind"] == "ConfigMap"
        for op in yaml.safe_load(patch["patch"])
    ]
    assert {"op": "replace", "path": "/data/XIETONG_REGISTRY_ACL_RECONCILER", "value": "false"} in (
        operations
    )
    (config,) = documents("ConfigMap")
    assert config["data"]["XIETONG_REGISTRY_ACL_RECONCILER"] == "true"  # the base's default


@pytest.fixture
def default_ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int | None]:
    """Each service's port as its settings give it with no XIETONG_* variable set."""
    for name in list(os.environ):
        if name.startswith("XIETONG_"):
            monkeypatch.delenv(name)
    return local_ports(Settings(home=tmp_path))


def workloads() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for _, doc in manifests()
        if doc["kind"] in ("Deployment", "StatefulSet")
    }


def test_every_service_of_xietong_run_has_a_workload_with_probes_and_resources(
    default_ports: dict[str, int | None], tmp_path: Path
) -> None:
    deployed = workloads()
    for service in services(Settings(home=tmp_path), tmp_path):
        if service.name in NOT_DEPLOYED:
            continue
        assert service.name in deployed, f"{service.name} has no Deployment or StatefulSet"
        (container,) = deployed[service.name]["spec"]["template"]["spec"]["containers"]
        (port,) = container["ports"]
        assert port["containerPort"] == default_ports[service.name], service.name
        served = {"/metrics"}
        if service.name in HTTP_ENDPOINTS:
            source = HTTP_ENDPOINTS[service.name].read_text(encoding="utf-8")
            served |= {path for path in ("/ready", "/health") if f'"{path}"' in source}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert path in served, f"{service.name}'s {probe} asks {path}, which it does not serve"
        if "/ready" in served:
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready", service.name
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), service.name
        assert "memory" in resources["limits"], service.name


def test_processors_with_tables_on_disk_are_stateful_sets() -> None:
    for name in ("dual-notice", "joint-punishment"):
        workload = workloads()[name]
        assert workload["kind"] == "StatefulSet"
        assert workload["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "home"


REGISTRY_USER = "xietong-schema-registry"


def test_credentials_come_from_secrets_that_strimzi_makes() -> None:
    """No manifest applied holds a password; every Kafka password is the Secret the User
    Operator writes for a KafkaUser of users.yaml, and nothing else reads settings but the
    ConfigMap, the database Secret and the schema registry's user's (optional: made only
    where the registry asks for authentication)."""
    users = {u["metadata"]["name"] for u in documents("KafkaUser")}
    for path, doc in manifests():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
            assert sources <= {"xietong-settings", "xietong-databases", REGISTRY_USER}, path
            for source in container["envFrom"]:
                if source.get("secretRef", {}).get("name") == REGISTRY_USER:
                    assert source["secretRef"]["optional"] is True, path
            for variable in container.get("env", []):
                if "PASSWORD" in variable["name"]:
                    secret = variable["valueFrom"]["secretKeyRef"]
                    assert secret["key"] == "password"
                    assert secret["name"] in users, f"{path}: no KafkaUser {secret['name']}"
    for path in K8S.rglob("*.yaml"):
        if not path.name.endswith(".template.yaml"):
            assert "kind: Secret\n" not in path.read_text(encoding="utf-8"), path
