"""Every console script, run as a user would, with wrong arguments, services that do not
answer and a fresh database: one line on stderr saying what is wrong and what to do, and a
non-zero exit. The list of scripts is read from pyproject.toml, so a new one is covered."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from etl_worker.devtools.embedded import free_port
from tests.support.cli import REPO, run_cli
from tests.support.services import Stack

SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])

#: Arguments that make each script reach its services (None: it never reaches the user's:
#: etl-demo falls back to embedded servers, etl-bench measures on a cluster of its own).
REACHING = {
    "etl-seed": ["--rows", "10"],
    "etl-enqueue": ["--all-zips"],
    "etl-status": [],
    "etl-demo": None,
    "etl-report": [],
    "etl-sample": [],
    "etl-plan": [],
    "etl-metrics": [],
    "etl-bench": None,
    "etl-sweep": [],
    "etl-migrate": [],
}
#: What a fresh database (no raw table, no audit schema) makes each script say.
FRESH = {
    "etl-enqueue": (["--all-zips"], 'table "raw_companies" not found'),
    "etl-status": ([], 'no audit schema "etl" in database'),
    "etl-report": ([], 'no audit schema "etl" in database'),
    "etl-sweep": ([], 'no audit schema "etl" in database'),
    "etl-plan": ([], 'table "raw_companies" not found'),
    "etl-sample": ([], 'table "raw_companies" not found'),
    "etl-migrate": (["--check"], "migration(s) pending: run etl-migrate"),
}


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_every_script_is_covered() -> None:
    assert sorted(REACHING) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_wrong_arguments_are_one_line_and_exit_2(stack: Stack, script: str) -> None:
    result = run_cli(script, "--no-such-option", env=stack.env, timeout=60)

    assert result.returncode == 2
    line = one_error_line(result)
    assert "--no-such-option" in line and f"see {script} --help" in line


@pytest.mark.parametrize("script", [s for s in SCRIPTS if REACHING[s] is not None])
def test_services_that_do_not_answer_are_one_line(stack: Stack, script: str) -> None:
    dead = free_port()
    env = stack.env | {
        "ETL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{dead}/etl",
        "ETL_BROKER_URL": f"redis://127.0.0.1:{dead}/0",
    }

    result = run_cli(script, *(REACHING[script] or []), env=env, timeout=120)

    assert result.returncode == 1
    line = one_error_line(result)
    assert f"127.0.0.1:{dead}" in line and ("check ETL_DATABASE_URL" in line or
                                            "check ETL_BROKER_URL" in line)  # fmt: skip


@pytest.mark.parametrize("script", sorted(FRESH))
def test_a_fresh_database_is_one_line(stack: Stack, script: str) -> None:
    args, words = FRESH[script]

    result = run_cli(script, *args, env=stack.env, timeout=120)

    assert result.returncode == 1
    assert words in (one_error_line(result) if script != "etl-migrate" else result.stdout)


def test_sweep_watch_on_a_fresh_database_stops_at_once(stack: Stack) -> None:
    result = run_cli("etl-sweep", "--watch", "--interval", "0.2", env=stack.env, timeout=30)

    assert result.returncode == 1
    assert 'no audit schema "etl"' in one_error_line(result)
