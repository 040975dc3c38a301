"""Shared fixtures. Tests read a small slice of ../shared/data/iu_xray (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
IU_ROOT = Path(os.environ.get("REVTAF_TEST_DATA", REPO.parent / "shared" / "data" / "iu_xray"))

# Two cores are shared by everything on the machine; one intra-op thread keeps test timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def iu_root() -> Path:
    if not (IU_ROOT / "annotation.json").is_file():
        pytest.fail(f"IU X-Ray data not found at {IU_ROOT}; set REVTAF_TEST_DATA")
    return IU_ROOT
