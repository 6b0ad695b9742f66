"""Where the milliseconds of one 10,000-row partition go, inside a real worker process.

A `celery worker -c 1` runs partitions of exactly 10,000 rows while `py-spy record` samples
its pool process (idle time included: waiting on Postgres is time the partition takes).
Each sample is put in the bucket of the pipeline step it was in: the deepest frame in
pipeline.py decides, by the function it called (the read, to_frame, the transform, shrink,
to_arrow, ingest, the claim) or, for the statements it sends itself, by the source of the
call (begin_write: the lock and checks; DELETE, the finished UPDATE, COMMIT). Samples
in the Celery task around it count as task overhead; samples between tasks are not counted.
Buckets hold milliseconds per partition: samples / rate / partitions.

The raw samples (py-spy's collapsed stacks, for any flame-graph tool) stay in the profile
directory, so the summary can be checked and redone.
"""

from __future__ import annotations

import linecache
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from etl_worker.bench.data import ensure_uniform_table
from etl_worker.bench.fleet import fleet, run_through_fleet
from etl_worker.bench.inprocess import CLEAN, IDENTITY
from etl_worker.bench.measure import Server, drop_tables
from etl_worker.config import Settings
from etl_worker.db import TableName
from etl_worker.errors import EtlError

PROFILE_TABLE = "bench_profile"
ROWS_PER_PARTITION = 10_000
#: Samples per second: a 10,000-row partition takes tens of milliseconds.
RATE = 500
#: Partitions run before sampling starts, so the process is warm.
WARM_UP = 3

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")
#: Functions the pipeline calls, by the step they are.
_CLAIM = "claim (audit UPDATE ... RETURNING)"
_STEPS = {
    "_claim": _CLAIM,
    "claim": _CLAIM,
    "read_arrow": "read: ADBC COPY TO -> Arrow",
    "read_in_snapshot": "read: ADBC COPY TO -> Arrow",  # read_arrow, in a run's snapshot
    "to_frame": "to_frame (Arrow -> pandas)",
    "shrink": "shrink / downcast",
    "to_arrow": "to_arrow (cast to the target's types)",
    "check_partition_values": "check partition values",
    "check_split_values": "check split values",
    "ingest": "write: ADBC COPY FROM (adbc_ingest)",
    "prepared": "run set-up (cached per run)",
    "watch": "heartbeat bookkeeping",
    "unwatch": "heartbeat bookkeeping",
    "reset_peak": "memory bookkeeping",
    "peak_rss": "memory bookkeeping",
    "current_rss": "memory bookkeeping",
    "release_free_memory": "memory bookkeeping",
    "predicate": "build SQL",
    "bind": "build SQL",
    "select_sql": "build SQL",
    "finished_sql": "build SQL",
    "begin_write_sql": "build SQL",
    "fence_token": "read: ADBC COPY TO -> Arrow",
}
#: Words in the source of a statement the pipeline sends itself, by the step they are.
_STATEMENTS = (
    ("begin_write_sql", "begin the write (lock, state and fence checks)"),
    ("delete", "DELETE the partition's old rows"),
    ("finished_sql", "finish (audit UPDATE)"),
    ("commit", "COMMIT"),
    ("rollback", "ROLLBACK"),
    ("fetch", "fetch a statement's result (begin_write, finished)"),
    ("del ", "free the frames (del)"),
)
#: Steps under this share of the samples are summed into one row.
MINOR_SHARE = 0.002
_OTHER = "other pipeline lines"
_TRANSFORM = "transform (the user's function)"
_TASK = "Celery task around run_partition"


@dataclass
class Profile:
    transform: str
    partitions: int
    rows_per_partition: int
    rate: int
    samples: int
    #: step -> milliseconds per partition, most first
    steps: dict[str, float] = field(default_factory=dict)
    raw_path: Path | None = None

    @property
    def total_ms(self) -> float:
        return sum(self.steps.values())


def _parse(frame: str) -> tuple[str, str, int]:
    """(function, file, line) of one py-spy frame; methods lose their class ("Audit.claim")."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "", 0
    return match["func"].rsplit(".", 1)[-1], match["file"], int(match["line"])


def _statement_source(path: str, line: int) -> str:
    """The statement starting at `line`, continued until its brackets close."""
    text = ""
    for number in range(line, line + 12):
        text += linecache.getline(path, number)
        if text.count("(") <= text.count(")"):
            break
    return " ".join(text.split())


def step_of(stack: list[str], transform: str) -> str | None:
    """The pipeline step of one sampled stack (root first); None outside a task."""
    frames = [_parse(f) for f in stack]
    inside = [i for i, (_, path, _) in enumerate(frames) if path.endswith("etl_worker/pipeline.py")]
    if not inside:
        in_task = any(f == "trace_task" or f == "__protected_call__" for f, _, _ in frames)
        return _TASK if in_task else None
    deepest = inside[-1]
    func, path, line = frames[deepest]
    callees = frames[deepest + 1 :]
    if callees:
        called = callees[0][0]
        if called in _STEPS:
            return _STEPS[called]
        if any(f == transform for f, _, _ in callees):
            return _TRANSFORM
    source = _statement_source(path, line)
    lowered = source.lower()
    for word, step in _STATEMENTS:
        if word in lowered:
            return step
    if func == "transform_partition" and "transform" in lowered:
        return _TRANSFORM
    return f"{func}: {source[:60]}"


def summarize(raw: str, transform: str, partitions: int, rate: int) -> Profile:
    """The samples of py-spy's raw output, in steps; `transform`: the spec."""
    function = transform.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    counts: Counter[str] = Counter()
    samples = 0
    for text in raw.splitlines():
        stack_text, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        step = step_of(stack_text.split(";"), function)
        if step is None:
            continue
        counts[step] += int(count)
        samples += int(count)
    ms: dict[str, float] = {}
    for step, n in counts.most_common():
        key = step if n >= MINOR_SHARE * samples else _OTHER
        ms[key] = ms.get(key, 0.0) + n / rate * 1000 / partitions
    return Profile(transform, partitions, ROWS_PER_PARTITION, rate, samples, ms)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise EtlError(
            "etl-bench profiles with py-spy, which is not installed — install the bench "
            "extra: pip install 'etl-worker[bench]'"
        )
    return found


def profile_partitions(
    settings: Settings, server: Server, partitions: int, seed: int, output: Path, log_path: Path
) -> list[Profile]:
    """`partitions` partitions of 10,000 rows through a one-process worker, sampled, with
    identity and with clean_companies."""
    spy = _py_spy()
    table = ensure_uniform_table(
        server.url, PROFILE_TABLE, partitions=partitions + WARM_UP,
        rows_per_partition=ROWS_PER_PARTITION, seed=seed,
    )  # fmt: skip
    keys = sorted(k for k in table.sizes if k)
    output.mkdir(parents=True, exist_ok=True)
    target = TableName("bench_etl_profile")
    profiles = []
    with fleet(settings, server, 1, log_path) as workers:
        for transform in (IDENTITY, CLEAN):
            raw_path = output / f"partition-{transform.rsplit(':', 1)[1]}.txt"
            raw_path.unlink(missing_ok=True)
            run_through_fleet(workers, table.table, target, transform, keys[:WARM_UP])
            recorder = subprocess.Popen(
                [
                    spy, "record", "--pid", str(workers.pool_pids[0]), "--rate", str(RATE),
                    "--idle", "--full-filenames", "--format", "raw", "--output", str(raw_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                run_through_fleet(workers, table.table, target, transform, keys[WARM_UP:])
            finally:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                _, errors = recorder.communicate(timeout=60)
            if not raw_path.exists():
                raise EtlError(
                    f"py-spy wrote no samples: {errors.decode(errors='replace').strip()}"
                )
            profile = summarize(raw_path.read_text(), transform, partitions, RATE)
            profile.raw_path = raw_path
            profiles.append(profile)
    drop_tables(server.url, target)
    return profiles
