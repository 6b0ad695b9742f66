"""DataFrame memory of one partition in each representation, and what downcasting saves.

Three starting points, said apart in the report because they differ by 2x:
- object dtype: strings as Python objects, NULL integers as float64 — pandas' default before
  3.0, and what the seed blog measured its "50% saved by downcasting" against;
- pandas 3 default (`to_pandas()`): strings in the pyarrow-backed `str` dtype;
- the Arrow-backed frame etl-worker hands the transform (`pd.ArrowDtype` columns).
Downcasting (frames.downcast) runs on the Arrow-backed frame, as in the pipeline, and must
be lossless: the table written back is identical to the one written without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import pyarrow as pa

from etl_worker.bench.data import RawTable
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.db import TableName, connect, find_column, table_columns
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import downcast, frame_memory, to_frame
from etl_worker.load import target_schema, to_arrow
from etl_worker.partition import PartitionKey


@dataclass(frozen=True)
class FrameMemory:
    zip_code: str
    rows: int
    object_bytes: int
    pandas_default_bytes: int
    arrow_bytes: int
    downcast_bytes: int
    lossless: bool

    @property
    def saved_vs_object(self) -> float:
        return 1 - self.downcast_bytes / self.object_bytes

    @property
    def saved_vs_arrow(self) -> float:
        return 1 - self.downcast_bytes / self.arrow_bytes

    def as_json(self) -> dict[str, object]:
        return asdict(self) | {
            "saved_vs_object": self.saved_vs_object,
            "saved_vs_arrow": self.saved_vs_arrow,
        }


def object_frame(table: pa.Table) -> pd.DataFrame:
    """The frame as pandas < 3 built it by default: Python string objects."""
    df = table.to_pandas()
    for name in df.columns:
        if isinstance(df[name].dtype, pd.StringDtype):
            df[name] = df[name].astype(object)
    return df


def measure_frames(settings: Settings, raw: RawTable) -> FrameMemory:
    """The largest partition, read as the pipeline reads it, in each representation."""
    zip_code = max((k for k in raw.sizes if k), key=lambda k: raw.sizes[k])
    ctx = WorkerContext(settings)
    try:
        with connect(settings.database_url) as conn:
            columns = table_columns(conn, raw.table)
        column = find_column(columns, "zip_code", raw.table)
        where, params = predicate(PartitionKey(zip_code), column)
        table = read_arrow(ctx.adbc, ctx.audit.bind(select_sql(raw.table, where), params), columns)
        schema = target_schema(ctx.adbc, TableName.parse(str(raw.table)), columns)
    finally:
        ctx.close()
    frame = to_frame(table)
    small = downcast(frame)
    return FrameMemory(
        zip_code=zip_code,
        rows=table.num_rows,
        object_bytes=frame_memory(object_frame(table)),
        pandas_default_bytes=frame_memory(table.to_pandas()),
        arrow_bytes=frame_memory(frame),
        downcast_bytes=frame_memory(small),
        lossless=to_arrow(small, schema).equals(to_arrow(frame, schema)),
    )
