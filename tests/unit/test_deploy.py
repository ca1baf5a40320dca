"""The Kubernetes manifests: valid offline against Kubernetes' schemas, and true to the code.

`kubectl kustomize` is not installed here (and nothing may be downloaded), so `build` renders
the overlays with the small part of kustomize they use — and refuses any other field, so a
manifest never silently means something else to the real tool.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.common.queue import JOB_TIMEOUT_S
from services.common.settings import SERVICE_NAMES, Settings
from services.runtime import cli
from services.runtime.envoy import (
    DESCRIPTOR,
    IMAGE_DESCRIPTOR,
    KUBERNETES_CONFIG,
    PUBLIC_SERVICES,
    render_kubernetes,
    validate,
)
from services.runtime.platform import WORKER_KINDS, processes

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = sorted(path for path in (KUBERNETES / "overlays").iterdir() if path.is_dir())
# The oldest Kubernetes the manifests promise to run on (native gRPC probes, preStop sleep),
# and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.33", kubernetes_validate.utils.latest_version())
SECRET_NAME = "paymesh-secrets"
CONFIG_NAME = "paymesh-config"
# processes() entries with no Deployment, and why.
LOCAL_ONLY = {"demo-shop": "the demo merchant's web shop that `make up` runs; no part of paymesh"}
# Relays and sweepers: a fixed count (see workers.yaml for why), no autoscaler.
FIXED_REPLICAS = {"payment-relay", "webhook-sweeper"}
DEFAULTS = Settings.model_construct()
# kubernetes-validate reads and parses its (large) schema files on every call: parse them once.
kubernetes_validate.utils.schema_contents = functools.cache(
    kubernetes_validate.utils.schema_contents
)

Resource = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# The part of kustomize these manifests use.

_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "patches",
    "configMapGenerator",
}


def _documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(target: Resource, patch: Resource) -> None:
    """A strategic merge: maps merge, lists of named items merge by name, others replace."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and all(isinstance(item, dict) and "name" in item for item in value + current)
        ):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _pod_specs(resources: list[Resource]) -> Iterator[Resource]:
    for resource in resources:
        if resource["kind"] in ("Deployment", "Job"):
            yield resource["spec"]["template"]["spec"]


def _containers(resources: list[Resource]) -> Iterator[Resource]:
    for spec in _pod_specs(resources):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _rename_config_maps(resources: list[Resource], names: dict[str, str]) -> None:
    for spec in _pod_specs(resources):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = names.get(
                    volume["configMap"]["name"], volume["configMap"]["name"]
                )
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = names.get(ref["name"], ref["name"])


def build(directory: Path) -> list[Resource]:
    """What `kubectl kustomize <directory>` prints, for the fields these manifests use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomize fields this check does not model: {unknown}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += build(path) if path.is_dir() else _documents(path)
    generated: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        if set(generator) != {"name", "files"}:
            raise ValueError(f"{directory}: unmodelled generator options {set(generator)}")
        data = {Path(name).name: (directory / name).read_text() for name in generator["files"]}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        generated[generator["name"]] = f"{generator['name']}-{digest}"
        resources.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generated[generator["name"]]},
                "data": data,
            }
        )
    _rename_config_maps(resources, generated)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only strategic-merge patch files are modelled")
        for document in _documents(directory / patch["path"]):
            target = _find(resources, document["kind"], document["metadata"]["name"])
            _merge(target, document)
    for image in kustomization.get("images", []):
        for container in _containers(resources):
            if container["image"].rsplit(":", 1)[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if "namespace" in kustomization:
        for resource in resources:
            # kustomize renames Namespace objects too (kubernetes-sigs/kustomize#2953).
            field = "name" if resource["kind"] == "Namespace" else "namespace"
            resource["metadata"][field] = kustomization["namespace"]
    return resources


def _find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(matches) != 1:
        raise LookupError(f"{kind}/{name}: {len(matches)} matches")
    return matches[0]


def _of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def _env_names(container: Resource, config: Resource) -> set[str]:
    names = {variable["name"] for variable in container.get("env", [])}
    for source in container.get("envFrom", []):
        if source.get("configMapRef", {}).get("name") == CONFIG_NAME:
            names |= set(config["data"])
    return names


BUILDS = {path.name: build(path) for path in [BASE, *OVERLAYS]}


# ---------------------------------------------------------------------------------------------
# The renderer itself.


def test_build__refuses_kustomize_fields_it_does_not_model(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        build(tmp_path)


def test_build__patches_merge_named_list_items_and_replace_scalars(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [d.yaml]\npatches: [{path: p.yaml}]\nnamespace: ns\n"
    )
    (tmp_path / "d.yaml").write_text(
        "kind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1, template: {spec: "
        "{containers: [{name: a, image: img}, {name: b, image: img}]}}}\n"
    )
    (tmp_path / "p.yaml").write_text(
        "kind: Deployment\nmetadata: {name: d}\nspec: {replicas: 3, template: {spec: "
        "{containers: [{name: b, image: other}]}}}\n"
    )
    [deployment] = build(tmp_path)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["namespace"] == "ns"
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("a", "img"), ("b", "other")]


# ---------------------------------------------------------------------------------------------
# Valid Kubernetes.


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_manifests_validate_against_kubernetes_schemas(name: str, version: str) -> None:
    failures = []
    for resource in BUILDS[name]:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as error:
            failures.append(f"{resource['kind']}/{resource['metadata']['name']}: {error}")
    assert not failures, "\n".join(failures)


def test_schema_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(_find(BUILDS["base"], "Deployment", "payment"))
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["readinessProbe"]["grpc"]["service_name"] = container["readinessProbe"]["grpc"].pop(
        "service"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_names_are_unique_per_kind() -> None:
    for resources in BUILDS.values():
        keys = [(r["kind"], r["metadata"]["name"]) for r in resources]
        assert len(keys) == len(set(keys))


def test_overlays_put_everything_in_their_namespace_and_create_it() -> None:
    for overlay in OVERLAYS:
        wanted = yaml.safe_load((overlay / "kustomization.yaml").read_text())["namespace"]
        # The Namespace object as written, before kustomize would rename it.
        [written] = [
            doc
            for path in overlay.glob("*.yaml")
            for doc in _documents(path)
            if doc.get("kind") == "Namespace"
        ]
        assert written["metadata"]["name"] == wanted
        assert written["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        resources = BUILDS[overlay.name]
        assert {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"} == {
            wanted
        }


# ---------------------------------------------------------------------------------------------
# True to the code.


def test_every_process_has_a_deployment_and_every_deployment_a_process() -> None:
    local = set(processes(DEFAULTS)) - set(LOCAL_ONLY)
    for resources in BUILDS.values():
        assert set(_of_kind(resources, "Deployment")) == local


def test_every_command_runs_a_module_that_exists() -> None:
    for container in _containers(BUILDS["base"]):
        command = container["command"]
        if command[0] == "envoy":
            continue
        assert command[:2] == ["python", "-m"], command
        assert importlib.util.find_spec(command[2]) is not None, f"no module {command[2]}"


def test_deployments_run_what_the_local_platform_runs() -> None:
    local = processes(DEFAULTS)
    for name, deployment in _of_kind(BUILDS["base"], "Deployment").items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        command, expected = container["command"], local[name]
        assert Path(command[0]).name == Path(expected[0]).name, name
        if command[0] == "python":
            assert command[1:] == expected[1:], name


def test_migration_job_runs_the_migrate_command() -> None:
    [job] = _of_kind(BUILDS["base"], "Job").values()
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", cli.__name__]
    arguments = cli.parser().parse_args(container["command"][3:])
    assert arguments.func is cli.cmd_migrate
    names = _env_names(container, _find(BUILDS["base"], "ConfigMap", CONFIG_NAME))
    assert {"PAYMESH_DATABASE_URL", "PAYMESH_REDIS_URL"} <= names


def test_services_listen_where_the_settings_say() -> None:
    resources = BUILDS["base"]
    services = _of_kind(resources, "Service")
    for name in SERVICE_NAMES:
        deployment = _find(resources, "Deployment", name)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"grpc": DEFAULTS.grpc_port(name), "metrics": DEFAULTS.metrics_port(name)}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(DEFAULTS.metrics_port(name))
        service = services[name]
        # Headless, so the DNS name lists every ready pod for Envoy and the gRPC clients.
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        [port] = service["spec"]["ports"]
        assert port["port"] == DEFAULTS.grpc_port(name)
        assert port["targetPort"] == "grpc"


def test_probes_ask_grpc_health_of_the_service_envoy_checks() -> None:
    for name in SERVICE_NAMES:
        deployment = _find(BUILDS["base"], "Deployment", name)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        port = DEFAULTS.grpc_port(name)
        assert container["readinessProbe"]["grpc"] == {
            "port": port,
            "service": PUBLIC_SERVICES[name][0],
        }
        assert container["livenessProbe"]["grpc"] == {"port": port}
        assert container["startupProbe"]["grpc"] == {"port": port}


def test_pods_get_time_to_leave_the_rotation_and_drain_before_being_killed() -> None:
    resources = BUILDS["base"]
    grace_period_s = float(
        _find(resources, "ConfigMap", CONFIG_NAME)["data"]["PAYMESH_GRACE_PERIOD_S"]
    )
    for name in SERVICE_NAMES:
        spec = _find(resources, "Deployment", name)["spec"]["template"]["spec"]
        [container] = spec["containers"]
        sleep_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        # Long enough for Envoy to fail two health checks, 2 s apart, and stop routing there.
        assert sleep_s >= 2 * 2 + 1
        assert sleep_s + grace_period_s < spec["terminationGracePeriodSeconds"]
    for kind in WORKER_KINDS:
        spec = _find(resources, "Deployment", kind)["spec"]["template"]["spec"]
        # A warm shutdown lets the job in hand finish.
        assert spec["terminationGracePeriodSeconds"] > JOB_TIMEOUT_S


def test_envoy_is_exposed_on_the_edge_port_and_probed_through_its_admin() -> None:
    resources = BUILDS["base"]
    deployment = _find(resources, "Deployment", "envoy")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": DEFAULTS.http_port}]
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert f"127.0.0.1:{DEFAULTS.envoy_admin_port}/ready" in probe
    [port] = _find(resources, "Service", "envoy")["spec"]["ports"]
    assert port["port"] == DEFAULTS.http_port
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_path = Path(container["command"][container["command"].index("-c") + 1])
    assert str(config_path.parent) == mounted["config"]
    [volume] = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    ]
    config_map = _find(resources, "ConfigMap", volume["configMap"]["name"])
    assert config_path.name in config_map["data"]


def test_webapps_listen_where_the_settings_say() -> None:
    resources = BUILDS["base"]
    deployment = _find(resources, "Deployment", "webapps")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": DEFAULTS.webapps_port}]
    service = _find(resources, "Service", "webapps")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    [port] = service["spec"]["ports"]
    assert port["port"] == DEFAULTS.webapps_port


def test_targets_name_the_services_and_their_ports() -> None:
    config = _find(BUILDS["base"], "ConfigMap", CONFIG_NAME)["data"]
    for name in SERVICE_NAMES:
        assert config[f"PAYMESH_{name.upper()}_TARGET"] == f"{name}:{DEFAULTS.grpc_port(name)}"
    assert config["PAYMESH_BIND_HOST"] == "0.0.0.0"  # noqa: S104 - a pod listens on its IP


def test_every_paymesh_variable_is_a_setting() -> None:
    fields = {f"PAYMESH_{name.upper()}" for name in Settings.model_fields}
    for resources in BUILDS.values():
        names: set[str] = set()
        for config_map in _of_kind(resources, "ConfigMap").values():
            names |= {key for key in config_map["data"] if key.startswith("PAYMESH")}
        for container in _containers(resources):
            names |= {v["name"] for v in container.get("env", [])}
        assert names, "no settings found: the check would pass vacuously"
        assert names <= fields, f"not settings: {sorted(names - fields)}"


def test_secrets_are_referenced_never_included() -> None:
    secret_fields = {
        f"PAYMESH_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation) or name in ("database_url", "redis_url")
    }
    for resources in BUILDS.values():
        assert not _of_kind(resources, "Secret")
        for config_map in _of_kind(resources, "ConfigMap").values():
            assert not secret_fields & set(config_map["data"])
        for container in _containers(resources):
            for variable in container.get("env", []):
                if variable["name"] in secret_fields:
                    reference = variable["valueFrom"]["secretKeyRef"]
                    assert reference["name"] == SECRET_NAME
                    assert "value" not in variable


def _source_of(module: str) -> str:
    """The code a process runs: its service's whole package, or the module alone."""
    parts = module.split(".")
    if parts[1] in SERVICE_NAMES:
        paths = sorted((ROOT / "services" / parts[1]).glob("*.py"))
    else:
        paths = [ROOT.joinpath(*parts).with_suffix(".py")]
    assert paths and all(path.exists() for path in paths), module
    return "\n".join(path.read_text() for path in paths)


def test_each_process_gets_the_secrets_its_service_reads() -> None:
    """A process that would fail at start for want of a secret is caught here, not at deploy."""
    resources = BUILDS["base"]
    config = _find(resources, "ConfigMap", CONFIG_NAME)
    checked = 0
    for name, deployment in _of_kind(resources, "Deployment").items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        if container["command"][0] != "python":
            continue
        source = _source_of(container["command"][2])
        given = _env_names(container, config)
        needed = set()
        if re.search(r"require_database_url|database_url", source):
            needed.add("PAYMESH_DATABASE_URL")
        if re.search(r"redis_connection|require_redis_url|run_worker", source):
            needed.add("PAYMESH_REDIS_URL")
        for secret in ("card_fingerprint_key", "secret_encryption_key", "page_token_key"):
            if secret in source:
                needed.add(f"PAYMESH_{secret.upper()}")
        assert needed <= given, f"{name} lacks {sorted(needed - given)}"
        checked += 1
    assert checked >= len(SERVICE_NAMES)


def test_every_container_has_requests_limits_and_a_locked_down_context() -> None:
    for resources in BUILDS.values():
        for spec in _pod_specs(resources):
            assert spec["automountServiceAccountToken"] is False
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in spec["containers"]:
                resources_ = container["resources"]
                assert set(resources_["requests"]) == {"cpu", "memory"}
                assert set(resources_["limits"]) == {"cpu", "memory"}
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert container["image"].rsplit(":", 1)[0].endswith("paymesh")


# Peak resident memory measured under load (docs/scaling.md, "Resources, from measured figures").
MEASURED_PEAK_MIB = {
    "payment": 106,
    "ledger": 96,
    "webhook": 107,
    "admin": 95,
    "payment-worker": 131,
    "payment-relay": 94,
    "webhook-worker": 94,
    "webhook-sweeper": 98,
    "envoy": 70,
    "webapps": 48,
}


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_memory_requests_cover_the_measured_peak_and_limits_leave_room() -> None:
    deployments = _of_kind(BUILDS["base"], "Deployment")
    assert set(MEASURED_PEAK_MIB) == set(deployments)
    for name, peak_mib in MEASURED_PEAK_MIB.items():
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert _mebibytes(container["resources"]["requests"]["memory"]) >= peak_mib, name
        assert _mebibytes(container["resources"]["limits"]["memory"]) >= 1.8 * peak_mib, name


def test_every_deployment_has_a_disruption_budget_and_autoscaling_unless_fixed() -> None:
    for resources in BUILDS.values():
        budgets = _of_kind(resources, "PodDisruptionBudget")
        autoscalers = _of_kind(resources, "HorizontalPodAutoscaler")
        for name, deployment in _of_kind(resources, "Deployment").items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            selector = budgets[name]["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), name
            if name in FIXED_REPLICAS:
                assert name not in autoscalers
                assert deployment["spec"]["replicas"] >= 1
                continue
            target = autoscalers[name]["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) == ("Deployment", name)
            # The autoscaler owns the count; a `replicas` here would fight it on every apply.
            assert "replicas" not in deployment["spec"], name
            spec = autoscalers[name]["spec"]
            assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]


# ---------------------------------------------------------------------------------------------
# Envoy's configuration comes from the same template as the local one.


def test_committed_envoy_config_is_a_fresh_render() -> None:
    assert KUBERNETES_CONFIG.read_text() == render_kubernetes(), (
        "deploy/kubernetes/base/envoy.yaml is stale: run `make gen` "
        "(or `.venv/bin/python -m services.runtime.envoy --kubernetes`)"
    )


def test_kubernetes_envoy_config_routes_to_the_services_by_dns_name() -> None:
    config = yaml.safe_load(render_kubernetes())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    ports: dict[str, int] = {name: DEFAULTS.grpc_port(name) for name in SERVICE_NAMES}
    ports["webapps"] = DEFAULTS.webapps_port
    assert set(clusters) == set(ports)
    for name, cluster in clusters.items():
        assert cluster["type"] == "STRICT_DNS"
        [group] = cluster["load_assignment"]["endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"] for e in group["lb_endpoints"]]
        # Each a Service of the manifests, on the port that Service exposes.
        assert addresses == [{"address": name, "port_value": ports[name]}]
        [service_port] = _find(BUILDS["base"], "Service", name)["spec"]["ports"]
        assert service_port["port"] == ports[name]
    [listener] = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == DEFAULTS.http_port
    assert str(IMAGE_DESCRIPTOR) in KUBERNETES_CONFIG.read_text()


def test_kubernetes_envoy_config_is_accepted_by_envoy() -> None:
    validate(render_kubernetes(descriptor=DESCRIPTOR))
