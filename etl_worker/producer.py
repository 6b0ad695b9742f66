"""Start a run: check the tables, create the target and audit tables, list the partitions,
record the run, and send one task per partition in bulk.

Nothing is written before every check has passed: an unknown table or column, or a transform
whose output does not fit the target, stops here with a clear error.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg
from amqp.exceptions import AMQPError, MessageNacked
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from psycopg import sql
from redis.exceptions import RedisError

from etl_worker import brokers, contracts, incremental, runguard
from etl_worker.audit import Audit, QueuedPartition, RunMode, RunSpec
from etl_worker.celery_app import TASK_NAME, make_app
from etl_worker.config import Settings, redact_url
from etl_worker.db import (
    Column,
    TableName,
    adbc_connect,
    connect,
    create_partition_index,
    database_label,
    find_column,
    first_line,
    has_index_on,
    schema_exists,
    table_columns,
    table_exists,
)
from etl_worker.errors import (
    ConfigError,
    EtlError,
    SchemaMismatch,
    ServiceUnavailable,
    TableNotFound,
    TransformError,
)
from etl_worker.fingerprint import allowed_modules, check_allowed, load_checked
from etl_worker.fingerprints import all_fingerprints, code_fingerprint
from etl_worker.frames import to_frame
from etl_worker.load import target_schema, to_arrow
from etl_worker.partition import key_text, partition_label
from etl_worker.snapshot import ExportedSnapshot
from etl_worker.splits import Split, plan_splits, rows_per_partition, split_column
from etl_worker.transforms import load_transform
from etl_worker.urls import broker_name
from etl_worker.vanished import Vanished
from etl_worker.vanished import delete_vanished as delete_vanished_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enqueued:
    run_id: str
    partitions: int
    seconds: float
    resumed: bool = False
    warnings: tuple[str, ...] = ()
    #: With --delete-vanished: what was removed from the target.
    vanished: Vanished | None = None
    #: What the command says besides the count (a resume: what it did not send again).
    notes: tuple[str, ...] = ()
    #: An incremental run's selection (incremental.Selection.as_json()).
    incremental: dict[str, Any] | None = None


#: AMQP delivery mode 2, what Celery sends by default (kombu's Redis transport ignores it).
PERSISTENT = 2


def new_run_id() -> str:
    """Sortable and readable: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def check_transform_output(
    settings: Settings, spec: RunSpec, raw_columns: list[Column]
) -> str | None:
    """Run the transform on a zero-row frame with the raw table's columns and check its
    output against the target. Returns a warning when the transform cannot run on no rows
    (the workers still check every partition)."""
    raw = TableName.parse(spec.raw_table)
    target = TableName.parse(spec.target_table)
    # The allow-list first: nothing is imported that the workers would refuse to import.
    load_checked(spec.transform, allowed_modules(settings.transform_modules))
    transform = load_transform(spec.transform)
    with connect(settings.database_url) as conn:
        schema_table = target if table_exists(conn, target) else raw
        columns = table_columns(conn, schema_table)
    adbc = adbc_connect(settings.database_url)
    try:
        empty = to_frame(target_schema(adbc, raw, raw_columns).arrow.empty_table())
        schema = target_schema(adbc, schema_table, columns)
    finally:
        adbc.close()
    try:
        output = transform(empty)
    except Exception as exc:
        return (
            f"transform {spec.transform} could not run on an empty frame ({first_line(exc)}); "
            "its output columns will be checked per partition"
        )
    if not isinstance(output, pd.DataFrame):
        raise TransformError(
            f"transform {spec.transform} returned {type(output).__name__}, not a DataFrame, "
            "on an empty frame of the raw table's columns — return the frame (a missing "
            "`return df`?)"
        )
    try:
        to_arrow(output, schema)
    except SchemaMismatch:
        raise
    except EtlError:
        pass  # type questions on zero rows prove nothing; partitions are checked for real
    return None


def create_target(conn: psycopg.Connection, raw: TableName, target: TableName, column: str) -> bool:
    """Create the target with the raw table's columns and types, plus an index on the
    partition column (each task deletes its partition's rows before writing). True when
    created."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"etl-worker create {target}",))
        if table_exists(conn, target):
            return False
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(target.ident, raw.ident)
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(f"{target.name}_{column}_idx"[:63]),
                target.ident,
                sql.Identifier(column),
            )
        )
    return True


def _check_target_index(
    conn: psycopg.Connection, target: TableName, column: str, create_index: bool
) -> str | None:
    """An existing target needs an index on the partition column too: every task DELETEs
    its partition's earlier rows, through the index in microseconds even when there are
    none, else by scanning the whole target, once per task (docs/scaling.md)."""
    if has_index_on(conn, target, column):
        return None
    if create_index:
        log.warning("indexing %s (%s) concurrently before enqueueing", target, column)
        create_partition_index(conn, target, column)
        return None
    return (
        f'target table "{target}" has no index on {column}: every task\'s DELETE will scan '
        f"the whole target — rerun with --create-index, or CREATE INDEX CONCURRENTLY ON "
        f"{target} ({column})"
    )


def list_partitions(
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    zip_table: TableName | None = None,
) -> list[str | None]:
    """Every distinct partition value, by its text (`partition.key_text`), NULL included
    (rows with a NULL key are a partition of their own; '' is another). With `zip_table`:
    the values of its column of the same name, parsed as the raw column's type."""
    col = sql.Identifier(column.name)
    if zip_table is None:
        query = sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1 NULLS LAST")
        return [row[0] for row in conn.execute(query.format(key_text(column, col), raw.ident))]
    find_column(table_columns(conn, zip_table), column.name, zip_table)
    query = sql.SQL("SELECT DISTINCT {}::text FROM {} ORDER BY 1 NULLS LAST")
    values = [row[0] for row in conn.execute(query.format(col, zip_table.ident))]
    return parse_partition_values(conn, raw, column, values, f'--zip-table "{zip_table}"')


def parse_partition_values(
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    values: Sequence[str | None],
    source: str,
) -> list[str | None]:
    """Partition values as a user wrote them, as the texts that name their partitions:
    parsed by Postgres as the column's type, all in one query (`01` on an integer column is
    partition `1`). A value of another type, or one the column would store differently
    (10.555 in a numeric(10,2), 'abcdefg' in a varchar(5)), is a ConfigError naming the
    value, the column, its type and `source` (where the value came from)."""
    if not values:
        return []
    value = sql.SQL("v.value")
    typed = sql.SQL("CAST({} AS {})").format(value, column.full_type)
    # A modifier may round or cut the value: it fits only when the cast keeps it as it is.
    fits: sql.Composable = sql.SQL("TRUE")
    if column.type_modifiers:
        fits = sql.SQL("CAST({} AS {}) = {}").format(value, column.type_ident, typed)
    query = sql.SQL(
        "SELECT v.value, {text}, {fits} IS NOT FALSE "
        "FROM unnest(%(values)s::text[]) WITH ORDINALITY AS v(value, n) ORDER BY v.n"
    ).format(text=key_text(column, typed), fits=fits)

    def refuse(given: str | None, why: str) -> ConfigError:
        return ConfigError(
            f"{source} value {given!r} does not fit column {column.name} ({column.type_sql}) "
            f'of table "{raw}": {why} — correct it or leave it out'
        )

    try:
        with conn.transaction():
            rows = conn.execute(query, {"values": list(values)}).fetchall()
    except psycopg.errors.DataError:
        # Find the value it was (on this error path only), to name it.
        for one in values:
            try:
                with conn.transaction():
                    conn.execute(query, {"values": [one]})
            except psycopg.errors.DataError as exc:
                raise refuse(one, first_line(exc)) from None
        raise
    for given, text, fit in rows:
        if not fit:
            raise refuse(given, f"the column would store it as {text}")
    return [text for _, text, _ in rows]


def run_queue(spec: RunSpec, settings: Settings) -> str:
    """The queue a run's tasks go to: the one it was enqueued on (runs made before the queue
    was recorded: the configured one)."""
    return str(spec.options.get("queue") or settings.queue)


def send_tasks(
    app: Celery, settings: Settings, run_id: str, parts: Sequence[QueuedPartition]
) -> float:
    """Publish one message per partition over one connection. Returns seconds taken.

    The partitions are already recorded as queued: when the broker fails half-way, the
    error says how to send the rest (`--resume`), and the sweeper would find them too.
    """
    started = time.perf_counter()
    try:
        _publish(app, settings, run_id, parts)
    # Redis' and py-amqp's own errors too: publishes go out unretried, straight from the
    # pipeline (Redis) or the channel (RabbitMQ: a closed channel, or a publish it refused
    # to take, which only publisher confirms tell: MessageNacked).
    except (KombuOperationalError, RedisError, AMQPError, MessageNacked, OSError) as exc:
        raise ServiceUnavailable(
            f"the broker at {redact_url(settings.broker_url)} failed while enqueueing run "
            f"{run_id} ({first_line(exc)}); its partitions are recorded — when "
            f"{broker_name(settings.broker_url)} is back: etl-enqueue --resume {run_id}"
        ) from exc
    return time.perf_counter() - started


def check_broker(app: Celery, settings: Settings) -> None:
    """Fail before anything is written when the broker does not answer."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except (KombuOperationalError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot connect to the broker at {redact_url(settings.broker_url)}: "
            f"{first_line(exc)} — check ETL_BROKER_URL and that "
            f"{broker_name(settings.broker_url)} is running"
        ) from exc


def _publish(
    app: Celery, settings: Settings, run_id: str, parts: Sequence[QueuedPartition]
) -> None:
    """Each message is built with Celery's own protocol-2 builder (`amqp.as_task_v2`), so
    workers receive exactly what `send_task` would send; it is published with kombu
    directly because `send_task` spends two thirds of its time per message on routing,
    queue copies and a retry wrapper that a batch of identical sends needs once (measured:
    40,000 messages in 3.5 s through `send_task`, 1.3 s this way). No retry per message: a
    broker error ends the enqueue with the --resume hint (send_tasks)."""
    # On RabbitMQ the queue of a run enqueued elsewhere (a sweep re-sending it) is declared
    # with the fleet's quorum arguments, not as a missing queue Celery would make up.
    amqp = brokers.is_amqp(settings)
    queue = brokers.task_queue(settings) if amqp else app.amqp.queues[settings.queue]
    # A round trip per window of messages, not per message: a Redis pipeline, or RabbitMQ's
    # publisher confirms awaited a window at a time (brokers.bulk_producer).
    with brokers.bulk_producer(app, settings) as (producer, sent):
        producer.maybe_declare(queue)
        for part in parts:
            kwargs: dict[str, Any] = {"run_id": run_id, "zip": part.key, "part_id": part.part_id}
            if part.split is not None:
                kwargs["split"] = part.split
            headers, properties, body, _ = app.amqp.as_task_v2(
                part.task_id,
                TASK_NAME,
                kwargs=kwargs,
                # What Flower shows; given here because Celery's own safe repr of the
                # arguments costs more than the rest of building the message.
                argsrepr="()",
                kwargsrepr=repr(kwargs),
            )
            producer.publish(
                body,
                exchange="",
                routing_key=settings.queue,
                serializer="json",
                headers=headers,
                delivery_mode=PERSISTENT,
                retry=False,
                **properties,
            )
            sent()


def prepare(
    settings: Settings, conn: psycopg.Connection, *, create_index: bool = False
) -> tuple[list[Column], Column, list[str]]:
    """Validate the raw table and partition column, and index the column when asked.
    Returns the raw columns, the partition column and warnings."""
    raw = TableName.parse(settings.raw_table)
    target = TableName.parse(settings.target_table)
    raw_columns = table_columns(conn, raw)
    if target.schema is not None and not schema_exists(conn, target.schema):
        raise TableNotFound(
            f'schema "{target.schema}" of target table "{target}" not found in database '
            f'"{database_label(conn)}" — create the schema, or check --target-table'
        )
    column = find_column(raw_columns, settings.partition_column, raw)
    warnings = []
    if not has_index_on(conn, raw, column.name):
        if create_index:
            log.warning("indexing %s (%s) concurrently before enqueueing", raw, column.name)
            create_partition_index(conn, raw, column.name)  # the one etl-plan uses too
        else:
            warnings.append(
                f'raw table "{raw}" has no index on {column.name}: every task will scan the '
                f"whole table — rerun with --create-index, or CREATE INDEX CONCURRENTLY ON "
                f"{raw.ident.as_string(conn)} ({sql.Identifier(column.name).as_string(conn)})"
            )
    return raw_columns, column, warnings


def plan_run(
    settings: Settings,
    conn: psycopg.Connection,
    raw: TableName,
    raw_columns: list[Column],
    column: Column,
    keys: list[str | None] | None,
    zip_table: str | None,
) -> tuple[list[Split], dict[str, Any], list[str]]:
    """The tasks of a run: one per partition, several per partition over ETL_SPLIT_ROWS.
    Returns them, the run options the workers need (the split column), and warnings."""
    split = None
    if settings.split_rows > 0:
        split = split_column(conn, raw, raw_columns, settings.split_column)
    # Sizes always: they order the tasks biggest first, and decide the splits.
    if keys is None and zip_table is None:
        sizes = rows_per_partition(conn, raw, column)  # the keys and their sizes in one scan
    else:
        if keys is None:
            keys = list_partitions(
                conn, raw, column, TableName.parse(zip_table) if zip_table else None
            )
        else:
            keys = parse_partition_values(conn, raw, column, keys, "--zips")
        sizes = rows_per_partition(conn, raw, column, keys)
    target = TableName.parse(settings.target_table)
    warnings = empty_partition_warnings(raw, target, sizes) if keys is not None else []
    oversized = sum(1 for rows in sizes.values() if rows > settings.split_rows > 0)
    if split is None and oversized:
        warnings.append(
            f'raw table "{raw}" has no single-column integer primary key: {oversized} '
            f"partition(s) over {settings.split_rows:,} rows are not split — set "
            "ETL_SPLIT_COLUMN to a NOT NULL integer column to split them"
        )
    plan = plan_splits(conn, raw, column, split, sizes, settings.split_rows)
    options = {"split_column": split.name} if split is not None else {}
    return plan, options, warnings


#: Empty partitions named one warning each; more are counted in one last line.
EMPTY_WARNINGS = 20


def empty_partition_warnings(
    raw: TableName, target: TableName, sizes: dict[str | None, int]
) -> list[str]:
    """One warning per chosen partition with no raw rows: its task keeps target =
    transform(raw) by deleting the target's rows for it and writing none, which a typo in
    --zips would otherwise do in silence."""
    empty = [key for key, rows in sizes.items() if rows == 0]
    lines = [
        f'zip {partition_label(key)} has no rows in raw table "{raw}": its task will delete '
        f'the rows of zip {partition_label(key)} from "{target}" and write none — check the '
        "value if that is not what you meant"
        for key in empty[:EMPTY_WARNINGS]
    ]
    if len(empty) > EMPTY_WARNINGS:
        lines.append(f"and {len(empty) - EMPTY_WARNINGS:,} more chosen zips with no raw rows")
    return lines


def enqueue_run(
    settings: Settings,
    *,
    zips: Iterable[str | None] | None = None,
    zip_table: str | None = None,
    create_index: bool = False,
    app: Celery | None = None,
    snapshot: ExportedSnapshot | None = None,
    delete_vanished: bool = False,
    changed_since: str | None = None,
) -> Enqueued:
    """Start a new run over all partitions (or the given ones) and send its tasks. With
    `snapshot`, the partitions are listed in it and every partition reads it (snapshot.py);
    with `delete_vanished`, target rows of values gone from the raw table are deleted; with
    `changed_since`, only the partitions changed since their last finished run up to that
    run (incremental.py) — and with `delete_vanished` too, the vanished partitions are
    enqueued (their tasks delete their rows), so the run's summary counts them."""
    mode = RunMode.NORMAL
    if settings.dry_run:
        mode = RunMode.DRY_RUN
    elif settings.test_mode:
        mode = RunMode.TEST
    run_id = new_run_id()
    app = app or make_app(settings)
    with connect(settings.database_url) as conn:
        raw_columns, column, warnings = prepare(settings, conn, create_index=create_index)
        check_broker(app, settings)
        raw, target = TableName.parse(settings.raw_table), TableName.parse(settings.target_table)
        keys = None if zips is None else list(dict.fromkeys(zips))
        listing = snapshot.conn if snapshot else conn
        options: dict[str, Any] = contracts.run_options(conn, settings, target)
        selection = None
        if changed_since is not None:
            selection = _select_changed(
                settings, conn, raw, column, changed_since, options, delete_vanished
            )
            keys = selection.keys
        plan, plan_options, plan_warnings = plan_run(
            settings, listing, raw, raw_columns, column, keys, zip_table
        )
        warnings.extend(plan_warnings)
        options.update(plan_options)
        # The raw fingerprints incremental runs compare (fingerprints.py): of --all-zips runs
        # (an incremental run has them from its comparison, at no extra cost).
        found = None
        if mode == RunMode.NORMAL and zips is None and zip_table is None:
            if selection:
                found = selection.current
            elif settings.raw_fingerprints:
                found = all_fingerprints(listing, raw, column)
        # Where its workers listen: the sweeper re-sends the run's partitions there.
        options["queue"] = settings.queue
        spec = RunSpec(
            run_id,
            settings.raw_table,
            settings.target_table,
            settings.partition_column,
            settings.transform,
            mode,
            options,
            transform_fingerprint=load_checked(
                settings.transform, allowed_modules(settings.transform_modules)
            ).fingerprint,
            snapshot_id=snapshot.id if snapshot else None,
        )
        warning = check_transform_output(settings, spec, raw_columns)
        if warning:
            warnings.append(warning)
        vanished = None
        # Said before anything is recorded or sent, not after the run is on its way.
        for w in warnings:
            log.warning(w)
        if not spec.dry_run:
            if not create_target(conn, raw, target, column.name):
                warning = _check_target_index(conn, target, column.name, create_index)
                if warning:
                    log.warning(warning)
                    warnings.append(warning)
            if delete_vanished and changed_since is None:
                vanished = delete_vanished_rows(conn, raw, target, column)
                options["deleted_vanished"] = {"values": vanished.values, "rows": vanished.rows}
            contracts.create_quarantine_for(conn, target, options)
        audit = Audit(conn, settings.audit_schema)
        audit.ensure_schema()
        oid = None if spec.dry_run else runguard.target_oid(conn, target)
        with conn.transaction():
            if oid is not None:
                runguard.refuse_if_target_busy(conn, settings.audit_schema, oid, run_id)
            audit.create_run(spec, oid)
            if selection is not None:
                audit.record_incremental(run_id, selection.as_json())
            parts = audit.add_partitions(
                run_id, [p.key for p in plan], [(p.lo, p.hi) for p in plan]
            )
            if found is not None:
                audit.record_raw_fingerprints(run_id, found)
        seconds = send_tasks(app, settings, run_id, parts)
        audit.mark_run_enqueued(run_id)
    summary = None if selection is None else selection.as_json()
    return Enqueued(
        run_id,
        len(parts),
        seconds,
        warnings=tuple(warnings),
        vanished=vanished,
        incremental=summary,
    )


def _select_changed(
    settings: Settings,
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    since: str,
    options: dict[str, Any],
    remove_vanished: bool,
) -> incremental.Selection:
    audit = Audit(conn, settings.audit_schema)
    audit.ensure_schema()
    # code_fingerprint imports the transform's module to read its source: the allow-list
    # first, as everywhere else a transform is imported (the contract's was checked by
    # contracts.run_options).
    check_allowed(settings.transform, allowed_modules(settings.transform_modules))
    code = code_fingerprint(
        settings.transform, options.get("contract", ""), options.get("quarantine", "")
    )
    return incremental.select(
        conn,
        audit,
        since=since,
        raw_table=settings.raw_table,
        raw=raw,
        column=column,
        target_table=settings.target_table,
        code=code,
        remove_vanished=remove_vanished,
    )


def resume_run(settings: Settings, run_id: str, *, app: Celery | None = None) -> Enqueued:
    """Send again every partition of `run_id` that did not finish and is not on its way,
    with the run's own tables and transform (whatever the current settings say).

    On its way: a waiting partition whose message the broker still holds, a started one
    whose attempt still renews its lease. Sending those again would only make duplicate
    deliveries (and take the lease from a running attempt): a resume of a run that is
    still going sends what failed or was lost, nothing else."""
    # sweeper imports this module; it alone knows how to look for a message in the broker.
    from etl_worker.sweeper import still_queued

    with connect(settings.database_url) as conn:
        audit = Audit(conn, settings.audit_schema)
        spec = audit.get_run(run_id)  # RunNotFound with a clear message
        # The run's own queue: the workers serving it listen there, whatever ETL_QUEUE is now.
        settings = settings.replace(queue=run_queue(spec, settings))
        app = app or make_app(settings)
        check_broker(app, settings)
        # The run now wants the transform as it is today (workers still running older code
        # refuse it and say so), and reads the raw table as it is: an earlier producer's
        # snapshot is gone, or goes when that producer ends.
        loaded = load_checked(spec.transform, allowed_modules(settings.transform_modules))
        oid = None if spec.dry_run else runguard.run_target_oid(conn, settings.audit_schema, run_id)
        # The check and the requeue in one turn on the target (runguard.py).
        with conn.transaction():
            if oid is not None:
                runguard.refuse_if_target_busy(conn, settings.audit_schema, oid, run_id)
            audit.resume_run_guards(run_id, loaded.fingerprint)
            candidates = audit.resume_candidates(run_id)
            running = {p for p, _, _, live in candidates if live}
            waiting = {t for _, state, t, _ in candidates if state in ("queued", "retrying")}
            queued = still_queued(app, settings, {settings.queue: waiting})
            send = [p for p, _, t, live in candidates if not live and t not in queued]
            parts = audit.requeue_unfinished(run_id, send) if send else []
        seconds = send_tasks(app, settings, run_id, parts)
    notes: tuple[str, ...] = ()
    if queued or running:
        notes = (
            f"not sent again: {len(queued):,} partition(s) whose message is still queued, "
            f"{len(running):,} running — the run is still going",
        )
    return Enqueued(run_id, len(parts), seconds, resumed=True, notes=notes)


def cancel_run(settings: Settings, run_id: str) -> int:
    """Cancel the run's unfinished partitions (`runguard.cancel_run`); returns how many."""
    with connect(settings.database_url) as conn:
        Audit(conn, settings.audit_schema).get_run(run_id)  # RunNotFound with a clear message
        return runguard.cancel_run(conn, settings.audit_schema, run_id)


def describe(result: Enqueued) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "partitions": result.partitions,
        "enqueue_seconds": round(result.seconds, 3),
        "resumed": result.resumed,
        **({"incremental": result.incremental} if result.incremental else {}),
    }
