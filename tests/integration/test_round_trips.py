"""Round trips a partition costs between a worker and Postgres, counted on the wire (the
benchmark's relay, bench/wire.py): on small partitions they are most of the time, and each
is work for the one Postgres of the fleet. A count, not a timing: the same on any machine."""

from __future__ import annotations

from urllib.parse import urlsplit

from etl_worker import producer
from etl_worker.audit import Audit
from etl_worker.bench.wire import RoundTripRelay
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.db import connect
from etl_worker.partition import PartitionKey
from etl_worker.pipeline import run_partition
from tests.support.data import make_raw_table
from tests.support.services import Stack

#: Round trips of one partition, a warm process, after the changes in docs/scaling.md:
#: the run's guards 1 and the claim 1 (psycopg); read 6: the REPEATABLE READ transaction
#: the fence token needs (SET TRANSACTION 1 as a simple query, the token 3: prepare,
#: describe, COPY TO), the read 3 — its BEGIN and ROLLBACK ride on the driver's; write
#: transaction 13: BEGIN with the timeouts 1, begin_write 3 (lock, ownership and fence in
#: one function), DELETE 1, adbc_ingest 4 (two catalog look-ups, COPY FROM start and end),
#: the fingerprint and finished UPDATEs with the COMMIT 1 — counted, the rest are the
#: driver's transaction edges. Was 32 before the read ran in one statement, the statements
#: whose result is not needed went as simple queries (transactions.adbc_run) and the
#: transaction's BEGIN and COMMIT went with its first and last statements
#: (transactions.explicit_transaction); 18 before the fence (issue 11) put the read back
#: in a transaction of its own.
ROUND_TRIPS_PER_PARTITION = 21


def test_a_partition_costs_a_known_number_of_round_trips(stack: Stack) -> None:
    url = stack.database_url
    make_raw_table(url, zips=6, rows_per_zip=5)
    settings = Settings.load(stack.env)
    run = producer.enqueue_run(settings)  # no worker: this test runs the partitions
    with connect(url) as conn:
        parts = Audit(conn, settings.audit_schema).partitions(run.run_id)
    server = urlsplit(url)
    with RoundTripRelay(server.hostname or "127.0.0.1", server.port or 5432) as relay:
        relayed = settings.replace(database_url=relay.url(server.path.lstrip("/")))
        ctx = WorkerContext(relayed)
        try:
            counts = []
            for part in parts:
                before = relay.round_trips
                outcome = run_partition(
                    ctx, run.run_id, part["part_id"], PartitionKey(part["part_key"]),
                    part["task_id"], renews_lease=False,
                )  # fmt: skip
                assert outcome.status == "finished"
                counts.append(relay.round_trips - before)
        finally:
            ctx.close()
    # The first partition also opens the connections and learns the run: not counted.
    # psycopg prepares a statement on its sixth execution (the guards read and the claim):
    # one more round trip each, once, in the same partition.
    steady = counts[1:]
    assert steady.count(ROUND_TRIPS_PER_PARTITION) >= len(steady) - 1, counts
    assert max(steady) <= ROUND_TRIPS_PER_PARTITION + 2, counts
