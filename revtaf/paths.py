"""Where data lives. Nothing is hard-coded: a path given by the caller wins, then REVTAF_DATA."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "REVTAF_DATA"


def resolve_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The data root (folder holding `annotation.json` and `images/`), or None when none is configured."""
    value = path if path is not None else os.environ.get(DATA_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    if not (root / "annotation.json").is_file():
        raise FileNotFoundError(f"{root} is not a data root: it has no annotation.json")
    return root
