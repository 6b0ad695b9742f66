"""etl-metrics: measure the backlog per worker; print it, or publish it to CloudWatch."""

from __future__ import annotations

import logging
import time

import click

from etl_worker.celery_app import make_app
from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.config import env_var
from etl_worker.errors import EtlError
from etl_worker.ops.metrics import CloudWatchSink, MetricSink, StdoutSink, read_backlog

log = logging.getLogger(__name__)


@click.command(**COMMAND)
@click.option(
    "--cloudwatch",
    is_flag=True,
    help="Also publish to CloudWatch (needs the aws extra and AWS credentials).",
)
@click.option(
    "--namespace",
    default=None,
    help=f"CloudWatch namespace [env {env_var('metrics_namespace')}; default EtlWorker].",
)
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=None,
    help="Measure every N seconds until stopped (errors are logged, the loop goes on).",
)
@setting_options("broker_url", "queue")
@handle_errors
def main(cloudwatch: bool, namespace: str | None, every: float | None, **overrides: str) -> None:
    """Print the queue's backlog per worker as one JSON line: queued + in-flight messages
    divided by the pool processes of the live workers consuming the queue."""
    settings = load_settings(metrics_namespace=namespace, **overrides)
    app = make_app(settings)
    sinks: list[MetricSink] = [StdoutSink(click.echo)]
    if cloudwatch:
        sinks.append(CloudWatchSink(settings.metrics_namespace))
    while True:
        try:
            backlog = read_backlog(app, settings)
            for sink in sinks:
                sink.publish(backlog)
        except Exception as exc:
            if every is None:
                raise
            # A metrics loop outlives a Redis restart or a CloudWatch hiccup.
            log.warning("etl-metrics: %s", exc if isinstance(exc, EtlError) else repr(exc))
        if every is None:
            return
        time.sleep(every)
