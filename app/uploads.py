"""Upload hygiene and the image as the page holds it: uploads read into memory and their temporary copies deleted
(Gradio's upload-folder layout included), the downsampled working copy, the display window and its presets.

Patient-data rules (README, "Demo"): uploads arrive as bytes and are read in memory; `XrayImage` carries no DICOM
header tags, only pixels, window, inversion and view position; nothing here logs or stores a file name.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from revtaf.data import XrayImage
from revtaf_app.errors import AppInputError


# The model sees 224 px; 1024 px a side keeps display sharp and per-session memory small (~4 MB float32), and
# ablation re-runs see exactly the pixels the first run saw.
WORKING_MAX_SIDE = 1024

# Radiograph pixel values are not Hounsfield units, so CT presets (lung -600/1500...) mean nothing here:
# presets are percentile windows of the image's own histogram (dark lung fields, mid-grey mediastinum, bright bone).
WINDOW_PRESETS = {"lung": (1.0, 70.0), "mediastinum": (30.0, 99.0), "bone": (60.0, 99.8)}

# Gradio stores an upload at <upload folder>/<content hash>/<name>, so sessions sending the same file at the same
# time share one path and the first delete would break the others. Consumed uploads stay in memory (never on disk)
# for RECENT_UPLOAD_S, keyed by that content-addressed path, within RECENT_UPLOAD_BYTES.
RECENT_UPLOAD_S = 300
RECENT_UPLOAD_BYTES = 256 << 20
_recent_uploads: dict[Path, tuple[float, bytes]] = {}
_recent_lock = threading.Lock()


def consume_upload(path: str | os.PathLike | None, upload_root: str | os.PathLike | None = None,
                   uploads_only: bool = False) -> bytes:
    """Bytes of an uploaded file, whose temporary copy under `upload_root` (Gradio's upload folder) is then
    deleted so the upload is not kept on disk. Files outside `upload_root` are read, never deleted, unless
    `uploads_only` (an API payload names its path itself: only files uploaded to this app may be read)."""
    if path is None:
        raise AppInputError("No file was uploaded. Choose a PNG, JPEG or DICOM (.dcm) chest X-ray.")
    path = Path(path)
    resolved = path.resolve()
    if uploads_only and (upload_root is None or Path(upload_root).resolve() not in resolved.parents):
        raise AppInputError("Only a file uploaded to this app can be read; send the image itself "
                            "(gradio_client: handle_file(path)).")
    try:
        data = path.read_bytes()
    except OSError:
        with _recent_lock:
            data = _recent_uploads.get(resolved, (0.0, None))[1]
        if data is None:
            raise AppInputError("The uploaded file could not be read; please upload it again.") from None
    if upload_root is not None:
        root = Path(upload_root).resolve()
        if root in resolved.parents:
            _remember_upload(resolved, data)
            # The file only: its hash-named folder stays, since Gradio creates that folder and then renames the
            # next upload of the same bytes into it, and removing it in between failed that upload (1 request in
            # 6,110 of a 30-minute soak). `prune_upload_folders` removes the empty ones later.
            resolved.unlink(missing_ok=True)
    return data


_last_sweep: dict[str, float] = {}  # upload root -> time of its last sweep


def prune_upload_folders(upload_root: str | os.PathLike, max_age_s: float = 600, every_s: float = 60) -> None:
    """Remove the empty upload folders (Gradio's one per distinct file) untouched for `max_age_s`. Called on
    every upload, it lists the folder at most once per `every_s` per root: the listing grows with the cache."""
    now = time.time()
    key = str(upload_root)
    if now - _last_sweep.get(key, -every_s) < every_s:
        return
    _last_sweep[key] = now
    for folder in Path(upload_root).iterdir() if Path(upload_root).is_dir() else ():
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:  # gone, or a file arrived in it meanwhile
            pass


def _remember_upload(path: Path, data: bytes) -> None:
    now = time.monotonic()
    with _recent_lock:
        _recent_uploads.pop(path, None)  # re-insert: the dict's order is the age order
        _recent_uploads[path] = (now, data)
        total = sum(len(d) for _, d in _recent_uploads.values())
        for key, (t, d) in list(_recent_uploads.items()):  # oldest first (insertion order)
            if now - t > RECENT_UPLOAD_S or total > RECENT_UPLOAD_BYTES:
                total -= len(d)
                del _recent_uploads[key]


def working_copy(image: XrayImage, max_side: int = WORKING_MAX_SIDE) -> XrayImage:
    """The image downsampled (area average) so its longer side is at most `max_side`; unchanged if smaller."""
    h, w = image.raw.shape
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return replace(image, raw=cv2.resize(image.raw, size, interpolation=cv2.INTER_AREA))


def upload_key(data: bytes) -> str:
    """A case key for an upload from its content (never its file name)."""
    return "upload-" + hashlib.sha256(data).hexdigest()[:12]


@dataclass
class Display:
    """How the user wants the image shown: a window (None = the file's own VOI) and inversion."""

    center: float | None = None
    width: float | None = None
    invert: bool | None = None

    def render(self, image: XrayImage) -> np.ndarray:
        """[H, W] uint8."""
        return image.to_uint8(self.center, self.width, self.invert)


def window_presets(image: XrayImage) -> dict[str, tuple[float, float]]:
    """Preset name -> (center, width): 'file' is the file's own window, the rest percentile windows."""
    presets = {"file": (float(image.window[0]), float(image.window[1]))}
    for name, (lo_q, hi_q) in WINDOW_PRESETS.items():
        lo, hi = np.percentile(image.raw, [lo_q, hi_q])
        presets[name] = (float(lo + hi) / 2, max(float(hi - lo), 1.0))
    return presets


def window_range(image: XrayImage) -> tuple[float, float, float]:
    """(min, max, max width) for the window sliders."""
    lo, hi = float(image.raw.min()), float(image.raw.max())
    return lo, max(hi, lo + 1.0), max(2.0 * (hi - lo), 2.0)
