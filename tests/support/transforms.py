"""Transforms the tests hand to real workers (workers import them by module:function)."""

from __future__ import annotations

import os
import time
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
