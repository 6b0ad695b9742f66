"""BENCHMARKS.md's Container section: the image's size and a worker container's cold start,
measured on a Compose project of its own (removed after).

    python -m tests.support.container_bench [--starts 5]

Needs a Docker engine and the base images (scripts/docker-engine.sh,
scripts/docker-base-images.sh). It builds the image as the container tests do, seeds a small
demo table, then, for each start: enqueues a run while no worker runs, starts one worker
container with `compose up`, and reads when the run's first partition was taken
(`started_at` in the audit table); the worker container is removed before the next start.
Prints Markdown to paste into BENCHMARKS.md (etl-bench keeps that section when it rewrites
the file).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from tests.support.compose import (
    TEST_IMAGE,
    ComposeProject,
    build_image,
    docker,
    health,
    logs,
    state,
)
from tests.support.data import scalar
from tests.support.services import wait_until

#: Published on a free loopback port, to read the audit table from here.
OVERRIDE = {"services": {"postgres": {"ports": ["127.0.0.1::5432"]}}}
DEMO = {"DEMO_ROWS": "2000", "DEMO_ZIPS": "10", "FLOWER_PORT": "0"}
BASE_IMAGES = ("python:3.11-slim-bookworm", "postgres:15-bookworm", "redis:7-bookworm")


@dataclass
class ColdStart:
    """Seconds from `compose up` of one worker: the container running, Celery's 'ready.'
    line, the run's first partition taken."""

    running: float
    ready: float
    first_task: float


def image_bytes(tag: str) -> int:
    return int(state(tag, "{{.Size}}"))


def compressed_bytes(tag: str) -> int:
    """`docker save` gzipped (level 6, as registries store layers): about what a pull moves."""
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    assert save.stdout is not None
    with tempfile.TemporaryFile() as sink:
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6) as out:
            while chunk := save.stdout.read(1 << 20):
                out.write(chunk)
        total = sink.tell()
    if save.wait() != 0:
        raise RuntimeError(f"docker save {tag} failed")
    return total


def timestamp(text: str) -> float:
    """An RFC 3339 time as docker prints it (nanoseconds cut to microseconds)."""
    date, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{date}.{(fraction + '000000')[:6]}+00:00").timestamp()


def ready_at(container: str) -> float:
    """When Celery logged 'ready.' in the container."""
    line = next(x for x in logs(container, "--timestamps").splitlines() if " ready." in x)
    return timestamp(line.split()[0])


def first_started(url: str, run_id: str) -> object:
    """Epoch seconds of the run's first claim (None before one)."""
    query = "SELECT extract(epoch FROM min(started_at)) FROM etl.partitions WHERE run_id = %s"
    return scalar(url, query, (run_id,))


def run_finished(url: str, run_id: str) -> object:
    query = "SELECT bool_and(state::text = 'finished') FROM etl.partitions WHERE run_id = %s"
    return scalar(url, query, (run_id,))


def cold_start(project: ComposeProject, url: str) -> ColdStart:
    run_id = project("run", "--rm", "--no-deps", "-T", "enqueue", "etl-enqueue", "--all-zips")
    run_id = run_id.splitlines()[0]
    began = time.time()
    project("up", "--detach", "--no-deps", "worker")
    worker = project.container("worker")
    taken = wait_until(lambda: first_started(url, run_id), 300, 0.05, "the first partition")
    assert isinstance(taken, (int, float, Decimal))
    result = ColdStart(
        running=timestamp(state(worker, "{{.State.StartedAt}}")) - began,
        ready=ready_at(worker) - began,
        first_task=float(taken) - began,
    )
    wait_until(lambda: run_finished(url, run_id), 300, 0.2, f"run {run_id}")
    project("rm", "--stop", "--force", "worker")
    return result


def markdown(image: int, packed: int, bases: dict[str, int], starts: list[ColdStart]) -> str:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"

    lines = [
        "## Container",
        "",
        "Written by `python -m tests.support.container_bench` (Docker "
        f"{docker('version', '--format', '{{.Server.Version}}').strip()}). The image is built "
        "from the Dockerfile; a cold start is one new worker container (`docker compose up "
        f"--no-deps worker`) with a run already queued, median of {len(starts)} (min-max).",
        "",
        "| what | measured |",
        "| --- | ---: |",
        f"| image size (`{TEST_IMAGE}`, uncompressed) | {image / 1e6:,.0f} MB |",
        f"| image as pulled (`docker save`, gzip) | {packed / 1e6:,.0f} MB |",
        *(f"| base image `{tag}` | {size / 1e6:,.0f} MB |" for tag, size in bases.items()),
        f"| compose up -> container running | {median([s.running for s in starts])} |",
        f"| compose up -> Celery ready | {median([s.ready for s in starts])} |",
        f"| compose up -> first partition taken | {median([s.first_task for s in starts])} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.container_bench")
    parser.add_argument("--starts", type=int, default=5, help="cold starts to measure")
    options = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="etl-container-bench-"))
    build_image(TEST_IMAGE, directory / "build.log")
    project = ComposeProject(directory, env=DEMO, override=OVERRIDE)
    try:
        project("up", "--detach", "postgres", "redis")
        for service in ("postgres", "redis"):
            container = project.container(service)
            wait_until(lambda c=container: health(c) == "healthy", 120, 0.5, f"{service}")
        project("run", "--rm", "--no-deps", "-T", "seed")
        url = project.database_url()
        starts = [cold_start(project, url) for _ in range(options.starts)]
    except BaseException:
        for container in project.containers("worker"):
            print(logs(container)[-3000:], file=sys.stderr)
        raise
    finally:
        project.down()
    bases = {tag: image_bytes(tag) for tag in BASE_IMAGES}
    print(markdown(image_bytes(TEST_IMAGE), compressed_bytes(TEST_IMAGE), bases, starts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
