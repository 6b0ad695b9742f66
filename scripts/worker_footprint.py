"""What a started worker process holds: its imported-module count and resident memory.

    .venv/bin/python scripts/worker_footprint.py [--pool solo|prefork] [--repeat 3]

Starts a real `celery -A etl_worker worker` (one process with `--pool solo`: the worker's
own machinery, the tasks module and the pool-process warm-up all in one; with `--pool
prefork -c 1`, the main process is measured, which loads the tasks module but runs no
tasks) on the Redis at ETL_BROKER_URL, under a key prefix and queue of its own that are
deleted afterwards. When the worker is ready (Celery's `worker_ready` signal) the process
itself writes `len(sys.modules)`, its VmRSS and which etl_worker modules it loaded; then
it gets a warm shutdown. Postgres is not needed: the worker's main process tries to sweep
(and logs, once, that it cannot) and renews no lease until it runs a task. Prints one JSON
line per start, then the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Packages the issue says the worker process should not carry.
WATCHED = ("rich", "matplotlib", "sqlalchemy", "psycopg2")


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def child(out: Path, celery_args: list[str]) -> None:
    """Run the celery command in this process, reporting once the worker is ready."""
    from celery.__main__ import main
    from celery.signals import worker_ready

    @worker_ready.connect
    def _report(**_: Any) -> None:
        etl = sorted(m for m in sys.modules if m == "etl_worker" or m.startswith("etl_worker."))
        report = {
            "modules": len(sys.modules),
            "rss_mib": round(vm_rss_kib() / 1024, 1),
            "etl_worker_modules": len(etl),
            "watched_loaded": [p for p in WATCHED if p in sys.modules],
            "etl_modules": etl,
        }
        out.write_text(json.dumps(report))

    sys.argv = ["celery", *celery_args]
    main()


def start_once(pool: str, broker_url: str) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    prefix, queue = f"footprint-{tag}:", f"footprint-{tag}"
    env = dict(os.environ, ETL_BROKER_URL=broker_url, ETL_REDIS_KEY_PREFIX=prefix, ETL_QUEUE=queue)
    args = ["-A", "etl_worker", "worker", "-P", pool, "-Q", queue, "-n", f"{tag}@%h"]
    if pool == "prefork":
        args += ["-c", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        log = Path(tmp) / "worker.log"
        with open(log, "wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, __file__, "--child", str(out), "--", *args],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 120
            while not out.exists() or not out.read_text():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not get ready:\n{log.read_text()}")
                time.sleep(0.1)
            return dict(json.loads(out.read_text()))
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            from etl_worker.bench.fleet import delete_redis_prefix

            delete_redis_prefix(broker_url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", choices=["solo", "prefork"], default="solo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--list-modules", action="store_true", help="print etl_worker modules")
    args = parser.parse_args()

    from etl_worker.config import Settings

    broker_url = Settings.load().broker_url
    runs = [start_once(args.pool, broker_url) for _ in range(args.repeat)]
    for run in runs:
        shown = {k: v for k, v in run.items() if k != "etl_modules"}
        print(json.dumps({"pool": args.pool, **shown}))
    if args.list_modules:
        print(" ".join(runs[-1]["etl_modules"]))
    print(
        json.dumps(
            {
                "pool": args.pool,
                "median_modules": statistics.median(r["modules"] for r in runs),
                "median_rss_mib": statistics.median(r["rss_mib"] for r in runs),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
