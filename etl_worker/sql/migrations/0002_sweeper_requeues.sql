-- The sweeper (abc172e) records how often it sent a partition again, and why, last time.
-- Audit schemas created before it lack these columns; the sweeper fails on every sweep there.

ALTER TABLE {schema}.partitions
    ADD COLUMN IF NOT EXISTS requeues integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS requeue_reason text;

