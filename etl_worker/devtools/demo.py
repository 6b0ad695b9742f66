"""The demo: generated data, local workers, one full run, a summary — on whatever Postgres
and Redis answer at the configured URLs, or on embedded ones when nothing does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from etl_worker import producer
from etl_worker.brokers import REDIS, broker_kind
from etl_worker.config import Settings, redact_url
from etl_worker.devtools.embedded import EmbeddedServices, ensure_postgres, ensure_redis
from etl_worker.devtools.seed import seed_raw_table
from etl_worker.reporting.progress import wait_and_sweep
from etl_worker.reporting.status import RunStatus, format_status


@dataclass(frozen=True)
class DemoOptions:
    rows: int = 200_000
    zips: int = 1_000
    seed: int = 42
    processes: int = 2
    state_dir: Path = Path(".etl-demo")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives worker processes the same settings."""
    env = dict(os.environ)
    env.update(
        ETL_DATABASE_URL=settings.database_url,
        ETL_BROKER_URL=settings.broker_url,
        ETL_QUEUE=settings.queue,
        ETL_REDIS_KEY_PREFIX=settings.redis_key_prefix,
        ETL_AUDIT_SCHEMA=settings.audit_schema,
    )
    return env


@contextmanager
def local_workers(
    settings: Settings, processes: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A `celery worker` with `processes` pool processes, stopped with a warm shutdown."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "etl_worker",
                "worker",
                "-c",
                str(processes),
                "-Q",
                settings.queue,
                "-n",
                f"demo-{os.getpid()}@%h",
                "--loglevel=INFO",
            ],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    echo: Callable[[str], None] = print,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> RunStatus:
    """Seed, start local workers, run every zip and return the run's status. Results (the
    run id, the summary) go to `echo`, progress talk to `say` (the CLI passes click's
    stdout and stderr writers)."""
    services = EmbeddedServices()
    try:
        database_url = ensure_postgres(settings.database_url, services, options.state_dir / "pg")
        broker_url = settings.broker_url
        if broker_kind(broker_url) == REDIS:  # RabbitMQ has no embedded fallback: it is used
            broker_url = ensure_redis(broker_url, services, options.state_dir / "redis")
        for note in services.notes:
            say(note)
        settings = settings.replace(database_url=database_url, broker_url=broker_url)
        say(
            f"seeding {options.rows:,} rows over {options.zips:,} zips into "
            f"{settings.raw_table} at {redact_url(database_url)}"
        )
        seeded = seed_raw_table(
            database_url,
            rows=options.rows,
            zips=options.zips,
            seed=options.seed,
            table=settings.raw_table,
            progress=True,
        )
        say(f"seeded {seeded.rows:,} rows in {seeded.seconds:.1f}s")
        log_path = options.state_dir / "worker.log"
        say(f"starting a worker with {options.processes} processes (log: {log_path})")
        with local_workers(settings, options.processes, log_path):
            result = producer.enqueue_run(settings)
            echo(result.run_id)
            say(f"enqueued {result.partitions:,} partitions in {result.seconds:.2f}s")
            status = wait_and_sweep(settings, result.run_id)
            say("stopping the worker (warm shutdown)")
        echo(format_status(status))
        return status
    finally:
        services.stop()
