"""Shared pieces of the reliability tests: one running app process per test session and the good images.

The app is started once (`python -m app`, random-init cpu-preset model, loopback, Java hidden so METEOR does
not warm up) and reused by test_reliability_inputs, test_reliability_load and test_privacy; it is stopped
when the test process exits.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from revtaf.data import image_file, load_annotation
from test_app_service import shared_model_dir
from train.robustness import AppServer

_SERVER: AppServer | None = None


def model_dir(tmp_path_factory, iu_root: Path) -> Path:
    return shared_model_dir(tmp_path_factory, iu_root)


def app_server(tmp_path_factory, iu_root: Path) -> AppServer:
    """The session's app process (started on first use)."""
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        workdir = tmp_path_factory.mktemp("reliability-app")
        _SERVER = AppServer(model_dir(tmp_path_factory, iu_root), workdir, data_root=iu_root, java=False, threads=1,
                            env={"REVTAF_QUEUE_SIZE": os.environ.get("REVTAF_TEST_QUEUE_SIZE", "8")})
        _SERVER.start()
        atexit.register(_SERVER.stop)
    return _SERVER


def good_images(iu_root: Path, n: int = 2) -> list[Path]:
    """The frontal images of the first `n` IU test studies."""
    return [image_file(iu_root, s) for s in load_annotation(iu_root, "iu")["test"][:n]]
