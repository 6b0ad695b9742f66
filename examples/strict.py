"""An example of a stricter transform: the shipped cleaning, plus a rule that refuses a zip
whose raw data has an absurd revenue instead of quietly nulling it.

    etl-enqueue --all-zips --transform examples.strict:strict_clean --wait

Run it from the repository root (the producer and the workers import `examples.strict` from
their current directory). On the demo data some zips fail; `etl-status` groups them by error,
and `etl-enqueue --resume RUN_ID` retries just those once the data or the rule is fixed.
"""

from __future__ import annotations

import pandas as pd

from etl_worker.transforms import clean_companies

#: Revenue above this is a data-entry error, not a company.
MAX_REVENUE = 900_000_000_000


def strict_clean(df: pd.DataFrame) -> pd.DataFrame:
    if (df["revenue"].fillna(0) > MAX_REVENUE).any():
        raise ValueError(
            f"revenue above {MAX_REVENUE:,}: fix the raw rows or relax examples/strict.py"
        )
    return clean_companies(df)
