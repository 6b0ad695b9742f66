"""Drawing sample zips, and the diff report test mode prints."""

from __future__ import annotations

import random
import re

from etl_worker.config import Settings
from etl_worker.reporting.sample import choose_zips, sample_table_name
from etl_worker.reporting.testmode import output_table_name
from etl_worker.reporting.verify import ColumnDiff, TableDiff, format_diff

ZIPS: list[str | None] = [None, "", *(f"{i:05d}" for i in range(50))]


def test_the_same_seed_draws_the_same_zips_whatever_order_they_are_listed_in() -> None:
    shuffled = ZIPS[:]
    random.Random(3).shuffle(shuffled)

    assert choose_zips(ZIPS, 10, seed=42) == choose_zips(shuffled, 10, seed=42)
    assert choose_zips(ZIPS, 10, seed=42) != choose_zips(ZIPS, 10, seed=43)
    assert len(set(choose_zips(ZIPS, 10, seed=42))) == 10


def test_asking_for_more_zips_than_there_are_takes_them_all_null_first() -> None:
    assert choose_zips(["b", None, "a"], 5, seed=1) == [None, "a", "b"]


def test_sample_and_output_tables_sit_beside_the_raw_and_target_tables() -> None:
    settings = Settings(raw_table="src.raw", target_table="clean")

    assert str(sample_table_name(settings)) == "src.raw_sample"
    assert str(output_table_name(settings)) == "clean_test"
    assert str(sample_table_name(settings.replace(sample_table="mine"))) == "mine"


def diff(**changes: object) -> TableDiff:
    values: dict[str, object] = dict(
        actual="clean_test", expected="truth", key="id", zips=3, expected_rows=12, actual_rows=12
    )
    values.update(changes)
    return TableDiff(**values)  # type: ignore[arg-type]


def test_a_match_is_one_line_saying_so() -> None:
    text = format_diff(diff())

    assert diff().matches
    assert text.splitlines()[0] == "compare  clean_test with truth truth on 3 zips, key id"
    assert text.splitlines()[-1] == "MATCH    all 12 rows equal in every column"


def test_each_kind_of_difference_is_counted_with_examples() -> None:
    report = diff(
        missing=1,
        missing_examples=[("9999", "00003")],
        extra=4,
        extra_examples=[("7", "00001"), ("8", "00001"), ("9", None)],
        changed=2,
        columns=[
            ColumnDiff("revenue", 2, [("3", "1.50", "1.49"), ("5", None, "0.00"), ("6", "1", "2")])
        ],
        duplicate_keys=(0, 2),
        extra_columns=["debug"],
    )

    text = format_diff(report)

    assert report.differences == 1 + 4 + 2 + 2 + 1
    assert "missing  1 row in the truth, not in the output: id 9999 (zip 00003)" in text
    assert "extra    4 rows in the output, not in the truth: id 7 (zip 00001), " in text
    assert "id 9 (zip NULL) ..." in text
    assert re.search(
        r"\n  revenue +2 rows  id 3: truth '1.50', output '1.49'; id 5: truth NULL", text
    )
    assert "id 6" not in text  # two examples per column keep the line short
    assert "doubled  id repeats in 0 rows of the truth and 2 rows of the output" in text
    assert "extra in the output: debug" in text
    assert text.splitlines()[-1] == "DIFFERENT  10 differences between the output and truth"
    as_json = report.as_json()
    assert as_json["differences"] == 10 and as_json["matches"] is False
    assert as_json["columns"][0]["column"] == "revenue"
