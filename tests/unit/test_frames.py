"""Downcasting is lossless and actually smaller."""

from __future__ import annotations

import decimal

import pandas as pd
import pyarrow as pa

from etl_worker.frames import (
    SHRINK_MIN_ROWS,
    downcast,
    frame_memory,
    shrink,
    smallest_int_type,
    to_frame,
)


def arrow_frame(**columns: pa.Array) -> pd.DataFrame:
    return to_frame(pa.table(columns))


def test_integers_shrink_to_the_smallest_type_holding_min_and_max() -> None:
    df = arrow_frame(
        small=pa.array([1, -5, None, 100], pa.int64()),
        medium=pa.array([40_000, 1, 2, None], pa.int64()),
        big=pa.array([2**40, 0, 1, 2], pa.int64()),
    )
    out = downcast(df)
    assert out["small"].dtype == pd.ArrowDtype(pa.int8())
    assert out["medium"].dtype == pd.ArrowDtype(pa.int32())
    assert out["big"].dtype == pd.ArrowDtype(pa.int64())
    assert out["small"].isna().tolist() == [False, False, True, False]  # NULL stays NULL
    assert out["medium"].tolist()[:3] == [40_000, 1, 2]


def test_floats_narrow_only_when_every_value_round_trips() -> None:
    df = arrow_frame(
        halves=pa.array([0.5, 1.25, None, 3.0]),
        latitude=pa.array([40.712776123, -73.1, 12.0, None]),
    )
    out = downcast(df)
    assert out["halves"].dtype == pd.ArrowDtype(pa.float32())
    assert out["latitude"].dtype == pd.ArrowDtype(pa.float64())  # float32 would corrupt it
    assert out["latitude"].tolist()[0] == 40.712776123


def test_low_cardinality_strings_become_categories_and_keep_their_values() -> None:
    states = ["NY", "CA", "", None] * 50
    names = [f"company {i}" for i in range(200)]
    df = arrow_frame(state=pa.array(states), name=pa.array(names))
    out = downcast(df)
    assert isinstance(out["state"].dtype, pd.CategoricalDtype)
    assert not isinstance(out["name"].dtype, pd.CategoricalDtype)
    restored = out["state"].astype(object).where(out["state"].notna(), None).tolist()
    assert restored == states  # '' stays '', NULL stays NULL


def test_downcasting_leaves_other_types_alone_and_saves_memory() -> None:
    df = arrow_frame(
        revenue=pa.array([decimal.Decimal("1.25"), None] * 100, pa.decimal128(14, 2)),
        employees=pa.array(list(range(200)), pa.int64()),
        state=pa.array(["NY", "CA"] * 100),
    )
    out = downcast(df)
    assert out["revenue"].dtype == df["revenue"].dtype
    assert frame_memory(out) < frame_memory(df)
    assert df["employees"].dtype == pd.ArrowDtype(pa.int64())  # the input is not modified


def test_smallest_int_type_boundaries() -> None:
    assert smallest_int_type(-128, 127) == pa.int8()
    assert smallest_int_type(-129, 0) == pa.int16()
    assert smallest_int_type(0, 2**31) == pa.int64()


def test_shrink_downcasts_a_real_frame_and_leaves_a_tiny_one_alone() -> None:
    big = arrow_frame(n=pa.array(range(SHRINK_MIN_ROWS), pa.int64()))
    tiny = arrow_frame(n=pa.array([1, 2], pa.int64()))

    small, before, after = shrink(big)
    same, tiny_before, tiny_after = shrink(tiny)

    assert small["n"].dtype == pd.ArrowDtype(pa.int8()) and after < before
    assert same is tiny and tiny_before == tiny_after == frame_memory(tiny)
