-- Exactly one copy under every race (issue 11, sections 1 to 3): writers of one partition
-- lock on the target's identity and the partition value, the newest read of a partition
-- wins (fences), a run can be cancelled, a message that names another partition than its
-- audit row is refused and counted.

-- superseded: a newer read of the same (target, partition value), by another run, was
-- written first; this attempt's older read was discarded (superseded_by names that run).
-- cancelled: etl-enqueue --cancel; workers skip it, --resume sends it again.
-- (ADD VALUE inside a transaction: the new values are usable once this one commits; only
-- the PL/pgSQL below names them, and it is planned when first called.)
ALTER TYPE {schema}.partition_state ADD VALUE IF NOT EXISTS 'superseded';
ALTER TYPE {schema}.partition_state ADD VALUE IF NOT EXISTS 'cancelled';

ALTER TABLE {schema}.partitions ADD COLUMN superseded_by text;

-- The target's identity (its oid, resolved by to_regclass at enqueue): a second run on the
-- same table is refused while this one is unfinished, however each names the table.
ALTER TABLE {schema}.runs
    ADD COLUMN target_oid oid,
    -- Messages whose partition value or split disagreed with their audit row: refused,
    -- nothing written (pipeline.py).
    ADD COLUMN refused_messages integer NOT NULL DEFAULT 0;
CREATE INDEX runs_target_oid_idx ON {schema}.runs (target_oid);

-- Runs already enqueued: their target's oid as this session resolves its name (`table` or
-- `schema.table`, each part quoted as the code quotes it: db.TableName).
UPDATE {schema}.runs
SET target_oid = to_regclass(
    CASE WHEN strpos(target_table, '.') > 0
         THEN quote_ident(split_part(target_table, '.', 1)) || '.'
              || quote_ident(split_part(target_table, '.', 2))
         ELSE quote_ident(target_table) END)::oid
WHERE mode <> 'dry_run';

-- The newest read written of each (target, partition value), per run: the fence token is
-- pg_snapshot_xmax of the snapshot the partition was read in (pipeline.py says why). A
-- write whose read is older than another run's written read is discarded.
CREATE TABLE {schema}.partition_fences (
    target     oid NOT NULL,
    -- 'n' for the NULL partition, 'v' || value otherwise: NULL and '' differ.
    part_value text NOT NULL,
    run_id     text NOT NULL,
    token      bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, part_value, run_id)
);

-- The start of a partition's write, in one round trip, inside the write transaction (after
-- its timeouts are set): lock the (target, value), check that this attempt still holds the
-- partition, check the fence, record this read as written. Returns what to do:
--   write       go on: DELETE, COPY, mark_finished, commit
--   superseded  another run's newer read was written (detail: that run); the row is marked
--               superseded here: commit, write nothing
--   stale       the partition is no longer this attempt's (detail: its state, and the
--               lease owner): roll back, write nothing
-- p_target NULL (a dry run: nothing written) takes no lock and no fence.
CREATE FUNCTION {schema}.begin_write(
    p_part_id bigint, p_owner text, p_target oid, p_value text, p_token bigint,
    OUT verdict text, OUT detail text
) LANGUAGE plpgsql AS $$
DECLARE
    me record;
    newer record;
BEGIN
    IF p_target IS NOT NULL THEN
        -- Every writer of this partition of this table, whatever its run, split or name
        -- for the table: sub-tasks of one zip queue here for their short write step.
        PERFORM pg_advisory_xact_lock(hashtextextended(p_target::text || chr(31) || p_value, 0));
    END IF;
    -- Locked until commit: a cancel or a sweep waits for this write, then sees it done.
    SELECT p.run_id, p.state::text AS state, p.lease_owner INTO me
    FROM {schema}.partitions p WHERE p.part_id = p_part_id FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'stale';
        detail := 'gone';
        RETURN;
    END IF;
    IF me.state <> 'started' OR me.lease_owner IS DISTINCT FROM p_owner THEN
        verdict := 'stale';
        detail := me.state || ' (lease ' || coalesce(me.lease_owner, 'none') || ')';
        RETURN;
    END IF;
    IF p_target IS NOT NULL AND p_token IS NOT NULL THEN
        -- Other runs only: a run's own split pieces write disjoint ranges, read at
        -- different times, and must not discard each other.
        SELECT f.run_id, f.token INTO newer
        FROM {schema}.partition_fences f
        WHERE f.target = p_target AND f.part_value = p_value AND f.run_id <> me.run_id
          AND f.token > p_token
        ORDER BY f.token DESC LIMIT 1;
        IF FOUND THEN
            UPDATE {schema}.partitions
            SET state = 'superseded', superseded_by = newer.run_id, finished_at = now(),
                lease_owner = NULL, lease_expires_at = NULL,
                error = format('read older (fence %s) than run %s''s written read (fence %s): '
                               'discarded', p_token, newer.run_id, newer.token)
            WHERE part_id = p_part_id;
            verdict := 'superseded';
            detail := newer.run_id;
            RETURN;
        END IF;
        INSERT INTO {schema}.partition_fences AS f (target, part_value, run_id, token)
        VALUES (p_target, p_value, me.run_id, p_token)
        ON CONFLICT (target, part_value, run_id)
        DO UPDATE SET token = greatest(f.token, excluded.token), written_at = now();
    END IF;
    verdict := 'write';
END $$;
