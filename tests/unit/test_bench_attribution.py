"""etl-bench names where Postgres' time and a partition's milliseconds go: statements by
kind (each audit query by its name in sql/queries.sql), py-spy stacks by pipeline step."""

from __future__ import annotations

from etl_worker.bench.profile import summarize
from etl_worker.bench.statements import Classifier
from etl_worker.queries import named_queries

SCHEMA = "etl_bench"


def test_statements_are_named_by_kind_and_audit_queries_by_their_name() -> None:
    kinds = Classifier(SCHEMA)
    claim = named_queries()["claim_partition"].replace("{schema}", f'"{SCHEMA}"')
    # As pg_stat_statements keeps them: psycopg's parameters as $n, ADBC's SELECTs in COPY.
    normalized = claim.replace("%(part_id)s", "$1").replace("%(run_id)s", "$2")
    begin = (
        "COPY (SELECT verdict, detail FROM \"etl_bench\".begin_write(7, 'h:1:t', 16384, "
        "'v01234', 991)) TO STDOUT"
    )

    finished = named_queries()["mark_finished"].replace("{schema}", f'"{SCHEMA}"')
    # Bound by psycopg for ADBC, then normalized by pg_stat_statements: NULL becomes $n too.
    finished = finished.replace("NULL", "$9").replace("%(part_id)s", "$1")

    assert kinds.kind(normalized) == "audit: claim_partition"
    assert kinds.kind(finished) == "audit: mark_finished"
    assert kinds.kind(begin + " (FORMAT binary)") == "audit: begin_write"
    assert kinds.kind('COPY "public" . "t" ("id") FROM STDIN WITH (FORMAT binary)') == (
        "write: COPY FROM STDIN"
    )
    read = (
        'COPY (SELECT * FROM "raw" WHERE "zip_code" = CAST(\'01234\' AS "pg_catalog"."text")) '
        "TO STDOUT (FORMAT binary)"
    )
    assert kinds.kind(read) == "read: COPY (SELECT …) TO STDOUT"
    lock = "COPY (SELECT pg_advisory_xact_lock(hashtextextended('t', 0))) TO STDOUT"
    assert kinds.kind(lock) == "advisory lock"
    assert kinds.kind('DELETE FROM "t" WHERE "zip_code" = CAST($1 AS text)').startswith("DELETE")
    assert kinds.kind("COMMIT") == "BEGIN / COMMIT / ROLLBACK"
    # Sent as a simple query (transactions.adbc_run), its constants true included become $n.
    timeouts = (
        "-- The first statement of a partition's write transaction\n"
        "SELECT set_config($1, $2, $3),\n       set_config($4, $5, $6),\n"
        "       set_config($7, $8, $9)"
    )
    assert kinds.kind(timeouts) == "audit: bound_write_transaction"
    # extract(epoch FROM ...): the field is a constant to pg_stat_statements too.
    assert kinds.kind(normalized.replace("extract(epoch", "extract($12")) == (
        "audit: claim_partition"
    )
    assert kinds.kind("SELECT oid, typname FROM pg_catalog.pg_type") == (
        "driver and run set-up (catalog, SHOW)"
    )


PIPELINE = "/src/etl_worker/pipeline.py"
TASK = "trace_task (/x/celery/app/trace.py:453);run (/src/etl_worker/tasks.py:80)"
EXTRACT = "/src/etl_worker/extract.py"
TRANSFORMS = "/src/etl_worker/transforms.py"


def test_py_spy_samples_are_put_in_the_pipeline_step_they_were_in() -> None:
    raw = "\n".join(
        [
            f"{TASK};run_partition ({PIPELINE}:120);_process ({PIPELINE}:300);"
            f"transform_partition ({PIPELINE}:270);"  # the read, in the run's snapshot if any
            f"read_in_snapshot (/src/etl_worker/snapshot.py:88);read_arrow ({EXTRACT}:80) 30",
            f"{TASK};run_partition ({PIPELINE}:120);_process ({PIPELINE}:300);"
            f"transform_partition ({PIPELINE}:280);clean_companies ({TRANSFORMS}:9);"
            "f (/x/pandas/core/frame.py:1) 50",
            f"{TASK};run_partition ({PIPELINE}:110);_claim ({PIPELINE}:155);"
            "Audit.claim (/src/etl_worker/audit.py:233) 10",
            f"{TASK};Celery.ack (/x/kombu/message.py:1) 10",
            "worker_loop (/x/billiard/pool.py:1) 900",  # idle between tasks: not counted
        ]
    )

    profile = summarize(raw, "etl_worker.transforms:clean_companies", partitions=2, rate=100)

    assert profile.samples == 100
    assert profile.steps == {
        "transform (the user's function)": 250.0,  # 50 samples / 100 Hz / 2 partitions
        "read: ADBC COPY TO -> Arrow": 150.0,
        "claim (audit UPDATE ... RETURNING)": 50.0,
        "Celery task around run_partition": 50.0,
    }
