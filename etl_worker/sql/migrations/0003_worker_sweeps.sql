-- Workers sweep and supervise their pool processes (issue 11, §5 and §5b).

-- One row: when the fleet last swept and who did. A worker takes its turn to sweep with one
-- UPDATE that matches only when the last sweep is older than ETL_SWEEP_INTERVAL, so about
-- one sweep per interval happens fleet-wide however many workers try (sweeper.py says why
-- a row and not a lock).
CREATE TABLE {schema}.sweep_state (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_sweep_at timestamptz NOT NULL DEFAULT '-infinity',
    swept_by      text
);
INSERT INTO {schema}.sweep_state DEFAULT VALUES;

-- How the last attempt's pool process died, as its worker's main process saw it:
-- time_limit, oom, signal or exit (deaths.Cause). The text is in `error`.
ALTER TABLE {schema}.partitions ADD COLUMN death_cause text;

-- The fleet sweep looks at every run's unfinished partitions every interval: keep that an
-- index scan however many finished runs the table holds.
CREATE INDEX partitions_unfinished_idx ON {schema}.partitions (state)
    WHERE state IN ('queued', 'started', 'retrying');
