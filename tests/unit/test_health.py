"""What a worker says of its health, and the lines a waiting command makes of the replies."""

from __future__ import annotations

from etl_worker.health import DatabaseHealth, WorkerReport, clock, problems


def test_a_database_that_fails_is_reported_with_its_error_and_since_when() -> None:
    health = DatabaseHealth()
    assert health.report(["etl"])["summary"] == "database not checked yet"
    health.ok()
    assert health.report(["etl"])["database_ok"] is True
    health.failed('FATAL:  database "x" does not exist')
    since = health.error_since
    health.failed('FATAL:  database "x" does not exist')
    report = health.report(["etl", "etl-sweep"])
    assert health.error_since == since  # since the first failure, not the latest
    assert report["queues"] == ["etl", "etl-sweep"]
    assert report["database_ok"] is False
    assert report["summary"] == (
        f'cannot reach the database: FATAL:  database "x" does not exist (since {clock(since)})'
    )
    health.ok()
    assert health.report([])["database_error"] is None


def test_a_stats_reply_without_our_section_is_a_worker_that_does_not_say() -> None:
    assert WorkerReport.of("w@h", {"pid": 1}) == WorkerReport("w@h", None)
    section = {"etl": {"queues": ["q"], "database_error": "boom", "error_since": 5.0}}
    assert WorkerReport.of("w@h", section) == WorkerReport("w@h", ("q",), "boom", 5.0)


def test_no_worker_on_the_queue_is_said_with_what_the_others_consume() -> None:
    assert problems([], "etl")[0].startswith(
        "no worker is consuming queue etl: no worker answered within 1s"
    )
    others = [WorkerReport("a@h", ("other",)), WorkerReport("b@h", ("other", "more"))]
    assert problems(others, "etl") == [
        "no worker is consuming queue etl (2 worker(s) answered, consuming more, other) — "
        "start one with -Q etl"
    ]


def test_workers_that_cannot_reach_the_database_are_counted_per_error() -> None:
    reports = [
        WorkerReport("a@h", ("etl",), "no such database", 100.0),
        WorkerReport("b@h", ("etl",), "no such database", 50.0),
        WorkerReport("c@h", ("etl",), "connection refused", 70.0),
        WorkerReport("d@h", ("etl",)),
        WorkerReport("e@h", ("other",), "elsewhere", 1.0),  # not this queue's
    ]
    assert problems(reports, "etl") == [
        f"2 workers cannot reach the database: no such database (since {clock(50.0)})",
        f"1 worker cannot reach the database: connection refused (since {clock(70.0)})",
        "1 other worker(s) of queue etl can",
    ]
    assert problems([WorkerReport("d@h", ("etl",))], "etl") == []
    assert problems([WorkerReport("old@h", None)], "etl") == []  # older code: no claim
