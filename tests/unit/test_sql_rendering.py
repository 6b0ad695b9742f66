"""Partition predicates: values are parameters, names are quoted identifiers."""

from __future__ import annotations

from etl_worker.db import Column, TableName
from etl_worker.extract import predicate, select_sql
from etl_worker.partition import PartitionKey
from etl_worker.queries import query


def zip_column() -> Column:
    return Column("zip_code", "text", "pg_catalog", "text", False)


def test_a_value_is_a_parameter_never_part_of_the_sql_text() -> None:
    hostile = "10016'; DROP TABLE raw_companies; --"
    clause, params = predicate(PartitionKey(hostile), zip_column())
    text = select_sql(TableName("raw_companies"), clause).as_string(None)
    assert hostile not in text
    assert params == {"part_key": hostile}
    assert text == (
        'SELECT * FROM "raw_companies" WHERE "zip_code" = CAST(%(part_key)s AS "pg_catalog"."text")'
    )


def test_the_null_partition_uses_is_null_so_an_index_can_answer_it() -> None:
    clause, params = predicate(PartitionKey(None), zip_column())
    assert clause.as_string(None) == '"zip_code" IS NULL'
    assert params == {}


def test_a_split_partition_selects_a_half_open_range_of_the_split_key() -> None:
    clause, params = predicate(PartitionKey("10016", 100, 200), zip_column(), "id")
    text = clause.as_string(None)
    assert '"id" >= %(split_lo)s' in text and '"id" < %(split_hi)s' in text
    assert params == {"part_key": "10016", "split_lo": 100, "split_hi": 200}


def test_table_names_are_quoted_identifiers() -> None:
    table = TableName.parse('odd schema.tab"le')
    assert table.ident.as_string(None) == '"odd schema"."tab""le"'


def test_named_queries_bind_the_quoted_audit_schema() -> None:
    text = query("mark_finished", "etl audit").as_string(None)
    assert 'UPDATE "etl audit".partitions' in text
