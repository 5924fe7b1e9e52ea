"""The Kubernetes manifests, validated against Kubernetes 1.31 with kubernetes-validate (its
bundled OpenAPI schemas, strict: an unknown field is an error), and complete: a worker per
site, API, trigger consumer, Flower, the migration Job, probes, resources, a pinned image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

KUBERNETES_VERSION = "1.31.0"
MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
SITES = ("stockholm", "gothenburg")


def documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return found


def named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_valid_for_the_stated_kubernetes_version(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    # the validator is live: a misspelt field of a Deployment is refused
    deployment = dict(named("Deployment")["ferryman-api"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_pieces_there_are() -> None:
    deployments = named("Deployment")
    assert {f"ferryman-worker-{site}" for site in SITES} | {
        "ferryman-api", "ferryman-triggers", "ferryman-commands", "ferryman-flower",
        "ferryman-beat",
    } == set(deployments)  # fmt: skip
    beat = deployments["ferryman-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    assert beat["template"]["spec"]["containers"][0]["args"][:2] == ["drills", "beat"]
    commands = deployments["ferryman-commands"]["spec"]["template"]["spec"]["containers"][0]
    assert commands["args"] == ["commands", "--key", "file:/run/secrets/ferryman/commands-key"]
    (job,) = named("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    secrets = named("Secret")
    for doc in [*deployments.values(), job]:
        pod = doc["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image
            assert container["resources"]["requests"] and container["resources"]["limits"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["FERRYMAN_DATABASE_URL_FILE"].startswith("/run/secrets/")
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "readinessProbe" in container and "livenessProbe" in container
        # every service waits for the migration Job before it starts
        assert pod["initContainers"][0]["name"] == "wait-for-schema"


def test_no_secret_values_in_the_manifests() -> None:
    for doc in documents():
        if doc["kind"] == "Secret":
            assert all("REPLACE-ME" in value for value in doc["stringData"].values())
        if doc["kind"] == "ConfigMap":
            assert not any("@" in value for value in doc["data"].values())
