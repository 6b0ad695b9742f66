"""Documented default values. `config.Settings` is built from these; nothing else reads them,
except `db.py`, which gives connections made without Settings the default NETWORK_TIMEOUT.

The timing defaults keep the order the Redis transport needs (see docs/reliability.md):
task time limit < visibility timeout < sweep-after, and a lease far shorter than all three,
so a dead worker's partitions are found by the sweeper long before Redis would redeliver
them.
"""

DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/etl"
BROKER_URL = "redis://127.0.0.1:6379/0"

RAW_TABLE = "raw_companies"
TARGET_TABLE = "clean_companies"
PARTITION_COLUMN = "zip_code"
TRANSFORM = "etl_worker.transforms:clean_companies"

#: Celery queue the partition tasks go to.
QUEUE = "etl"
#: Schema that holds the audit tables (runs, partitions).
AUDIT_SCHEMA = "etl"

#: Hard per-task limit (seconds): the pool process is killed past it.
TASK_TIME_LIMIT = 1800
#: Redis redelivers a message not acked this long after it was fetched. Must exceed
#: TASK_TIME_LIMIT, or a slow but healthy task runs twice in parallel.
VISIBILITY_TIMEOUT = 2400
#: A running attempt holds a lease this long; its worker's main process renews it every
#: LEASE_SECONDS/4.
#: An expired lease means the worker died: the sweeper re-enqueues the partition.
LEASE_SECONDS = 60
#: The longest one statement of a partition's write transaction may run or wait for a lock
#: (its wait for another writer of the same partition included) before Postgres cancels it.
#: It is what frees the locks of a writer frozen mid-statement (SIGSTOP, a paused VM); one
#: frozen between statements is ended after LEASE_SECONDS idle. ETL_WRITE_TIMEOUT unset
#: means this, or a quarter of the task time limit if that is less, and never below the
#: lease.
WRITE_TIMEOUT = 300
#: A queued or retrying partition whose message is in no Redis queue nor unacked set this
#: long after it was last sent is re-enqueued by the sweeper (its message was lost: a Redis
#: restart without persistence, a crash mid-publish). Must exceed VISIBILITY_TIMEOUT: a
#: message held by a dead node comes back from Redis within that, and is never swept twice.
#: ETL_SWEEP_AFTER unset means VISIBILITY_TIMEOUT plus this margin.
SWEEP_AFTER_MARGIN = 600
#: Seconds between sweeps: the workers take turns to sweep the whole database about once
#: per interval (etl-sweep --watch and etl-enqueue --wait sweep at this pace too). A dead
#: node's partitions are re-enqueued within LEASE_SECONDS + SWEEP_INTERVAL of its death.
SWEEP_INTERVAL = 30.0
#: A connection whose peer has gone silent (a network partition drops packets: no FIN, no
#: RST) is given up within about this many seconds, on every connection: Postgres (control,
#: data, the lease renewer's own) and Redis. network.py turns it into TCP keepalives, a TCP
#: user timeout and connect/command timeouts. A quarter of LEASE_SECONDS, so a renewal stuck
#: on a dead socket reconnects and renews long before its lease lapses, and a worker cut off
#: from Redis or Postgres stops holding its pool process for the task time limit.
NETWORK_TIMEOUT = 15.0
#: Attempts (deliveries that started the work) before a partition is marked failed. Bounds
#: the kill/requeue loop of a partition that always gets its process OOM-killed.
MAX_ATTEMPTS = 4
#: RabbitMQ only: a message returned to its quorum queue this many times is dropped
#: (x-delivery-limit), a second guard behind MAX_ATTEMPTS. Far above it, because RabbitMQ
#: counts every return, and most start no attempt: each warm shutdown or lost connection
#: returns the messages a worker had prefetched. 20 is RabbitMQ 4's own default.
DELIVERY_LIMIT = 20
#: Retries of one attempt for transient errors (connection drops, serialization failures).
MAX_RETRIES = 5
#: Exponential backoff for those retries: base * 2**n seconds, capped, with "equal jitter":
#: half of each delay fixed, half random (retry.compute_backoff).
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 60.0
#: A partition whose Arrow data exceeds this many bytes fails with a clear error instead of
#: being loaded (0 disables the check).
MEMORY_CEILING_BYTES = 4 * 1024**3

#: Peak memory one pool process needs for the largest partition, until the audit table has
#: measured it (etl-plan prints the measured value). The autoscaler sizes the pool with the
#: larger of this and the peak measured in recent runs.
PROCESS_MEMORY_BYTES = 1024**3
#: Memory the pool of one worker may use (0: whatever the machine or container has free).
WORKER_MEMORY_BYTES = 0
#: A pool process whose resident memory passes this after a task is replaced by a fresh
#: one (Celery's worker_max_memory_per_child); 0 keeps processes for the worker's life.
MAX_MEMORY_PER_CHILD_BYTES = 0
#: CloudWatch namespace etl-metrics publishes the backlog metrics under.
METRICS_NAMESPACE = "EtlWorker"

#: A partition with more rows than this is split at enqueue time into sub-tasks of about
#: this many rows each, by ranges of the split column, so one huge zip cannot keep a single
#: process busy long after the rest of the run is done (0 disables splitting).
SPLIT_ROWS = 200_000
