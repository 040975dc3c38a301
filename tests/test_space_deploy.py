"""The Space route (README "Deploy as a Space"): no tracked file over Spaces' 10 MB limit reaches the Space."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 10 * 2**20  # Spaces refuses larger files that are not in Git LFS


def space_excludes() -> list[str]:
    script = (REPO / "scripts" / "deploy_space.sh").read_text()
    return re.findall(r'"([^"]+)"', re.search(r"^SPACE_EXCLUDE=\((.*)\)$", script, re.M).group(1))


def uncovered(files: dict[str, int], excludes: list[str]) -> list[str]:
    return sorted(f for f, size in files.items() if size > LIMIT and not any(fnmatch.fnmatch(f, p) for p in excludes))


def test_every_large_tracked_file_stays_out_of_the_space():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = {f: (REPO / f).stat().st_size for f in tracked.stdout.split("\0") if f and (REPO / f).is_file()}
    assert "assets/revtaf-iu/model.safetensors" in files  # the weights the Space reads from the Hub instead
    assert uncovered(files, space_excludes()) == []


def test_the_check_fails_on_a_large_file_the_route_misses():
    excludes = space_excludes()
    assert uncovered({"assets/revtaf-iu/model.safetensors": 47 * 2**20}, excludes) == []
    assert uncovered({"data/big.npz": 11 * 2**20, "small.txt": 10}, excludes) == ["data/big.npz"]
