"""Telling apart how a pool process died, and the words each death earns."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_worker import deaths
from etl_worker.deaths import Cause, OomKills
from etl_worker.memory import oom_kill_count

MiB = 1024**2


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.", (9, None)),
        ("Worker exited prematurely: signal 11 (SIGSEGV).", (11, None)),
        ("Worker exited prematurely: exitcode 1 Job: 7.", (None, 1)),
        ("Worker exited prematurely: SystemExit.", (None, None)),
    ],
)
def test_the_exit_status_is_read_from_billiard_s_words(
    message: str, status: tuple[int | None, int | None]
) -> None:
    assert deaths.exit_status(message) == status


KILLED = "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."


def test_a_sigkill_while_the_cgroup_counted_an_oom_kill_is_an_oom_kill() -> None:
    death = deaths.lost(4242, KILLED, oom_killed=True, rss=300 * MiB, limit=None)

    assert death.cause is Cause.OOM and not death.final
    assert death.text == (
        "pool process 4242 was killed by the kernel's OOM killer; 300.0 MiB resident when "
        "last sampled"
    )


def test_a_sigkill_the_oom_killer_did_not_count_is_someone_else_s_signal() -> None:
    death = deaths.lost(4242, KILLED, oom_killed=False, rss=990 * MiB, limit=1000 * MiB)

    assert death.cause is Cause.SIGNAL
    assert death.text == (
        "pool process 4242 was killed by signal 9 (SIGKILL), not by the OOM killer (it killed "
        "nothing in this cgroup); 990.0 MiB resident when last sampled"
    )


def test_without_a_count_a_sigkill_near_the_memory_limit_counts_as_an_oom_kill() -> None:
    near = deaths.lost(1, KILLED, oom_killed=None, rss=950 * MiB, limit=1000 * MiB)
    far = deaths.lost(1, KILLED, oom_killed=None, rss=100 * MiB, limit=1000 * MiB)
    unknown = deaths.lost(1, KILLED, oom_killed=None, rss=None, limit=None)

    assert near.cause is Cause.OOM and "most likely the OOM killer" in near.text
    assert far.cause is Cause.SIGNAL and "no OOM-kill count is readable" in far.text
    assert unknown.cause is Cause.SIGNAL


def test_other_signals_and_exits_are_named() -> None:
    segv = deaths.lost(7, "Worker exited prematurely: signal 11 (SIGSEGV).", oom_killed=True,
                       rss=None, limit=None)  # fmt: skip
    exited = deaths.lost(7, "Worker exited prematurely: exitcode 3 Job: 1.", oom_killed=None,
                         rss=None, limit=None)  # fmt: skip

    assert segv.cause is Cause.SIGNAL and "signal 11 (SIGSEGV)" in segv.text
    assert exited.cause is Cause.EXIT and "exit code 3" in exited.text


def test_the_hard_time_limit_fails_the_partition_and_says_why() -> None:
    death = deaths.hard_time_limit("10016", 30)

    assert death.cause is Cause.TIME_LIMIT and death.final
    assert death.text.startswith("partition 10016 hit the hard time limit of 30s")
    assert "out of memory" not in death.text


def test_each_death_takes_at_most_one_oom_kill_of_the_count() -> None:
    counts = iter([0, 0, 1, 1, 3, 3, 3])
    kills = OomKills(lambda: next(counts))

    assert [kills.claim() for _ in range(6)] == [False, True, False, True, True, False]


def test_an_unreadable_count_says_nothing_until_it_can_be_followed() -> None:
    counts = iter([None, None, 2, 3])
    kills = OomKills(lambda: next(counts))

    assert [kills.claim() for _ in range(3)] == [None, None, True]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_oom_kill_count_is_read_from_cgroup_v2_memory_events(tmp_path: Path) -> None:
    write(tmp_path / "cgroup", "0::/job\n")
    write(tmp_path / "fs/job/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")

    assert oom_kill_count(tmp_path / "cgroup", tmp_path / "fs") == 2


def test_the_oom_kill_count_is_read_from_cgroup_v1_oom_control(tmp_path: Path) -> None:
    write(tmp_path / "cgroup", "5:cpu:/x\n4:memory:/job\n0::/\n")
    write(tmp_path / "fs/memory/job/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"
          "oom_kill 5\n")  # fmt: skip

    assert oom_kill_count(tmp_path / "cgroup", tmp_path / "fs") == 5


def test_no_count_where_the_kernel_keeps_none(tmp_path: Path) -> None:
    write(tmp_path / "cgroup", "4:memory:/job\n")
    write(tmp_path / "fs/memory/job/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")

    assert oom_kill_count(tmp_path / "cgroup", tmp_path / "fs") is None
    assert oom_kill_count(tmp_path / "missing", tmp_path) is None


@pytest.mark.parametrize(
    ("cause", "last", "hint"),
    [
        ("oom", "pool process 1 was killed by the kernel's OOM killer", True),
        ("signal", "pool process 1 was killed by signal 9 (SIGKILL)", False),
        (None, None, False),
    ],
)
def test_only_oom_kills_earn_the_out_of_memory_hint(
    cause: str | None, last: str | None, hint: bool
) -> None:
    error = deaths.attempts_exhausted_error(
        "00001", 5, 3, cause=cause, last=last, memory_ceiling=1024, run_id="r1"
    )

    assert error.startswith("partition 00001 (5 rows): gave up after 3 attempts")
    assert ("out of memory?" in error) is hint
    assert error.endswith("etl-enqueue --resume r1")
    if last:
        assert f"last: {last}" in error
