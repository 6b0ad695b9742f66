-- The transform that ran, and the snapshot a run reads (issue 11, §7 and §8).
-- Self-contained: it depends on nothing added after migration 3.

-- What the run wants: the fingerprint of its transform's source (fingerprint.py), taken
-- when it was enqueued and again on --resume; a worker whose loaded code differs refuses
-- its partitions. NULL on runs enqueued before: any worker may serve them.
ALTER TABLE {schema}.runs ADD COLUMN transform_fingerprint text;
-- The exported snapshot (pg_export_snapshot) every partition of an `--snapshot` run reads;
-- NULL: each partition reads the raw table as it is when it runs.
ALTER TABLE {schema}.runs ADD COLUMN snapshot_id text;

-- The fingerprint of the transform that wrote the partition's rows, recorded with them.
ALTER TABLE {schema}.partitions ADD COLUMN transform_fingerprint text;

-- Workers that refused a run's partitions because they run other transform code (or may
-- not import it): one row per (run, worker), so etl-status can say "N workers run an
-- older transform". A worker that serves the run again removes its row.
CREATE TABLE {schema}.transform_refusals (
    run_id      text NOT NULL REFERENCES {schema}.runs ON DELETE CASCADE,
    worker      text NOT NULL,
    loaded      text,
    wanted      text,
    reason      text NOT NULL,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, worker)
);
