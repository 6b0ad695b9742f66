"""One label for a partition in every message, log line and report."""

from __future__ import annotations

import pytest

from etl_worker.partition import PartitionKey, partition_label


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("10016", "10016"),
        ("AB-12.x", "AB-12.x"),
        (None, "NULL"),
        ("NULL", "'NULL'"),  # the string is not the NULL partition
        ("null", "'null'"),
        ("", "''"),  # the empty-string zip, visible in a list of zips
        ("a b", "'a b'"),
        ("10016, 10017", "'10016, 10017'"),  # never reads as two partitions in a list
        ("x[0,5)", "'x[0,5)'"),  # never reads as a split
        ("O'Brien", '"O\'Brien"'),
        ("two\nlines", "'two\\nlines'"),  # one line in a log
    ],
)
def test_a_value_prints_bare_unless_that_could_mislead(value: str | None, label: str) -> None:
    assert partition_label(value) == label


def test_a_split_shows_its_half_open_range_with_open_ends_empty() -> None:
    assert partition_label("10016", 0, 5000) == "10016[0,5000)"
    assert partition_label("10016", None, 5000) == "10016[,5000)"
    assert partition_label("10016", 5000, None) == "10016[5000,)"
    assert partition_label(None, 0, 5000) == "NULL[0,5000)"
    assert partition_label("", 0, 5000) == "''[0,5000)"


def test_different_partitions_never_share_a_label() -> None:
    values = [None, "NULL", "null", "", "''", "'NULL'", "10016", "'10016'", "a b", "a\tb"]
    labels = {partition_label(v) for v in values}

    assert len(labels) == len(values)


def test_a_partition_keys_label_is_partition_label() -> None:
    assert PartitionKey("10016", 0, 5000).label == partition_label("10016", 0, 5000)
    assert PartitionKey(None).label == "NULL"
