"""A data contract for the demo's clean transform (etl_worker.transforms:clean_companies):
what every partition it writes to the target must satisfy.

    etl-enqueue --all-zips --contract examples.contracts:CleanCompanies --wait
    etl-enqueue --all-zips --contract examples.contracts:CleanCompanies \\
        --quarantine companies_quarantine --wait

Run it from the repository root (the producer and the workers import `examples.contracts`
from their current directory); it needs pandera (`pip install etl-worker[contracts]`).
The frame it checks is the transform's output cast to the target's types, Arrow-backed
(`pd.ArrowDtype`), so the types below are the target's columns as Arrow types.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

from etl_worker.transforms import MAX_REVENUE, US_STATE_CODES

TEXT = pd.ArrowDtype(pyarrow.string())


class CleanCompanies(pa.DataFrameModel):
    """The rows clean_companies writes: tidy text, NANP phones, https hosts, and numbers in
    range. NULL is allowed where the cleaner nulls what it cannot fix; a row with no name or
    a zip code that is not five digits is refused (the cleaner cannot make one up)."""

    id: Series[pd.ArrowDtype(pyarrow.int64())] = pa.Field(ge=1, unique=True)
    zip_code: Series[TEXT] = pa.Field(nullable=True, str_matches=r"^\d{5}$")
    company_name: Series[TEXT] = pa.Field(str_length={"min_value": 1})
    street: Series[TEXT] = pa.Field(nullable=True)
    city: Series[TEXT] = pa.Field(nullable=True)
    state: Series[TEXT] = pa.Field(nullable=True, isin=sorted(US_STATE_CODES))
    phone: Series[TEXT] = pa.Field(nullable=True, str_matches=r"^\(\d{3}\) \d{3}-\d{4}$")
    website: Series[TEXT] = pa.Field(nullable=True, str_startswith="https://")
    naics_code: Series[pd.ArrowDtype(pyarrow.int32())] = pa.Field(
        nullable=True, in_range={"min_value": 100_000, "max_value": 999_999}
    )
    employees: Series[pd.ArrowDtype(pyarrow.int32())] = pa.Field(nullable=True, ge=0)
    revenue: Series[pd.ArrowDtype(pyarrow.decimal128(14, 2))] = pa.Field(
        nullable=True, in_range={"min_value": Decimal(0), "max_value": MAX_REVENUE}
    )
    founded_date: Series[pd.ArrowDtype(pyarrow.date32())] = pa.Field(nullable=True)
    latitude: Series[pd.ArrowDtype(pyarrow.float64())] = pa.Field(
        nullable=True, in_range={"min_value": -90.0, "max_value": 90.0}
    )
    longitude: Series[pd.ArrowDtype(pyarrow.float64())] = pa.Field(
        nullable=True, in_range={"min_value": -180.0, "max_value": 180.0}
    )
    notes: Series[TEXT] = pa.Field(nullable=True)
    updated_at: Series[pd.ArrowDtype(pyarrow.timestamp("us", tz="UTC"))] = pa.Field(nullable=True)

    @pa.check("founded_date", name="not_in_future")
    def founded_not_in_future(cls, founded: Series) -> Series:
        return founded.isna() | (founded <= dt.datetime.now(dt.UTC).date())

    class Config:
        strict = True  # no column the target lacks, none missing
