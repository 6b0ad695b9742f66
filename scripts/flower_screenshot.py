"""Retake docs/flower-tasks.png: Flower's tasks page, in headless Chromium, during a demo run.

    .venv/bin/python scripts/flower_screenshot.py [--out docs/flower-tasks.png]

Needs Debian's chromium (`apt-get install -y chromium`) and the Postgres and Redis the
ETL_* settings point at. Everything it makes is its own and removed at the end: a database
(etl_flower_screenshot) on the configured server, a Redis key prefix and queue, a Flower on
a free 127.0.0.1 port behind basic auth, the demo's worker, a Chromium profile.

Steps: start Flower (as `celery -A etl_worker flower`, basic auth from FLOWER_BASIC_AUTH),
start `etl-demo` on that database and queue, wait until Flower has seen some tasks succeed
while others are still coming, screenshot /tasks with the credentials in the URL, let the
demo finish, stop Flower, clean up.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from etl_worker.config import Settings
from etl_worker.db import with_database
from etl_worker.devtools.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATABASE = "etl_flower_screenshot"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def flower_get(port: int, path: str, credentials: str) -> object:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    token = base64.b64encode(credentials.encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def succeeded(port: int, credentials: str) -> int:
    try:
        tasks = flower_get(port, "/api/tasks?state=SUCCESS&limit=100000", credentials)
    except (OSError, urllib.error.URLError, ValueError):
        return 0
    return len(tasks) if isinstance(tasks, dict) else 0


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "flower-tasks.png")
    parser.add_argument("--rows", type=int, default=150_000, help="demo rows")
    parser.add_argument("--zips", type=int, default=800, help="demo zips")
    parser.add_argument("--after", type=int, default=150, help="screenshot after N tasks succeed")
    parser.add_argument("--size", default="1600,900", help="browser window, WIDTH,HEIGHT")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found — apt-get install -y chromium")

    base = Settings.load()
    tag = secrets.token_hex(4)
    database_url = with_database(base.database_url, DATABASE)
    prefix, queue = f"flower-shot-{tag}:", f"flower-shot-{tag}"
    credentials = f"etl:{secrets.token_urlsafe(12)}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "FLOWER_"))}
    env.update(
        ETL_DATABASE_URL=database_url,
        ETL_BROKER_URL=base.broker_url,
        ETL_REDIS_KEY_PREFIX=prefix,
        ETL_QUEUE=queue,
        FLOWER_BASIC_AUTH=credentials,
    )
    work = Path(tempfile.mkdtemp(prefix="flower-shot-"))
    flower_log = open(work / "flower.log", "wb")
    flower = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "etl_worker",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        env=env,
        cwd=REPO,
        stdout=flower_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    demo = None
    try:
        wait_for(
            lambda: succeeded(port, credentials) == 0 and flower.poll() is None and _answers(port),
            60,
            "flower to start",
        )
        demo = subprocess.Popen(
            [
                str(BIN / "etl-demo"),
                "--rows",
                str(args.rows),
                "--zips",
                str(args.zips),
                "--state-dir",
                str(work / "demo"),
            ],
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        wait_for(
            lambda: succeeded(port, credentials) >= args.after or demo.poll() is not None,
            600,
            f"flower to see {args.after} tasks succeed",
        )
        user, password = credentials.split(":", 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={work / 'chromium'}",
                f"--window-size={args.size}",
                "--virtual-time-budget=8000",
                f"--screenshot={args.out.resolve()}",
                f"http://{user}:{password}@127.0.0.1:{port}/tasks",
            ],
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"wrote {args.out} ({succeeded(port, credentials)} tasks succeeded by then)")
        demo.wait(600)
    finally:
        if demo is not None:
            stop(demo)
        stop(flower)
        flower_log.close()
        _cleanup(base.database_url, database_url, base.broker_url, prefix)
        shutil.rmtree(work, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5):
            return True
    except OSError:
        return False


def _cleanup(server_url: str, database_url: str, broker_url: str, prefix: str) -> None:
    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database_url.rsplit("/", 1)[1])
            )
        )
    client = redis.Redis.from_url(broker_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    main()
