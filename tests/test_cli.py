"""The command line a newcomer types first: `revtaf --help` and every subcommand's `--help`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from revtaf_cli.main import build_parser


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_subcommand_is_listed():
    assert {"train", "evaluate", "generate", "bench", "score", "label"} <= set(subcommands())


@pytest.mark.parametrize("argv", [[]] + [[name] for name in subcommands()], ids=lambda a: " ".join(a) or "revtaf")
def test_help_prints_and_exits_zero(argv):
    out = subprocess.run([sys.executable, "-m", "revtaf_cli", *argv, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: revtaf") and "Traceback" not in out.stderr
