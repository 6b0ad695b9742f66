"""Run the installed etl-* commands as a user would, in a test's environment."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.services import Stack

REPO = Path(__file__).resolve().parents[2]
IDENTITY = "etl_worker.transforms:identity"


def command_path(command: str) -> str:
    """The installed etl-* command of this virtualenv."""
    return str(Path(sys.executable).parent / command)


def run_cli(
    command: str, *args: str, env: Mapping[str, str], timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [command_path(command), *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def enqueue(
    stack: Stack, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli("etl-enqueue", *args, env=stack.env | env, check=check)


def run_json(stack: Stack, run_id: str) -> dict[str, Any]:
    """`etl-status RUN_ID --json`, parsed."""
    out = run_cli("etl-status", run_id, "--json", env=stack.env, check=True).stdout
    return dict(json.loads(out))
