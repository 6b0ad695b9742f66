-- Named queries of the audit table. `-- name: x` starts a query; {schema} is the quoted
-- audit schema; values are always psycopg parameters (%(name)s), never formatted in.

-- name: insert_run
INSERT INTO {schema}.runs (run_id, raw_table, target_table, partition_column, transform, mode,
                           options, transform_fingerprint, snapshot_id, target_oid)
VALUES (%(run_id)s, %(raw_table)s, %(target_table)s, %(partition_column)s, %(transform)s,
        %(mode)s, %(options)s, %(transform_fingerprint)s, %(snapshot_id)s, %(target_oid)s);

-- name: lock_target_runs
-- Enqueues (and resumes) of runs on one target take turns from their check for an
-- unfinished run to their partitions' insert: two at once cannot both pass the check.
SELECT pg_advisory_xact_lock(hashtextextended('etl-worker runs on ' || %(target_oid)s::text, 0));

-- name: unfinished_run_on_target
-- Another run writing the same table (same oid) with partitions still to do.
SELECT r.run_id, r.target_table, count(*) AS unfinished
FROM {schema}.runs r JOIN {schema}.partitions p USING (run_id)
WHERE r.target_oid = %(target_oid)s AND r.run_id <> %(run_id)s AND r.mode <> 'dry_run'
  AND p.state IN ('queued', 'started', 'retrying')
GROUP BY r.run_id, r.target_table, r.created_at
ORDER BY r.created_at
LIMIT 1;

-- name: cancel_run
-- etl-enqueue --cancel: the run's unfinished partitions are cancelled. A write in progress
-- holds its row (begin_write): the cancel waits for it and then finds it finished.
UPDATE {schema}.partitions
SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
    error = 'cancelled by etl-enqueue --cancel'
WHERE run_id = %(run_id)s AND state IN ('queued', 'started', 'retrying')
RETURNING part_id;

-- name: run_target_oid
SELECT target_oid FROM {schema}.runs WHERE run_id = %(run_id)s;

-- name: get_run
SELECT run_id, raw_table, target_table, partition_column, transform, mode, options,
       transform_fingerprint, snapshot_id, created_at, enqueued_at
FROM {schema}.runs WHERE run_id = %(run_id)s;

-- name: mark_run_enqueued
UPDATE {schema}.runs SET enqueued_at = now() WHERE run_id = %(run_id)s;

-- name: insert_partitions
-- One row per partition key; task ids are made here so the audit row names the Celery
-- message before it is sent.
INSERT INTO {schema}.partitions (run_id, part_key, split_lo, split_hi, task_id)
SELECT %(run_id)s, k.key, k.lo, k.hi, gen_random_uuid()::text
FROM unnest(%(keys)s::text[], %(los)s::bigint[], %(his)s::bigint[]) AS k(key, lo, hi)
RETURNING part_id, part_key, task_id, split_lo, split_hi;

-- name: requeue_unfinished
-- For --resume and the sweeper: partitions of a run that did not finish (cancelled ones too)
-- go back to queued with a fresh task id and a fresh attempt budget. Superseded ones are
-- done: another run wrote a newer read of them.
UPDATE {schema}.partitions
SET state = 'queued', attempts = 0, retries = 0, task_id = gen_random_uuid()::text,
    lease_owner = NULL, lease_expires_at = NULL, queued_at = now(), error = NULL,
    error_traceback = NULL, superseded_by = NULL
WHERE run_id = %(run_id)s AND state NOT IN ('finished', 'superseded')
  AND (%(part_ids)s::bigint[] IS NULL OR part_id = ANY(%(part_ids)s::bigint[]))
RETURNING part_id, part_key, task_id, split_lo, split_hi;

-- name: resume_candidates
-- For --resume: the partitions of a run that did not finish, with what tells one still on
-- its way (a waiting one whose message the broker holds, a started one with a live lease)
-- from one that nothing will deliver again.
SELECT part_id, state::text, task_id,
       coalesce(state = 'started' AND lease_expires_at > now(), false)
FROM {schema}.partitions
WHERE run_id = %(run_id)s AND state NOT IN ('finished', 'superseded');

-- name: requeue_expired_leases
-- The sweeper's fast path: an attempt whose lease ran out was not renewed by its heartbeat,
-- so its worker is dead (node terminated, process killed) or gave the attempt up. Send the partition again with a
-- fresh task id; `attempts` is kept, so a partition that kills its node every time still
-- ends `failed` after ETL_MAX_ATTEMPTS.
UPDATE {schema}.partitions p
SET state = 'queued', task_id = gen_random_uuid()::text, lease_owner = NULL,
    lease_expires_at = NULL, queued_at = now(), requeues = p.requeues + 1,
    requeue_reason = format('lease of %%s (worker %%s) ran out at %%s with no outcome',
                            p.lease_owner, p.worker, p.lease_expires_at)
WHERE p.state = 'started' AND p.lease_expires_at < now()
  AND (%(run_id)s::text IS NULL OR p.run_id = %(run_id)s::text)
RETURNING p.run_id, p.part_id, p.part_key, p.task_id, p.split_lo, p.split_hi;

-- name: unsent_candidates
-- Partitions waiting for a message (queued, or retrying after a countdown) whose message was
-- last sent longer ago than the threshold: the sweeper checks whether Redis still has it.
SELECT run_id, part_id, task_id
FROM {schema}.partitions
WHERE state IN ('queued', 'retrying')
  AND greatest(queued_at, heartbeat_at) < now() - make_interval(secs => %(after)s)
  AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s::text);

-- name: requeue_lost_messages
-- Re-send partitions whose message is nowhere in the broker (%(where)s says how it was
-- looked for: "in no Redis queue nor unacked set"). Matching the task id
-- as well makes it a no-op for a row a worker claimed (or another sweeper re-sent) since
-- the check.
UPDATE {schema}.partitions p
SET state = 'queued', task_id = gen_random_uuid()::text, lease_owner = NULL,
    lease_expires_at = NULL, queued_at = now(), requeues = p.requeues + 1,
    requeue_reason = format('message %%s was %%s after %%ss', p.task_id, %(where)s::text,
                            %(after)s)
FROM unnest(%(part_ids)s::bigint[], %(task_ids)s::text[]) AS lost(part_id, task_id)
WHERE p.part_id = lost.part_id AND p.task_id = lost.task_id
  AND p.state IN ('queued', 'retrying')
RETURNING p.run_id, p.part_id, p.part_key, p.task_id, p.split_lo, p.split_hi;

-- name: claim_partition
-- Start an attempt: take the lease unless the partition is done (finished, failed,
-- superseded, cancelled), leased by a live attempt, or out of attempts. Returns the row as
-- it was plus whether the claim took, and the audit schema's version: a worker whose code
-- expects another version claims nothing (migrations.py), checked here at no extra round
-- trip. The row's partition value and split are returned too, and the worker works on
-- those: a message that names another value or split than its row claims nothing, and is
-- counted on the run (refused_messages), in the same statement.
WITH version AS (
    SELECT max(version) AS v FROM {schema}.schema_version
), cur AS (
    SELECT part_id, state, attempts, retries, lease_owner,
           extract(epoch FROM lease_expires_at - now()) AS lease_left,
           part_key, split_lo, split_hi,
           (part_key IS NOT DISTINCT FROM %(part_key)s::text
            AND split_lo IS NOT DISTINCT FROM %(split_lo)s::bigint
            AND split_hi IS NOT DISTINCT FROM %(split_hi)s::bigint) AS matches
    FROM {schema}.partitions
    -- run_id too: a stale message from another run must never claim this row.
    WHERE part_id = %(part_id)s AND run_id = %(run_id)s
    FOR UPDATE
), refused AS (
    UPDATE {schema}.runs r SET refused_messages = r.refused_messages + 1
    FROM cur
    WHERE r.run_id = %(run_id)s AND NOT cur.matches
    RETURNING r.run_id
), claimed AS (
    UPDATE {schema}.partitions p
    SET state = 'started', attempts = p.attempts + 1, task_id = %(task_id)s,
        worker = %(worker)s, lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = now(), heartbeat_at = now()
    FROM cur, version
    WHERE p.part_id = cur.part_id
      AND cur.matches
      AND version.v = %(schema_version)s
      AND cur.state IN ('queued', 'started', 'retrying')
      AND (cur.lease_left IS NULL OR cur.lease_left <= 0 OR cur.lease_owner = %(owner)s
           OR cur.lease_owner = ANY(%(dead_owners)s::text[]))
      AND cur.attempts - cur.retries < %(max_attempts)s
    RETURNING p.attempts
)
SELECT cur.state::text, cur.attempts, cur.retries, cur.lease_owner, cur.lease_left,
       claimed.attempts AS claimed_attempts, (SELECT v FROM version) AS schema_version,
       cur.matches, cur.part_key, cur.split_lo, cur.split_hi
FROM cur LEFT JOIN claimed ON true;

-- name: renew_lease
-- Only the attempt holding the lease, and only while it holds it: a lease that lapsed or
-- was ended (expire_lease) is not revived by a late heartbeat.
UPDATE {schema}.partitions
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s), heartbeat_at = now()
WHERE part_id = %(part_id)s AND lease_owner = %(owner)s AND state = 'started'
  AND lease_expires_at > now();

-- name: renew_leases
-- The worker's main process renews the leases of every attempt its pool processes run, in
-- one statement, from a thread the transforms cannot starve (supervisor.py). The same
-- checks as renew_lease, per (partition, owner) pair: a lease that lapsed or moved on is
-- not revived. Returns the owners renewed; the others are no longer theirs.
UPDATE {schema}.partitions p
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s), heartbeat_at = now()
FROM unnest(%(part_ids)s::bigint[], %(owners)s::text[]) AS l(part_id, owner)
WHERE p.part_id = l.part_id AND p.lease_owner = l.owner AND p.state = 'started'
  AND p.lease_expires_at > now()
RETURNING p.lease_owner;

-- name: record_death
-- An attempt's pool process died (killed by a signal, out of memory, exited): its worker's
-- main process records how, while the dead attempt still holds the lease. The lease is
-- left as it is: the message Celery requeues takes it over (a dead process on its own
-- host); an expired one would have the sweeper send the partition a second time.
UPDATE {schema}.partitions
SET death_cause = %(cause)s, error = %(error)s
WHERE part_id = %(part_id)s AND lease_owner = %(owner)s AND state = 'started'
RETURNING part_id;

-- name: fail_dead_attempt
-- An attempt's pool process was killed at the hard time limit: the partition fails (its
-- message is acked, and a retry would be stopped the same way). Only while that attempt
-- still holds the lease.
UPDATE {schema}.partitions
SET state = 'failed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    death_cause = %(cause)s, error = %(error)s
WHERE part_id = %(part_id)s AND lease_owner = %(owner)s AND state = 'started'
RETURNING part_id;

-- name: last_death
SELECT death_cause, error FROM {schema}.partitions WHERE part_id = %(part_id)s;

-- name: bound_write_transaction
-- The first statement of a partition's write transaction (pipeline.py): how long it may
-- wait for a lock or run one statement, and sit idle between two, before Postgres ends it
-- and frees its locks. Values in milliseconds; local to the transaction.
SELECT set_config('lock_timeout', %(statement_ms)s, true),
       set_config('statement_timeout', %(statement_ms)s, true),
       set_config('idle_in_transaction_session_timeout', %(idle_ms)s, true);

-- name: take_sweep_turn
-- The fleet's sweep turn: matches (and stamps) only when nobody swept in the last
-- %(every)s seconds. Two workers trying at once serialize on the row; the second re-reads
-- the stamped row and matches nothing.
UPDATE {schema}.sweep_state
SET last_sweep_at = now(), swept_by = %(by)s
WHERE last_sweep_at < now() - make_interval(secs => %(every)s)
RETURNING last_sweep_at;

-- name: begin_write
-- The write transaction's lock, ownership and fence checks in one round trip (migration 4).
SELECT verdict, detail
FROM {schema}.begin_write(%(part_id)s, %(owner)s, %(target_oid)s, %(part_value)s, %(token)s);

-- name: mark_finished
UPDATE {schema}.partitions
SET state = 'finished', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    error = NULL, error_traceback = NULL, rows_read = %(rows_read)s, rows_written = %(rows_written)s,
    read_seconds = %(read_seconds)s, transform_seconds = %(transform_seconds)s,
    write_seconds = %(write_seconds)s, duration_seconds = %(duration_seconds)s,
    memory_before_bytes = %(memory_before_bytes)s, memory_after_bytes = %(memory_after_bytes)s,
    peak_rss_bytes = %(peak_rss_bytes)s
WHERE part_id = %(part_id)s AND lease_owner = %(owner)s AND state = 'started'
RETURNING part_id;

-- name: mark_retrying
-- Only by the attempt that holds the lease: a stale attempt (its lease lapsed and another
-- took the partition over) changes nothing.
UPDATE {schema}.partitions
SET state = 'retrying', retries = retries + 1, lease_owner = NULL, lease_expires_at = NULL,
    error = %(error)s
WHERE part_id = %(part_id)s AND state = 'started' AND lease_owner = %(owner)s
RETURNING part_id;

-- name: mark_failed
-- Only by the attempt that holds the lease (see mark_retrying).
UPDATE {schema}.partitions
SET state = 'failed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    error = %(error)s, error_traceback = %(traceback)s,
    rows_read = coalesce(%(rows_read)s, rows_read)
WHERE part_id = %(part_id)s AND state = 'started' AND lease_owner = %(owner)s
RETURNING part_id;

-- name: mark_exhausted
-- A delivery whose claim was refused for want of attempts fails the partition, unless an
-- attempt holds a live lease on it (or it is done meanwhile); a dead process's lease on
-- this host is no lease.
UPDATE {schema}.partitions
SET state = 'failed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    error = %(error)s, rows_read = coalesce(%(rows_read)s, rows_read)
WHERE part_id = %(part_id)s AND state IN ('queued', 'started', 'retrying')
  AND (lease_expires_at IS NULL OR lease_expires_at <= now()
       OR lease_owner = ANY(%(dead_owners)s::text[]))
RETURNING part_id;

-- name: expire_lease
-- An attempt that ends without an outcome (cold shutdown, cancelled after a broker
-- connection loss): its lease runs out now. A redelivered message claims the partition at
-- once; if none comes (the message is parked in Redis's unacked set until the visibility
-- timeout), the sweeper's expired-lease path sends it again.
UPDATE {schema}.partitions
SET lease_expires_at = now()
WHERE part_id = %(part_id)s AND lease_owner = %(owner)s AND state = 'started'
RETURNING part_id;

-- name: ping
-- A worker's main process checks that its database answers (health.py).
SELECT 1;

-- name: run_partitions
SELECT part_id, part_key, split_lo, split_hi, state::text, attempts, retries, task_id, worker,
       queued_at, started_at, finished_at, rows_read, rows_written, read_seconds,
       transform_seconds, write_seconds, duration_seconds, memory_before_bytes,
       memory_after_bytes, peak_rss_bytes, error, lease_owner, requeues, requeue_reason,
       superseded_by
FROM {schema}.partitions WHERE run_id = %(run_id)s ORDER BY part_id;

-- name: run_superseded
-- Superseded partitions of a run, grouped by the run whose newer read replaced them.
SELECT superseded_by, array_agg(part_key ORDER BY part_key NULLS FIRST, split_lo),
       array_agg(split_lo ORDER BY part_key NULLS FIRST, split_lo),
       array_agg(split_hi ORDER BY part_key NULLS FIRST, split_lo)
FROM {schema}.partitions
WHERE run_id = %(run_id)s AND state = 'superseded'
GROUP BY superseded_by ORDER BY superseded_by;

-- name: run_refused_messages
SELECT refused_messages FROM {schema}.runs WHERE run_id = %(run_id)s;

-- name: run_counts
SELECT state::text, count(*), coalesce(sum(rows_read), 0), coalesce(sum(rows_written), 0)
FROM {schema}.partitions WHERE run_id = %(run_id)s GROUP BY state;

-- name: latest_run
SELECT run_id FROM {schema}.runs ORDER BY created_at DESC LIMIT 1;

-- name: run_timing
SELECT min(started_at), max(finished_at), now(),
       coalesce(sum(duration_seconds), 0), max(peak_rss_bytes),
       coalesce(sum(memory_before_bytes), 0), coalesce(sum(memory_after_bytes), 0),
       max(memory_before_bytes)
FROM {schema}.partitions WHERE run_id = %(run_id)s;

-- name: run_failures
SELECT part_key, split_lo, split_hi, error, attempts, error_traceback
FROM {schema}.partitions
WHERE run_id = %(run_id)s AND state = 'failed'
ORDER BY part_key NULLS FIRST, split_lo;

-- name: run_slowest
-- Rows read, not written: a dry run writes none, and size is what makes a partition slow.
SELECT part_key, split_lo, split_hi, duration_seconds, rows_read, worker
FROM {schema}.partitions
WHERE run_id = %(run_id)s AND state = 'finished'
ORDER BY duration_seconds DESC NULLS LAST
LIMIT %(limit)s;

-- name: recent_peak_rss
-- The largest peak memory of one pool process in the latest runs: what a process needs for
-- the biggest partition (the memory-aware autoscaler sizes pools with it).
SELECT max(peak_rss_bytes)
FROM {schema}.partitions
WHERE run_id IN (SELECT run_id FROM {schema}.runs ORDER BY created_at DESC LIMIT %(runs)s);

-- Which code a run wants, which snapshot it reads (fingerprint.py, snapshot.py) ----------

-- name: run_guards
-- Read on every delivery, before the claim: --resume may have changed both since the
-- worker first saw the run (a new fingerprint; the snapshot forgotten).
SELECT transform_fingerprint, snapshot_id FROM {schema}.runs WHERE run_id = %(run_id)s;

-- name: resume_run_guards
-- --resume: the run now wants the transform as the producer loads it today, and reads the
-- raw table as it is (the snapshot of an earlier producer is gone or about to be).
UPDATE {schema}.runs SET transform_fingerprint = %(fingerprint)s, snapshot_id = NULL
WHERE run_id = %(run_id)s;

-- name: record_refusal
-- A worker refused the run's partitions (once per worker and run; the latest reason wins).
INSERT INTO {schema}.transform_refusals (run_id, worker, loaded, wanted, reason)
VALUES (%(run_id)s, %(worker)s, %(loaded)s, %(wanted)s, %(reason)s)
ON CONFLICT (run_id, worker) DO UPDATE
SET loaded = excluded.loaded, wanted = excluded.wanted, reason = excluded.reason,
    refused_at = now();

-- name: clear_refusal
-- The worker serves the run now (restarted with the code the run wants).
DELETE FROM {schema}.transform_refusals WHERE run_id = %(run_id)s AND worker = %(worker)s;

-- name: run_refusals
-- Refusals of the fingerprint the run wants now (one --resume ago they were about another),
-- for etl-status.
SELECT r.worker, r.loaded, r.wanted, r.reason, r.refused_at
FROM {schema}.transform_refusals r JOIN {schema}.runs u USING (run_id)
WHERE r.run_id = %(run_id)s AND r.wanted IS NOT DISTINCT FROM u.transform_fingerprint
ORDER BY r.refused_at;

-- name: record_partition_fingerprint
-- Inside the write transaction (pipeline.py): the fingerprint of the code that wrote the
-- partition's rows commits with them.
UPDATE {schema}.partitions SET transform_fingerprint = %(fingerprint)s
WHERE part_id = %(part_id)s;

-- name: run_working_seconds
-- Seconds the run's partitions were being worked on: the union of their attempts' spans
-- (start to finish; to now while running), with gaps under %(gap)s seconds bridged (the
-- moments between one task and the next). The idle hours between a run and its --resume
-- are not in it, so throughput and elapsed after a resume measure work, not waiting.
WITH spans AS (
    SELECT started_at AS s,
           CASE WHEN state = 'started' THEN now()
                WHEN state IN ('finished', 'failed') THEN finished_at
                ELSE heartbeat_at END AS e
    FROM {schema}.partitions
    WHERE run_id = %(run_id)s AND started_at IS NOT NULL
), valid AS (
    SELECT s, e FROM spans WHERE e >= s
), marked AS (
    SELECT s, e,
           CASE WHEN s <= max(e) OVER (ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING
                                                           AND 1 PRECEDING)
                         + make_interval(secs => %(gap)s)
                THEN 0 ELSE 1 END AS starts_island
    FROM valid
), islands AS (
    SELECT s, e, sum(starts_island) OVER (ORDER BY s, e) AS island FROM marked
)
SELECT coalesce(sum(extract(epoch FROM island_end - island_start)), 0)::float8
FROM (SELECT min(s) AS island_start, max(e) AS island_end FROM islands GROUP BY island) AS i;

-- name: recent_runs
-- The latest runs with their partition counts, for etl-status --list.
SELECT r.run_id, r.raw_table, r.target_table, r.transform, r.mode, r.created_at,
       count(p.part_id),
       count(p.part_id) FILTER (WHERE p.state = 'finished'),
       count(p.part_id) FILTER (WHERE p.state = 'failed'),
       count(p.part_id) FILTER (WHERE p.state = 'started'),
       coalesce(sum(p.rows_written), 0)
FROM (SELECT * FROM {schema}.runs ORDER BY created_at DESC LIMIT %(limit)s) AS r
LEFT JOIN {schema}.partitions AS p USING (run_id)
GROUP BY r.run_id, r.raw_table, r.target_table, r.transform, r.mode, r.created_at
ORDER BY r.created_at DESC;

-- name: record_contract_failures
-- What a partition's contract check found (contracts.py), recorded before the partition is
-- marked failed: the failed checks, their counts and a sample of the offending rows.
UPDATE {schema}.partitions SET contract_failures = %(failures)s
WHERE part_id = %(part_id)s AND state <> 'finished';

-- name: mark_finished_extras
-- In the write transaction, after mark_finished: the code's fingerprint and the contract's
-- outcome (rows quarantined, the checks they failed).
UPDATE {schema}.partitions
SET code_fingerprint = %(code_fingerprint)s, rows_quarantined = %(rows_quarantined)s,
    contract_failures = %(contract_failures)s
WHERE part_id = %(part_id)s;

-- name: record_raw_fingerprints
-- The raw fingerprints the producer took at enqueue (fingerprints.py), on the run's
-- partitions: on the first (or only) task of each partition, so that the tasks of a split
-- partition sum to its fingerprint. A value's partition by `=`; the NULL partition apart.
UPDATE {schema}.partitions p SET raw_rows = f.rows, raw_hash = f.hash
FROM unnest(%(keys)s::text[], %(rows)s::bigint[], %(hashes)s::numeric[]) AS f(key, rows, hash)
WHERE p.run_id = %(run_id)s AND p.split_lo IS NULL AND p.part_key = f.key;

-- name: record_raw_fingerprint_null
UPDATE {schema}.partitions SET raw_rows = %(rows)s, raw_hash = %(hash)s
WHERE run_id = %(run_id)s AND split_lo IS NULL AND part_key IS NULL;

-- name: record_raw_fingerprint_splits
-- The other tasks of split partitions add nothing to their partition's fingerprint.
UPDATE {schema}.partitions SET raw_rows = 0, raw_hash = 0
WHERE run_id = %(run_id)s AND split_lo IS NOT NULL;

-- name: contract_failures
-- Contract failures of a run's partitions (failed, or finished with rows quarantined).
SELECT part_key, split_lo, split_hi, state::text, rows_quarantined, contract_failures
FROM {schema}.partitions
WHERE run_id = %(run_id)s AND contract_failures IS NOT NULL
ORDER BY part_key NULLS FIRST, split_lo;

-- name: record_incremental
UPDATE {schema}.runs SET incremental = %(incremental)s WHERE run_id = %(run_id)s;

-- name: run_incremental
SELECT incremental FROM {schema}.runs WHERE run_id = %(run_id)s;

-- name: last_finished_per_partition
-- For etl-enqueue --changed-since: per partition key of the raw table, its latest run (of
-- those created up to the given one, writing runs only) in which all its tasks finished,
-- with that run's target and the fingerprints recorded. A split partition's tasks sum up.
WITH since AS (
    SELECT created_at FROM {schema}.runs WHERE run_id = %(since)s
), per_run AS (
    SELECT p.run_id, r.created_at, r.target_table, p.part_key,
           bool_and(p.state = 'finished') AS done,
           bool_and(p.raw_rows IS NOT NULL) AS fingerprinted,
           sum(p.raw_rows) AS raw_rows, sum(p.raw_hash) AS raw_hash,
           min(p.code_fingerprint) AS code_fingerprint,
           count(DISTINCT p.code_fingerprint) AS codes
    FROM {schema}.partitions p JOIN {schema}.runs r USING (run_id)
    WHERE r.raw_table = %(raw_table)s AND r.partition_column = %(partition_column)s
      AND r.mode = 'normal' AND r.created_at <= (SELECT created_at FROM since)
    GROUP BY p.run_id, r.created_at, r.target_table, p.part_key
)
SELECT DISTINCT ON (part_key) part_key, run_id, target_table, fingerprinted, raw_rows,
       raw_hash, code_fingerprint, codes
FROM per_run WHERE done
ORDER BY part_key, created_at DESC, run_id DESC;
