-- Data contracts and incremental runs (issue 15). Self-contained: it depends on nothing
-- added after migration 3.

-- §2: what a partition's contract check found when it refused the partition (failed) or
-- quarantined some of its rows (finished): per failed check, its column, how many values
-- failed and up to ETL_CONTRACT_SAMPLE_ROWS of the offending rows (contracts.py).
ALTER TABLE {schema}.partitions ADD COLUMN contract_failures jsonb;
-- Rows of the partition written to the run's quarantine table instead of the target.
ALTER TABLE {schema}.partitions ADD COLUMN rows_quarantined bigint;

-- §1: the fingerprint of the raw rows a finished partition read (fingerprints.py), taken
-- by Postgres before the read: their count and the sum of a 64-bit hash of each row's text.
-- Both are additive, so a split partition's tasks sum to the fingerprint of the whole
-- partition, which is what etl-enqueue --changed-since compares.
ALTER TABLE {schema}.partitions ADD COLUMN raw_rows bigint;
ALTER TABLE {schema}.partitions ADD COLUMN raw_hash numeric;
-- The fingerprint of the code that decided the rows written (transform, contract,
-- quarantine), as the worker that wrote them computed it.
ALTER TABLE {schema}.partitions ADD COLUMN code_fingerprint text;

-- An incremental run's selection: what it compared against, how many partitions it
-- enqueued and skipped, and why (incremental.py). NULL for a run of every partition.
ALTER TABLE {schema}.runs ADD COLUMN incremental jsonb;

