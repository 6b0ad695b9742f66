"""The deployment files, validated offline with the tools that know their formats: hadolint
(Dockerfile), docker-compose config (the Compose stack), cfn-lint (the CloudFormation
template), systemd-analyze (the unit). No Docker engine or AWS account is needed.

A missing tool skips its test on a developer's machine but fails it in CI (CI is set), where
.ci/run and the dev extra provide every one of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
TEMPLATE = REPO / "deploy/cloudformation/worker-fleet.yaml"
UNIT = REPO / "deploy/systemd/etl-worker.service"


def tool(name: str) -> str:
    """The tool's path: next to this Python (the dev extra's) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: .ci/run must provide it in CI")
        pytest.skip(f"{name} is not installed")
    return found


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "Dockerfile")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_image_health_check_pings_the_node_name_its_worker_command_gives() -> None:
    text = (REPO / "Dockerfile").read_text()

    assert '"--hostname", "worker@%h"' in text
    assert 'inspect ping --destination \\"worker@$HOSTNAME\\"' in text
    # tini forwards SIGTERM to Celery's main process alone (-g would hit the pool too).
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("docker-compose"), "-f", str(COMPOSE), "--env-file", str(env_file), "config")


def test_the_compose_stack_is_valid_with_the_example_env(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    shutil.copy(REPO / ".env.example", env_file)

    result = compose_config(env_file)

    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "worker",
        "flower",
        "seed",
        "enqueue",
        "rabbitmq",
        "worker-rabbitmq",
        "enqueue-rabbitmq",
    }  # fmt: skip (no sweeper: the workers sweep)
    # RabbitMQ instead of Redis: its own profile, the same worker on an amqp:// URL.
    for name in ("rabbitmq", "worker-rabbitmq", "enqueue-rabbitmq"):
        assert services[name]["profiles"] == ["rabbitmq"]
    rabbit_worker = services["worker-rabbitmq"]
    assert rabbit_worker["command"] == services["worker"]["command"]
    assert rabbit_worker["environment"]["ETL_BROKER_URL"] == (
        "amqp://etl:change-me-rabbitmq@rabbitmq:5672/"
    )
    assert "redis" not in rabbit_worker["depends_on"]
    assert (
        "consumer_timeout 2700000"
        in (services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"])
    )
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass change-me-redis" in redis_command
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    assert "--autoscale=4,1" in services["worker"]["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:change-me-flower"
    assert services["enqueue"]["depends_on"]["seed"]["condition"] == (
        "service_completed_successfully"
    )
    assert "container_name" not in services["worker"]  # or --scale worker=4 could not work


def test_the_compose_stack_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_USER=etl\n")

    result = compose_config(env_file)

    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_the_example_env_holds_placeholders_and_the_real_env_is_ignored_by_git() -> None:
    settings = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )

    passwords = {k: v for k, v in settings.items() if k.endswith("PASSWORD")}
    assert set(passwords) == {
        "POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_PASSWORD"
    }  # fmt: skip
    assert all(v.startswith("change-me") for v in passwords.values())
    ignored = run("git", "check-ignore", "--no-index", ".env")
    assert ignored.stdout.strip() == ".env"


def test_the_cloudformation_template_passes_cfn_lint() -> None:
    result = run(tool("cfn-lint"), str(TEMPLATE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_systemd_unit_stops_only_the_main_process_and_waits_for_partitions(
    tmp_path: Path,
) -> None:
    # verify insists that ExecStart exists: point it at this virtualenv's celery.
    unit = tmp_path / "etl-worker.service"
    celery = Path(sys.executable).parent / "celery"
    unit.write_text(UNIT.read_text().replace("/opt/etl-worker/.venv/bin/celery", str(celery)))

    result = run(tool("systemd-analyze"), "verify", str(unit))

    assert result.returncode == 0 and result.stderr == "", result.stderr
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["KillMode"] == "mixed"
    assert settings["KillSignal"] == "SIGTERM"
    assert int(settings["TimeoutStopSec"]) > 1800  # ETL_TASK_TIME_LIMIT's default


def test_the_lock_file_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["aws"],
        *project["project"]["optional-dependencies"]["report"],
        *project["dependency-groups"]["build"],
    ]
    lock = (REPO / "requirements.lock").read_text()
    pinned = {
        canonicalize_name(m.group(1))
        for m in re.finditer(r"^([A-Za-z0-9._-]+)==\S+", lock, flags=re.MULTILINE)
    }

    missing = {canonicalize_name(Requirement(r).name) for r in wanted} - pinned
    assert not missing, f"not in requirements.lock: {missing} — regenerate it (see its header)"
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)


def test_the_base_image_script_makes_exactly_the_images_the_dockerfile_and_compose_name() -> None:
    script = (REPO / "scripts/docker-base-images.sh").read_text()
    made = set(re.findall(r'^\s+"(\S+) \S+\.Dockerfile"$', script, flags=re.MULTILINE))
    dockerfile = (REPO / "Dockerfile").read_text()
    named = set(re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE))
    services = yaml.safe_load(COMPOSE.read_text())["services"].values()
    named |= {s["image"] for s in services if "build" not in s}

    assert made == named
    for dockerfile_name in re.findall(r'^\s+"\S+ (\S+\.Dockerfile)"$', script, re.MULTILINE):
        assert (REPO / "scripts/base-images" / dockerfile_name).is_file()
