"""Where data lives. Nothing is hard-coded: a path given by the caller wins, then REVTAF_DATA."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "REVTAF_DATA"
# The default model trained by this project (weights only), in the checkout beside the library.
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "revtaf-iu"


def resolve_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The data root (folder holding `annotation.json` and `images/`), or None when none is configured."""
    value = path if path is not None else os.environ.get(DATA_ENV)
    if not value:
        return None
    from revtaf.data.annotation import require_data_root

    return require_data_root(value)
