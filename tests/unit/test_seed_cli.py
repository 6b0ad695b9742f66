"""etl-seed's command line: every option documented, bad sizes refused before any I/O."""

from __future__ import annotations

import click
from click.testing import CliRunner

from etl_worker.cli.seed import main as seed_main


def test_every_seed_option_has_help_text() -> None:
    options = [param for param in seed_main.params if isinstance(param, click.Option)]

    assert {option.name for option in options} >= {"rows", "zips", "seed", "table", "database_url"}
    assert all(option.help for option in options)
    help_text = CliRunner().invoke(seed_main, ["--help"]).output
    assert all(option.opts[0] in help_text for option in options)


def test_seed_refuses_impossible_sizes_before_touching_the_database() -> None:
    result = CliRunner().invoke(
        seed_main, ["--zips", "200000", "--database-url", "postgresql://127.0.0.1:1/x"]
    )

    assert result.exit_code == 1
    assert "--zips must be between 1 and" in result.output
