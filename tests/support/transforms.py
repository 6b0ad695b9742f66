"""Transforms the tests hand to real workers (workers import them by module:function)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def fail_on_poisoned_zips(df: pd.DataFrame) -> pd.DataFrame:
    """Raise for zips listed in the file named by ETL_TEST_POISON_FILE (one per line);
    identity otherwise. Deleting the file 'fixes' the data for a --resume."""
    path = os.environ.get("ETL_TEST_POISON_FILE")
    if path and Path(path).exists() and len(df):
        poisoned = set(Path(path).read_text().split())
        zip_code = df["zip_code"].iloc[0]
        if zip_code in poisoned:
            raise ValueError(f"cannot parse revenue for zip {zip_code}")
    return df


def drop_notes_column(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["notes"])


def move_rows_to_another_zip(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["zip_code"] = "99999"
    return out


#: The `module:function` a run names to hold its partitions at the `gate` fixture.
WAIT_FOR_GATE = f"{__name__}:wait_for_gate"


def wait_for_gate(df: pd.DataFrame) -> pd.DataFrame:
    """Identity, but a partition waits while the file named by ETL_TEST_GATE_FILE exists
    (at most two minutes): tests hold a backlog of running and queued partitions steady,
    then open the gate. The producer's zero-row check never waits."""
    path = os.environ.get("ETL_TEST_GATE_FILE")
    deadline = time.monotonic() + 120
    while len(df) and path and Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return df


#: Like WAIT_FOR_GATE, and says when a partition's rows are read: see `signal_then_wait`.
SIGNAL_THEN_WAIT = f"{__name__}:signal_then_wait"


def signal_then_wait(df: pd.DataFrame) -> pd.DataFrame:
    """`wait_for_gate`, after creating `<gate file>.read.<zip>`: the partition's read is
    over (the transform runs after it), so a test can change the raw table between reads."""
    path = os.environ.get("ETL_TEST_GATE_FILE")
    if path and len(df):
        Path(f"{path}.read.{df['zip_code'].iloc[0]}").touch()
    return wait_for_gate(df)


def slow_identity(df: pd.DataFrame) -> pd.DataFrame:
    """Identity after ETL_TEST_SLEEP seconds (default 1): slow enough to be caught mid-task."""
    time.sleep(float(os.environ.get("ETL_TEST_SLEEP", "1")))
    return df


def killed_on_marked_zips(df: pd.DataFrame) -> pd.DataFrame:
    """SIGKILL the process running it, every time, for zips listed in ETL_TEST_KILL_FILE (as
    the kernel's OOM killer does to a partition too big for its worker); slow identity for
    the others."""
    path = os.environ.get("ETL_TEST_KILL_FILE")
    if path and len(df) and str(df["zip_code"].iloc[0]) in Path(path).read_text().split():
        os.kill(os.getpid(), signal.SIGKILL)
    return slow_identity(df)


#: The `module:function` of a run whose marked zips get stuck (`stuck_on_marked_zips`).
STUCK = f"{__name__}:stuck_on_marked_zips"


def stuck_on_marked_zips(df: pd.DataFrame) -> pd.DataFrame:
    """Zips listed in ETL_TEST_STUCK_IN_C (comma-separated) spin in C code holding the GIL,
    as a transform stuck in a C extension does: no other thread of the process runs, and
    no signal handler (the soft time limit's) ever gets to run. Zips in
    ETL_TEST_STUCK_IN_PYTHON sleep in Python, where the soft time limit stops them.
    Identity for the others."""
    if not len(df):
        return df
    zip_code = str(df["zip_code"].iloc[0])
    if zip_code in os.environ.get("ETL_TEST_STUCK_IN_C", "").split(","):
        sum(itertools.repeat(1, 10**13))
    if zip_code in os.environ.get("ETL_TEST_STUCK_IN_PYTHON", "").split(","):
        time.sleep(3600)
    return df


#: The `module:function` of a run whose marked zips run out of memory.
EAT_MEMORY = f"{__name__}:eat_memory_on_marked_zips"


def eat_memory_on_marked_zips(df: pd.DataFrame) -> pd.DataFrame:
    """Zips listed in ETL_TEST_OOM_ZIPS (comma-separated) allocate memory until the kernel's
    OOM killer stops them (run the worker in a memory cgroup with a limit); identity for
    the others."""
    if len(df) and str(df["zip_code"].iloc[0]) in os.environ.get("ETL_TEST_OOM_ZIPS", "").split(
        ","
    ):
        hog = []
        while True:
            hog.append(bytearray(32 * 1024**2))  # zero-filled: every page is touched
    return df


def forget_to_return(df: pd.DataFrame) -> None:
    """A transform that edits its frame and forgets `return df` (a new user's mistake)."""
    df["notes"] = df["notes"]


def fail_with_a_value_on_poisoned_zips(df: pd.DataFrame) -> pd.DataFrame:
    """Like fail_on_poisoned_zips, but each zip's message carries its own value (as pandas
    and pyarrow messages do: `Float value 3.5 ...`), raised from a helper so the traceback
    has a frame the one-line error does not show."""
    path = os.environ.get("ETL_TEST_POISON_FILE")
    if path and Path(path).exists() and len(df):
        zip_code = df["zip_code"].iloc[0]
        if zip_code in set(Path(path).read_text().split()):
            _reject_value(int(zip_code) + 0.5)
    return df


def _reject_value(value: float) -> None:
    raise ValueError(f"Float value {value} was truncated converting to int64")


#: The `module:function` of a run whose partitions stop at `IN_PROCESS_GATE` (below).
IN_PROCESS = f"{__name__}:in_process_gate"
#: Tests that deliver partitions from threads of their own process set this: each call of
#: the transform on rows calls it with the frame first (e.g. to wait on a threading.Barrier
#: or an Event, or raise). Never used by worker processes.
IN_PROCESS_GATE: Callable[[pd.DataFrame], None] | None = None


def in_process_gate(df: pd.DataFrame) -> pd.DataFrame:
    """Identity, after `IN_PROCESS_GATE(df)` when set (the producer's zero-row check never
    stops here)."""
    gate = IN_PROCESS_GATE
    if gate is not None and len(df):
        gate(df)
    return df
