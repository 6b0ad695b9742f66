"""etl-migrate: bring the audit schema to this version of etl-worker."""

from __future__ import annotations

import sys

import click

from etl_worker import migrations
from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.db import connect


@click.command(**COMMAND)
@click.option(
    "--check",
    is_flag=True,
    help="Apply nothing; exit 1 when migrations are pending (for deploy scripts).",
)
@setting_options("database_url")
@handle_errors
def main(check: bool, **overrides: str | None) -> None:
    """Apply the audit schema's missing migrations (etl-enqueue applies them too).

    Upgrade in this order: stop the workers (or let them finish), run etl-migrate with the
    new version, start workers of the new version. A worker whose code expects another
    schema version claims nothing and says so in its log.
    """
    settings = load_settings(**overrides)
    schema = settings.audit_schema
    target = migrations.code_version()
    with connect(settings.database_url) as conn:
        found = migrations.current_version(conn, schema)
        shown = "none" if found is None else str(found)
        if check:
            if found is not None and found > target:
                migrations.require_version(found, schema, "etl-migrate")
            pending = target - (found or 0)
            click.echo(
                f'audit schema "{schema}": version {shown}, this etl-worker needs {target}'
                + (f" — {pending} migration(s) pending: run etl-migrate" if pending else "")
            )
            sys.exit(1 if pending else 0)
        applied = migrations.migrate(conn, schema)
    if not applied:
        click.echo(f'audit schema "{schema}" is at version {target}: nothing to apply')
        return
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    click.echo(f'audit schema "{schema}": version {shown} -> {target} (applied {names})')
