-- A failed partition's full traceback (issue 12): `error` keeps the one line etl-status
-- groups and shows; the traceback, with its chained causes, is what the user needs to fix
-- the transform, and etl-report shows it. NULL for failures with no exception (a killed
-- process, attempts exhausted).
ALTER TABLE {schema}.partitions ADD COLUMN error_traceback text;
