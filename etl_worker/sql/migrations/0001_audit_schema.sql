-- Migration 1: the audit schema as first shipped (8d620b3): one row per run, one row per
-- (run, partition). It is the source of truth for what finished; Celery's own state (result
-- backend, Flower) is not. {schema} is the quoted audit schema (ETL_AUDIT_SCHEMA).
-- Idempotent, like every migration up to 2: audit schemas made before migrations were
-- numbered have these objects already, and no version table to say so.

CREATE SCHEMA IF NOT EXISTS {schema};

DO $$ BEGIN
    CREATE TYPE {schema}.partition_state AS ENUM
        ('queued', 'started', 'retrying', 'finished', 'failed');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS {schema}.runs (
    run_id           text PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    raw_table        text NOT NULL,
    target_table     text NOT NULL,
    partition_column text NOT NULL,
    transform        text NOT NULL,
    -- normal: write the target; dry_run: read and transform, write nothing.
    mode             text NOT NULL DEFAULT 'normal',
    -- Run-level settings the workers follow (e.g. the split key), as JSON.
    options          jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    enqueued_at      timestamptz
);

CREATE TABLE IF NOT EXISTS {schema}.partitions (
    part_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id              text NOT NULL REFERENCES {schema}.runs ON DELETE CASCADE,
    -- The partition value as text. NULL is the partition of rows whose key IS NULL;
    -- '' (empty string) is a partition of its own.
    part_key            text,
    -- A sub-range [split_lo, split_hi) of the split key for partitions too big for one
    -- task; NULL for a whole partition.
    split_lo            bigint,
    split_hi            bigint,
    state               {schema}.partition_state NOT NULL DEFAULT 'queued',
    -- Every delivery that started work; `retries` of them were scheduled retries after a
    -- transient error. The difference counts attempts that died without a word (worker
    -- process killed), which is capped by ETL_MAX_ATTEMPTS.
    attempts            integer NOT NULL DEFAULT 0,
    retries             integer NOT NULL DEFAULT 0,
    task_id             text,
    worker              text,
    -- The running attempt's lease, renewed by its heartbeat. Expired = the worker died.
    lease_owner         text,
    lease_expires_at    timestamptz,
    queued_at           timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    heartbeat_at        timestamptz,
    finished_at         timestamptz,
    rows_read           bigint,
    rows_written        bigint,
    read_seconds        double precision,
    transform_seconds   double precision,
    write_seconds       double precision,
    duration_seconds    double precision,
    memory_before_bytes bigint,
    memory_after_bytes  bigint,
    peak_rss_bytes      bigint,
    error               text,
    UNIQUE NULLS NOT DISTINCT (run_id, part_key, split_lo)
);

CREATE INDEX IF NOT EXISTS partitions_run_state_idx ON {schema}.partitions (run_id, state);
