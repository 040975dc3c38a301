"""Where data and models live. Nothing is hard-coded: a path given by the caller wins, then REVTAF_DATA; a model is
a local directory, else a Hub repository at a pinned revision, else the bundled default (`resolve_model`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

DATA_ENV = "REVTAF_DATA"
# The default model trained by this project (weights only): the checkout's assets/ beside the library, or, in an
# installed wheel, the same files as package data of `revtaf.assets` (pyproject's package-data).
_CHECKOUT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "revtaf-iu"
BUNDLED_MODEL = _CHECKOUT_MODEL if _CHECKOUT_MODEL.is_dir() else Path(__file__).resolve().parent / "assets" / "revtaf-iu"


def resolve_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The data root (folder holding `annotation.json` and `images/`), or None when none is configured."""
    value = path if path is not None else os.environ.get(DATA_ENV)
    if not value:
        return None
    from revtaf.data.annotation import require_data_root

    return require_data_root(value)


def resolve_model(
    checkpoint: str | os.PathLike | None = None,
    hf_repo: str | None = None,
    hf_revision: str | None = None,
    default: str | os.PathLike = BUNDLED_MODEL,
) -> Path:
    """The model directory to load: a local `checkpoint` wins, then the Hub repo at a pinned revision, then
    the bundled default. A Hub download that fails (offline, unknown repo) falls back to the default with a
    warning, so the demo still starts."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {path}")
        return path
    if hf_repo:
        if not hf_revision:
            warnings.warn(f"--hf-repo {hf_repo} without --hf-revision: the weights are not pinned to a commit")
        try:
            return download_model(hf_repo, hf_revision)
        except Exception as exc:  # network, auth, unknown repo or revision: all mean "use the bundled model"
            warnings.warn(f"could not fetch {hf_repo}@{hf_revision or 'main'} ({type(exc).__name__}); "
                          f"using the bundled model at {default}")
    path = Path(default)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no model found: the bundled default {path} is missing. Pass --checkpoint DIR (or REVTAF_CHECKPOINT) "
            "or --hf-repo ID --hf-revision SHA."
        )
    return path


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """A model repository from the Hugging Face Hub at `revision`, through huggingface_hub's cache."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=repo_id, revision=revision))
