"""The repository's docker-compose.yml brought up as a project of a test's own, and the
Docker calls the container tests make on its containers.

A project has a unique name, its own `.env` (random passwords) and an override file next
to it; `down()` removes its containers, networks and volumes, also those compose lost track
of. Compose v2 (`docker compose`) is used where installed, else Debian's `docker-compose`.
The image is built once (`build_image`) and named by ETL_IMAGE, so compose builds nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
#: The tag the container tests build and run (compose's own default is etl-worker:latest).
TEST_IMAGE = "etl-worker:test"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """`docker ARGS`; its stdout. Fails the test with docker's stderr when it fails."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result.stdout


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def compose_command() -> list[str]:
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if found.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("neither `docker compose` nor docker-compose is installed")


def build_image(tag: str, log: Path) -> None:
    """`docker build` of the repository. --network host: the engine may give containers no
    route out (scripts/docker-engine.sh), and the build fetches the locked wheels."""
    with open(log, "w") as out:
        result = subprocess.run(
            ["docker", "build", "--network", "host", "--force-rm", "-t", tag, str(REPO)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise AssertionError(f"docker build of {REPO} failed:\n{tail}")


def state(container: str, template: str) -> str:
    """One field of `docker inspect`, by Go template."""
    return docker("inspect", "--format", template, container).strip()


def health(container: str) -> str:
    """starting, healthy or unhealthy ('' for a container without a health check)."""
    return state(container, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")


def main_process(container: str) -> int:
    """Host PID of the process tini (the container's PID 1) runs: Celery's main process."""
    tini = state(container, "{{.State.Pid}}")
    children = Path(f"/proc/{tini}/task/{tini}/children").read_text().split()
    assert len(children) == 1, f"tini in {container} has children {children}"
    return int(children[0])


def logs(container: str, *options: str) -> str:
    """The container's output, stdout and stderr (Celery logs to stderr)."""
    result = subprocess.run(
        ["docker", "logs", *options, container],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


@dataclass
class ComposeProject:
    """docker-compose.yml plus `override` (a Compose mapping merged over it), under a unique
    project name, with `env` (the .env) on top of .env.example's demo values."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"etltest{uuid.uuid4().hex[:10]}")

    def __post_init__(self) -> None:
        self.env = {
            "POSTGRES_USER": "etl",
            "POSTGRES_DB": "etl",
            "POSTGRES_PASSWORD": secrets.token_hex(12),
            "REDIS_PASSWORD": secrets.token_hex(12),
            "RABBITMQ_PASSWORD": secrets.token_hex(12),  # the rabbitmq profile
            "FLOWER_PASSWORD": secrets.token_hex(12),
            "ETL_IMAGE": TEST_IMAGE,
            # The tests' gate transforms live in tests.support.transforms: on the allow-list
            # of every service, as an operator lists their own transforms' package.
            "ETL_TRANSFORM_MODULES": "tests.support.transforms",
            **self.env,
        }
        env_file = self.directory / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        override_file = self.directory / "docker-compose.override.yml"
        override_file.write_text(yaml.safe_dump(self.override))
        self._command = [
            *compose_command(),
            "--project-name",
            self.name,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(env_file),
            "--file",
            str(COMPOSE_FILE),
            "--file",
            str(override_file),
        ]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        """`docker compose ARGS` on this project; its stdout."""
        # Only the .env file sets the stack's variables, never this process's environment.
        env = {k: v for k, v in os.environ.items() if k not in self.env}
        result = subprocess.run(
            [*self._command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result.stdout

    def containers(self, service: str, *, running: bool = False) -> list[str]:
        """IDs of the service's containers (only running ones with running=True)."""
        filters = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        ids = docker("ps", "--quiet", "--no-trunc", *([] if running else ["--all"]), *filters)
        return sorted(ids.split())

    def container(self, service: str) -> str:
        (found,) = self.containers(service)
        return found

    def node(self, container: str) -> str:
        """The Celery node name the worker command gives: worker@<container hostname>."""
        return "worker@" + state(container, "{{.Config.Hostname}}")

    def database_url(self) -> str:
        """The stack's Postgres, through the port the override publishes on 127.0.0.1."""
        port = docker("port", self.container("postgres"), "5432/tcp").split(":")[-1].strip()
        e = self.env
        return f"postgresql://{e['POSTGRES_USER']}:{e['POSTGRES_PASSWORD']}@127.0.0.1:{port}/etl"

    def save_logs(self, path: Path) -> None:
        """Every container's output, timestamped, for a failed test to be read after."""
        path.write_text(self("logs", "--no-color", "--timestamps", timeout=120))

    def down(self, *options: str) -> None:
        """Containers, networks and volumes gone, whatever state the project is in.
        `options` go before `down` (the profile the project was brought up with)."""
        try:
            self(*options, "down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180)
        finally:
            label = f"label={PROJECT_LABEL}={self.name}"
            left = docker("ps", "--all", "--quiet", "--filter", label, check=False).split()
            if left:
                docker("rm", "--force", "--volumes", *left, check=False)
            for kind in ("network", "volume"):
                names = docker(kind, "ls", "--quiet", "--filter", label, check=False).split()
                if names:
                    docker(kind, "rm", *names, check=False)
