"""pandera contracts for the contract tests, on tests.support.data's raw table."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

#: Every row of make_raw_table passes (a DataFrameSchema; other columns are not checked).
ANY_COMPANY = pa.DataFrameSchema(
    {
        "id": pa.Column(checks=pa.Check.ge(1)),
        "employees": pa.Column(nullable=True, checks=pa.Check.ge(0)),
    }
)


class SmallCompanies(pa.DataFrameModel):
    """A DataFrameModel: rows with more than 30 employees break it (make_raw_table gives row
    n 3n employees, NULL for every fourth row, so rows 11 and up break it)."""

    employees: Series[pd.ArrowDtype(pyarrow.int32())] = pa.Field(nullable=True, le=30)
