"""Helpers of the QA harnesses: the model a benchmark measures and a free local port for the server it starts."""

from __future__ import annotations

import os
from pathlib import Path

from revtaf.paths import resolve_model


def model_dir_or_random(checkpoint: str | os.PathLike | None, workdir: str | os.PathLike) -> tuple[Path, str]:
    """(model directory, description) for benchmarks and QA: `checkpoint`, else the bundled model, else a
    random-init cpu-preset model saved under `workdir` (so a checkout without weights can still be measured)."""
    try:
        path = resolve_model(checkpoint)
        return path, str(path)
    except FileNotFoundError:
        if checkpoint:
            raise
    from revtaf.model.random_init import random_model

    path = Path(workdir) / "random-cpu-model"
    if not (path / "config.json").is_file():
        random_model("cpu").save_pretrained(path)
    return path, "random-init cpu preset (no bundled model found; generation always runs to max_new_tokens)"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a local server."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
