"""Shared pieces of the reliability tests: one running app process per test session and the good images.

The app is started once (`python -m app`, random-init cpu-preset model with short greedy generation, loopback,
Java hidden so METEOR does not warm up) and reused by test_reliability_inputs, test_reliability_load and
test_privacy; it is stopped when the test process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
from pathlib import Path

from revtaf.data import image_file, load_annotation
from revtaf.integrity import MANIFEST, read_manifest, write_manifest
from test_app_service import shared_model_dir
from revtaf_bench.harness import AppServer

_SERVER: AppServer | None = None


def model_dir(tmp_path_factory, iu_root: Path) -> Path:
    """The app tests' random-init model with greedy 12-token generation (reliability is about the paths
    around the model, and these tests run it ~150 times), re-manifested after the config edit."""
    path = tmp_path_factory.getbasetemp() / "reliability-model"
    if not (path / MANIFEST).is_file():
        shutil.copytree(shared_model_dir(tmp_path_factory, iu_root), path, dirs_exist_ok=True)
        config = json.loads((path / "config.json").read_text())
        config["generation"] = {"num_beams": 1, "max_new_tokens": 12, "min_length": 0, "plan": False}
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_manifest(path, list(read_manifest(path)))
    return path


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
