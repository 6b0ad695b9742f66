"""Run the installed etl-* commands as a user would, in a test's environment."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    command: str, *args: str, env: Mapping[str, str], timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / command
    result = subprocess.run(
        [str(exe), *args],
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
