"""Arrow <-> pandas for one partition, and lossless downcasting for transforms that want it.

The transform gets pyarrow-backed columns (`pd.ArrowDtype`): converting from the Arrow table
the reader produced is nearly free, strings cost no Python objects, and integer columns keep
their NULLs without turning into floats.

The pipeline does not downcast. It used to shrink the transform's output just before the
write, and measured, that paid nowhere (`python -m etl_worker.bench.shrinkcost`,
docs/scaling.md): the output frame is the peak's smaller part (the read and the transform
make the peak), the shrunk copy lives beside the original while it is made, and the write
casts every column back to the target's type, a full-size copy again. On 10,000-row
partitions it cost 14-16 ms plus 2-3 ms more casting back, and on 200,000-row ones 52-61 ms
plus 16-25 ms, for the same peak RSS to 0.1 MB; no frame size against the memory ceiling
changes that, since the write's full-size copy always follows.

`downcast` is for a transform that keeps a frame while it works (a join table, a frame
grouped many times): there the smaller frame is what is held. It must not run on the
transform's *input* behind the user's back: `employees * 1000` on a column downcast to
int16 would overflow (pandas' numpy-nullable Int16 wraps silently). Every downcast is
lossless: integers to the smallest type holding their min and max, float64 to float32 only
when every value round-trips exactly, low-cardinality strings to categories; the writer
casts each column back to the target's type, so the values written are the same.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: A string column becomes a category when at most this share of its values are distinct.
CATEGORY_MAX_DISTINCT_SHARE = 0.5
#: ... and it has at least this many values (tiny frames gain nothing).
CATEGORY_MIN_ROWS = 64
#: Values looked at before hashing a whole string column (see _maybe_category).
CATEGORY_SAMPLE_ROWS = 8192
#: `shrink` leaves frames shorter than this as they are: they hold next to no memory, and
#: downcasting them costs more than it could save (~1 ms of a ~6 ms one-row partition).
SHRINK_MIN_ROWS = 64

_INT_LADDER = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
_INT_BOUNDS = {t: (-(2 ** (t.bit_width - 1)), 2 ** (t.bit_width - 1) - 1) for t in _INT_LADDER}


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The partition as a DataFrame with pyarrow-backed columns."""
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def frame_memory(df: pd.DataFrame) -> int:
    """Bytes the frame holds, strings included (deep)."""
    return int(df.memory_usage(deep=True, index=True).sum())


def smallest_int_type(low: int, high: int) -> pa.DataType:
    for candidate in _INT_LADDER:
        lo, hi = _INT_BOUNDS[candidate]
        if lo <= low and high <= hi:
            return candidate
    return pa.int64()


def _arrow(series: pd.Series) -> pa.ChunkedArray | pa.Array:
    if isinstance(series.dtype, pd.ArrowDtype):
        return series.array.__arrow_array__()
    return pa.array(series, from_pandas=True)


def _downcast_int(series: pd.Series, values: pa.ChunkedArray | pa.Array) -> pd.Series:
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None:  # all NULL: nothing to learn, keep the type
        return series
    target = smallest_int_type(low, high)
    if target.bit_width >= values.type.bit_width:
        return series
    return pd.Series(
        pd.array(values.cast(target), dtype=pd.ArrowDtype(target)),
        index=series.index,
        name=series.name,
    )


def _downcast_float(series: pd.Series, values: pa.ChunkedArray | pa.Array) -> pd.Series:
    if values.type != pa.float64() or len(values) == 0:
        return series
    narrow = values.cast(pa.float32(), safe=False)
    back = narrow.cast(pa.float64())
    # Exact round trip for every non-null value; NaN compares unequal, so count it apart.
    same = pc.or_(pc.equal(back, values), pc.and_(pc.is_nan(back), pc.is_nan(values)))
    if not pc.all(pc.fill_null(same, True)).as_py():
        return series
    return pd.Series(
        pd.array(narrow, dtype=pd.ArrowDtype(pa.float32())), index=series.index, name=series.name
    )


def _maybe_category(series: pd.Series, values: pa.ChunkedArray | pa.Array) -> pd.Series:
    if len(values) < CATEGORY_MIN_ROWS:
        return series
    # Look at a prefix first: a column already mostly distinct there (names, phones) is
    # not worth hashing whole — counting 340,000 distinct phone numbers took 300 ms and
    # 60 MB of hash table, more than the rest of the partition's downcasting together.
    head = values.slice(0, CATEGORY_SAMPLE_ROWS)
    if pc.count_distinct(head).as_py() > CATEGORY_MAX_DISTINCT_SHARE * len(head):
        return series
    distinct = pc.count_distinct(values).as_py()
    if distinct > CATEGORY_MAX_DISTINCT_SHARE * len(values):
        return series
    return series.astype("category")


def downcast(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with each column in the smallest lossless type (see module doc)."""
    out = {}
    for name in df.columns:
        series = df[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            out[name] = series
            continue
        try:
            values = _arrow(series)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            out[name] = series  # mixed Python objects: leave them to the writer
            continue
        kind = values.type
        if pa.types.is_integer(kind) and pa.types.is_signed_integer(kind):
            out[name] = _downcast_int(series, values)
        elif pa.types.is_floating(kind):
            out[name] = _downcast_float(series, values)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            out[name] = _maybe_category(series, values)
        else:
            out[name] = series
    return pd.DataFrame(out, index=df.index)


def shrink(df: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """`downcast(df)` when the frame is big enough to gain from it; returns the frame and
    its memory before and after. What the pipeline ran before each write until measured
    not to pay (module doc); the bench measures it with `bench.shrinkcost`."""
    before = frame_memory(df)
    if len(df) < SHRINK_MIN_ROWS:
        return df, before, before
    small = downcast(df)
    return small, before, frame_memory(small)
