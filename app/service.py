"""What the demo's events do, without Gradio: load the model once, read images, run a prediction, build every
panel's content (tables, overlays, diffs, metrics) and keep the per-session error review.

`app/ui.py` only wires these functions to components, so everything here is testable without a browser.

Patient-data rules (README, "Demo"): uploads arrive as bytes and are read in memory
(`consume_upload` deletes Gradio's temporary copy at once); `XrayImage` carries no DICOM header tags, only
pixels, window, inversion and view position; nothing here logs or stores a file name.
"""

from __future__ import annotations

import atexit
import csv
import difflib
import functools
import hashlib
import html
import io
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps

from revtaf.data import XrayImage, clean_report, image_file, load_annotation, read_image
from revtaf.data.transforms import resize_size
from revtaf.labels import LABEL_NAMES_18, RuleLabeler
from revtaf.labels.constants import STATES
from revtaf.metrics import case_scores, ce_scores, finding_diff
from revtaf.metrics.nlg import java_available
from revtaf.model.prediction import Prediction
from revtaf.data.reports import OPENI_ATTRIBUTION, ReportLookup
from revtaf.paths import BUNDLED_MODEL

DEFAULT_CHECKPOINT = BUNDLED_MODEL
IU_ATTRIBUTION = OPENI_ATTRIBUTION
NOTICE = "Research demo — not for clinical use. Outputs are machine-generated and may be wrong."
BURNED_IN_WARNING = (
    "DICOM: identifying header tags are never read, shown or stored, but text burned into the pixels "
    "(names, dates, hospital marks) is NOT removed and stays visible in the image."
)

# The model sees 224 px; 1024 px a side keeps display sharp and per-session memory small (~4 MB float32), and
# ablation re-runs see exactly the pixels the first run saw.
WORKING_MAX_SIDE = 1024
COLORMAPS = ("inferno", "jet", "turbo", "viridis", "magma", "hot")
# What the page can switch off, in tag order, with its long and short names: FVTAF's two branches (every model),
# then the plug-ins' inference parts (shown only for a model that carries them: REVTAF.ablations).
ABLATIONS = {"grp": ("retrieval (GRP)", "GRP"), "lrp": ("entity prompts (LRP)", "LRP"),
             "tisr": ("TISR pseudo words", "TISR"), "tir": ("TIR attention mask", "TIR")}
CASE_ORDERS = ("dataset", "errors")
REVIEW_CATEGORIES = ("false finding", "missed finding", "wrong location", "wrong severity", "style", "other")
GROUPS = ("finding", "device", "normal descriptor")
# Radiograph pixel values are not Hounsfield units, so CT presets (lung -600/1500...) mean nothing here:
# presets are percentile windows of the image's own histogram (dark lung fields, mid-grey mediastinum, bright bone).
WINDOW_PRESETS = {"lung": (1.0, 70.0), "mediastinum": (30.0, 99.0), "bone": (60.0, 99.8)}

CASE_PROTOCOL = {
    "BLEU_4": "pycocoevalcap BLEU-4, this case alone (sentence level), R2Gen IU-cleaned text, whitespace tokens",
    "ROUGE_L": "pycocoevalcap ROUGE-L (LCS F, beta 1.2), R2Gen IU-cleaned text",
    "METEOR": "METEOR 1.5 jar (-l en -norm), R2Gen IU-cleaned text",
    "CE": "CheXpert-14 example-based P/R/F1 of this case, positive = state 1 only, rule labeler",
}


class AppInputError(ValueError):
    """Bad input to the demo that is not an image-reading problem (no file, unknown study, empty text)."""


# --------------------------------------------------------------------------------------------- model


def resolve_checkpoint(
    checkpoint: str | os.PathLike | None = None,
    hf_repo: str | None = None,
    hf_revision: str | None = None,
    default: str | os.PathLike = DEFAULT_CHECKPOINT,
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
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=hf_repo, revision=hf_revision))
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


def model_dir_or_random(checkpoint: str | os.PathLike | None, workdir: str | os.PathLike) -> tuple[Path, str]:
    """(model directory, description) for benchmarks and QA: `checkpoint`, else the bundled model, else a
    random-init cpu-preset model saved under `workdir` (so a checkout without weights can still be measured)."""
    try:
        path = resolve_checkpoint(checkpoint)
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


def load_model(path: str | os.PathLike):
    """REVTAF.from_pretrained(path), in eval mode (import deferred: torch is heavy). A public demo never serves
    unverified weights: the directory's SHA-256 manifest is required (revtaf.integrity.IntegrityError)."""
    from revtaf.model.revtaf import REVTAF

    return REVTAF.from_pretrained(path, require_manifest=True)


# --------------------------------------------------------------------------------------------- images


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


def describe_image(image: XrayImage, original_size: tuple[int, int], pred: Prediction | None = None) -> str:
    """One markdown line: format, size, bit depth, view position (the file's tag, else the model's call)."""
    fmt = {"dicom": "DICOM", "png": "PNG", "jpeg": "JPEG"}.get(image.source_format, image.source_format.upper())
    if image.view_position:
        view = f"**{image.view_position}** (from the file)"
    elif pred is not None and pred.view is not None:
        view = f"**{pred.view}** (predicted from the pixels, P(lateral) {pred.p_lateral:.2f}; not stated in the file)"
    else:
        view = "**not stated in the file**"
    return f"**{fmt}**, {original_size[0]} × {original_size[1]} px, {image.bits}-bit · view position: {view}"


def warning_html(pred: Prediction) -> str:
    """The input check's warning above the report (empty when there is none)."""
    return f'<div class="input-warning">⚠ {html.escape(pred.warning)}</div>' if pred.warning else ""


# --------------------------------------------------------------------------------------------- overlays


def model_box(height: int, width: int, size: int = 224) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the region the attention maps cover: the test transform resizes the shorter side to
    256 and centre-crops 224 (docs/method.md §1.5), i.e. a centred square of side 224/256 of the shorter side."""
    side = min(height, width) * size / resize_size(size)
    x0, y0 = (width - side) / 2, (height - side) / 2
    box = round(x0), round(y0), round(x0 + side), round(y0 + side)
    # at least 1 px each way: a 1-px-wide upload would otherwise ask cv2 for a 0-size overlay and fail
    return box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)


@functools.cache
def _colormap_table(cmap: str) -> np.ndarray:
    """[256, 3] float32 RGB of a matplotlib colormap. Indexing it with floor(256·x) (255 at x = 1) is what
    `colormaps[cmap](x)` does for x in [0, 1], without its float64 RGBA image of every pixel."""
    return colormaps[cmap](np.arange(256))[:, :3].astype(np.float32)


def overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.5, cmap: str = "inferno",
            box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Attention map over an image.

    gray [H, W] uint8; heat [h, w] any float, min-max normalised here and bilinearly upsampled onto `box`
    (x0, y0, x1, y1; default the whole image), outlined so the model's field of view is visible. Each pixel
    blends with weight opacity * heat, so low-attention areas keep the radiograph readable.
    Returns [H, W, 3] uint8.
    """
    if cmap not in COLORMAPS:
        raise AppInputError(f"unknown colormap {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    if not 0.0 <= opacity <= 1.0:
        raise AppInputError(f"opacity must be between 0 and 1, got {opacity}")
    H, W = gray.shape
    x0, y0, x1, y1 = box or (0, 0, W, H)
    heat = np.asarray(heat, dtype=np.float32)
    span = float(heat.max() - heat.min()) if heat.size else 0.0
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    full = np.zeros((H, W), dtype=np.float32)
    full[y0:y1, x0:x1] = cv2.resize(heat, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    colour = _colormap_table(cmap)[np.minimum((full * 256).astype(np.intp), 255)]
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=2)
    alpha = (opacity * full)[..., None]
    out = np.rint((base * (1 - alpha) + colour * alpha) * 255).astype(np.uint8)
    if box is not None and (x0, y0, x1, y1) != (0, 0, W, H):
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (200, 200, 200), max(1, round(max(H, W) / 400)))
    return out


def heatmap_choices(pred: Prediction) -> list[tuple[str, str]]:
    """Dropdown (label, key) pairs: entities ('lrp:<i>', most probable first) then retrieved sentences ('grp:<j>')."""
    choices = []
    if len(pred.lrp_maps):
        for e in sorted(pred.entities, key=lambda e: -e.exist_prob):
            flag = "present" if e.exists else "absent"
            choices.append((f"Entity · {e.label or e.entity} — p={e.exist_prob:.2f} ({flag}), {e.position_label or e.position}",
                            f"lrp:{e.index}"))
    for j in range(len(pred.grp_maps)):
        choices.append((f"Sentence {j + 1} · {_short(grp_sentence(pred, j), 70)}", f"grp:{j}"))
    return choices


def grp_sentence(pred: Prediction, j: int) -> str:
    """Text of GRP sentence j; the model has its embedding even when no report source gives its words."""
    return pred.grp_sentences[j] if j < len(pred.grp_sentences) else "(sentence text not available)"


def default_heatmap(pred: Prediction) -> str | None:
    """The most probable present finding (else the most probable entity, else the first sentence)."""
    keys = [key for _, key in heatmap_choices(pred)]
    if not keys:
        return None
    findings = [e for e in pred.entities if e.group == "finding" and e.exists]
    if findings and len(pred.lrp_maps):
        return f"lrp:{max(findings, key=lambda e: e.exist_prob).index}"
    return keys[0]


@dataclass
class Heatmap:
    """The selected map over the image, the FCC partner's map and a markdown explanation of the pair."""

    image: np.ndarray | None
    partner: np.ndarray | None
    caption: str


def heatmap(pred: Prediction, gray: np.ndarray, key: str | None, opacity: float = 0.5, cmap: str = "inferno",
            box: tuple[int, int, int, int] | None = None) -> Heatmap:
    """Overlay of map `key` ('lrp:<entity index>' or 'grp:<sentence index>') and of its FCC partner.

    The partner is the one with the highest semantic similarity S (for an entity, the retrieved sentence that
    says the most similar thing; for a sentence, the most similar entity prompt); O then says whether the two
    attention maps agree in space. High S with low O is exactly what the FCC loss penalises.
    """
    if not key:
        return Heatmap(None, None, "No attention map to show.")
    kind, _, index = key.partition(":")
    if kind not in ("lrp", "grp") or not index.isdigit():
        raise AppInputError(f"unknown heatmap {key!r}; expected 'lrp:<entity>' or 'grp:<sentence>'")
    i = int(index)
    maps = pred.lrp_maps if kind == "lrp" else pred.grp_maps
    if i >= len(maps):
        what = "entity prompts (LRP)" if kind == "lrp" else "retrieved sentences (GRP)"
        return Heatmap(None, None, f"No map: this prediction has no {what} — is that branch switched off?")
    main = overlay(gray, maps[i], opacity, cmap, box)
    sim, ovl = np.asarray(pred.fcc_similarity), np.asarray(pred.fcc_overlap)
    n_sent = min(len(pred.grp_maps), sim.shape[1] if sim.ndim == 2 else 0)
    has_pairs = len(pred.lrp_maps) and n_sent
    if kind == "lrp":
        e = pred.entities[i]
        title = (f"**Entity {e.label or e.entity}** (LRP `{e.entity}`) — existence p = {e.exist_prob:.2f}, "
                 f"location *{e.position_label or e.position}*  \n"
                 f"“{e.sentence}”")
        if not has_pairs:
            return Heatmap(main, None, title + "\n\nNo retrieved sentences, so no FCC pair.")
        j = int(np.argmax(sim[i, :n_sent]))
        partner = overlay(gray, pred.grp_maps[j], opacity, cmap, box)
        pair = f"Partner: **retrieved sentence {j + 1}** (highest S) — “{grp_sentence(pred, j)}”"
        s, o = float(sim[i, j]), float(ovl[i, j])
    else:
        title = f"**Retrieved sentence {i + 1}** (GRP)  \n“{grp_sentence(pred, i)}”"
        if not has_pairs or i >= n_sent:
            return Heatmap(main, None, title + "\n\nNo entity prompts, so no FCC pair.")
        m = int(np.argmax(sim[:, i]))
        partner = overlay(gray, pred.lrp_maps[m], opacity, cmap, box)
        pair = f"Partner: **entity {pred.entities[m].label or pred.entities[m].entity}** (highest S) — “{pred.entities[m].sentence}”"
        s, o = float(sim[m, i]), float(ovl[m, i])
    caption = (
        f"{title}\n\n{pair}\n\n**FCC consistency of the pair:** semantic similarity S = {s:.3f}, "
        f"spatial overlap O = {o:.3f} (the FCC loss's IoU of the two maps; 1 − S·O = {1 - s * o:.3f})."
    )
    return Heatmap(main, partner, caption)


# --------------------------------------------------------------------------------------------- tables


DISEASE_HEADERS = ["disease prompt", "state", "P blank", "P pos", "P neg", "P unc"]
ENTITY_HEADERS = ["#", "group", "finding", "exist prob", "present", "location", "entity id", "triplet sentence"]
NEIGHBOUR_HEADERS = ["rank", "study id", "distance", "labels (+ / ?)", "report"]


def disease_rows(pred: Prediction) -> list[list]:
    """One row per disease prompt, in the classifier's fixed order."""
    return [[d.name, d.state] + [round(float(d.probs.get(s, 0.0)), 3) for s in STATES] for d in pred.diseases]


def disease_summary(pred: Prediction, written: Sequence[int] | None = None) -> str:
    """Markdown: which prompts the classifier set to positive / uncertain / negative; given the labeler's states
    of the generated report (`written` [18], LABEL_NAMES_18 order), also the positive prompts the report does not
    state: the decoder follows few of them (README, honest reading), and a reader should not have to find out."""
    parts = []
    for state in ("positive", "uncertain", "negative"):
        names = [d.name for d in pred.diseases if d.state == state]
        if names:
            parts.append(f"**{state}:** {', '.join(names)}")
    summary = " · ".join(parts) if parts else "All 18 prompts are blank (not mentioned)."
    if written is not None:
        # Prediction.diseases come in LABEL_NAMES_18 order, the labeler's order
        unwritten = [d.name for d, w in zip(pred.diseases, written)
                     if d.state == "positive" and STATES[int(w)] != "positive"]
        if unwritten:
            summary += f"\n\n⚠ **Positive here but not stated in the report:** {', '.join(unwritten)}"
    return summary


def entity_rows(pred: Prediction, group: str | None = None) -> list[list]:
    """The 75 LRPs, grouped (findings, devices, normal descriptors), most probable first in each group."""
    if group and group != "all" and group not in GROUPS:
        raise AppInputError(f"unknown entity group {group!r}; choose all, {', '.join(GROUPS)}")
    order = {g: k for k, g in enumerate(GROUPS)}
    rows = [e for e in pred.entities if not group or group == "all" or e.group == group]
    rows.sort(key=lambda e: (order.get(e.group, len(GROUPS)), -e.exist_prob))
    return [[e.index, e.group, e.label or e.entity, round(float(e.exist_prob), 3), "✓" if e.exists else "",
             e.position_label or e.position, e.entity, e.sentence] for e in rows]


def _labels_text(labels: dict[str, str], states: tuple[str, ...] = ("positive", "uncertain", "negative")) -> str:
    """'Cardiomegaly +, Edema ?, Effusion −' style summary of the given states."""
    mark = {"positive": "+", "negative": "−", "uncertain": "?"}
    return ", ".join(f"{name} {mark[s]}" for name, s in labels.items() if s in states) or "—"


def neighbour_rows(pred: Prediction) -> list[list]:
    return [[k + 1, n.study_id, round(float(n.distance), 4), _labels_text(n.labels, ("positive", "uncertain")),
             _short(n.report or "(text not available)", 90)] for k, n in enumerate(pred.neighbours)]


def retrieved_summary(pred: Prediction) -> tuple[str, str]:
    """(report text, markdown facts) of the nearest neighbour, the study whose sentences became the GRPs."""
    if not pred.neighbours:
        return "", "No study was retrieved."
    n = pred.neighbours[0]
    facts = (f"**Study** `{n.study_id}` · **Poincaré distance** {n.distance:.4f}  \n"
             f"**Labels** (+ positive, ? uncertain): {_labels_text(n.labels, ('positive', 'uncertain'))}")
    return n.report or "(Report text not available: neither the data root nor the Open-i archive has it.)", facts


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------------------------- comparison


def word_diff_html(reference: str, hypothesis: str) -> str:
    """Word-level diff (difflib) of two cleaned reports as HTML: red struck = only in the reference, green =
    only in the hypothesis."""
    a, b = reference.split(), hypothesis.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append('<del style="background:#fde2e1;color:#9b1c1c;text-decoration:line-through">'
                       f"{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append('<ins style="background:#dcf5e3;color:#14532d;text-decoration:none">'
                       f"{html.escape(' '.join(b[j1:j2]))}</ins>")
    ratio = difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
    legend = ('<div style="font-size:0.85em;opacity:0.8;margin-bottom:6px">'
              '<del style="background:#fde2e1;color:#9b1c1c">ground truth only</del> · '
              '<ins style="background:#dcf5e3;color:#14532d;text-decoration:none">generated only</ins> · '
              f"word match ratio {ratio:.2f} (cleaned text)</div>")
    return f'{legend}<div style="line-height:1.7">{" ".join(out)}</div>'


FINDING_HEADERS = ["finding", "GT", "generated", "verdict", "retrieved", "verdict (retrieved)"]
METRIC_HEADERS = ["metric", "generated vs GT", "retrieved vs GT", "protocol"]


@dataclass
class Comparison:
    diff_html: str
    findings: list[list]
    metrics: list[list]


# --------------------------------------------------------------------------------------------- service


@dataclass
class Case:
    """One analysed study as a session holds it: heatmap and window events need no model run.

    `predictions` caches one Prediction per ablation tag ('full', 'grp', 'lrp', 'grp+lrp', 'tisr', ...)."""

    key: str
    image: XrayImage  # working copy, what the model saw
    original_size: tuple[int, int]
    display: Display = field(default_factory=Display)
    study_id: str | None = None
    ground_truth: str | None = None
    predictions: dict[str, Prediction] = field(default_factory=dict)
    ablation: str = "full"

    @property
    def prediction(self) -> Prediction:
        return self.predictions[self.ablation]

    def gray(self) -> np.ndarray:
        return self.display.render(self.image)

    def heatmap(self, key: str | None, opacity: float = 0.5, cmap: str = "inferno") -> Heatmap:
        """`heatmap` of the current prediction over the displayed image, on the model's crop."""
        gray = self.gray()
        return heatmap(self.prediction, gray, key, opacity, cmap, model_box(*gray.shape))


def ablation_tag(grp_off: bool, lrp_off: bool, plugins_off: Sequence[str] | None = ()) -> str:
    """The page's switches -> the cache tag of what is off ('full', 'grp', 'lrp+tisr', ...)."""
    off = {"grp": grp_off, "lrp": lrp_off, **{name: True for name in plugins_off or ()}}
    unknown = set(off) - set(ABLATIONS)
    if unknown:
        raise AppInputError(f"unknown switch {sorted(unknown)}: choose from {list(ABLATIONS)}")
    return "+".join(name for name in ABLATIONS if off.get(name)) or "full"


def ablation_label(tag: str) -> str:
    """'full model', 'retrieval (GRP) off', 'GRP and TISR off', ..."""
    names = [] if tag == "full" else tag.split("+")
    if not names:
        return "full model"
    if len(names) == 1:
        return f"{ABLATIONS[names[0]][0]} off"
    short = [ABLATIONS[n][1] for n in names]
    return f"{', '.join(short[:-1])} and {short[-1]} off"


class Service:
    """The model, the optional dataset and the labeler, shared by all sessions (all read-only after init)."""

    def __init__(self, model, data_root: str | os.PathLike | None = None, labeler=None):
        self.model = model
        self.labeler = labeler or RuleLabeler()
        self.data_root = Path(data_root) if data_root else None
        self.studies = load_annotation(self.data_root, "iu") if self.data_root else {}
        self._by_id = {s.id: s for split in self.studies.values() for s in split}
        # Retrieved reports come from the data root, else from the Open-i archive shipped with torchxrayvision,
        # so a Space without the dataset still shows what the model retrieved.
        self.reports = ReportLookup(self.data_root)
        self._case_labels: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, list[dict]] = {}  # error_order per split
        self._order_lock = threading.Lock()
        # METEOR is a Java jar that takes seconds (tens on a busy CPU) to load: warm it up in the background
        # and leave it out of comparisons made before it is ready, rather than block a user's request.
        self.meteor = java_available()
        self.meteor_problem = "Java is not available" if not self.meteor else None
        self.meteor_ready = threading.Event()
        warmups = [threading.Thread(target=self.reports.covers, args=(["CXR1_1_IM-0001"],), daemon=True)]  # parse once
        if self.meteor:
            warmups.append(threading.Thread(target=self._warm_meteor, daemon=True))
        for thread in warmups:
            thread.start()
        # A daemon thread still in native code while the interpreter tears down aborts the process ("terminate
        # called without an active exception", seen when a script or a test exits within seconds of start-up):
        # give them a bounded wait at exit instead.
        atexit.register(lambda: [thread.join(timeout=30) for thread in warmups])

    def _warm_meteor(self) -> None:
        try:
            case_scores("the heart is normal", "the heart is normal", meteor=True)
        except Exception as exc:  # a broken Java install: METEOR is reported as missing, as without Java
            self.meteor_problem = f"the METEOR jar failed ({type(exc).__name__})"
            self.meteor = False
        finally:
            self.meteor_ready.set()

    # ---- dataset

    @property
    def has_data(self) -> bool:
        return bool(self._by_id)

    def report_lookup(self, study_id: str) -> str | None:
        return self.reports(study_id)

    def _split_labels(self, split: str) -> np.ndarray:
        """Rule-labeler states [n, 18] of a split's ground-truth reports, computed on first use."""
        with self._lock:
            if split not in self._case_labels:
                self._case_labels[split] = self.labeler([clean_report(s.report, "iu") for s in self.studies[split]])
            return self._case_labels[split]

    def case_ids(self, split: str, finding: str | None = None, order: str = "dataset",
                 errors_only: bool = False, progress=None) -> list[str]:
        """Study ids of `split`, optionally only those whose ground truth the labeler marks positive for `finding`.

        order "errors": cases whose report misses a finding first, then those with a false finding, then the
        rest (`error_order`, which runs the model over the split once); `errors_only` keeps the first two groups.
        """
        if split not in self.studies:
            choices = ", ".join(self.studies) or "(no dataset loaded)"
            raise AppInputError(f"no split {split!r} in the loaded data; choose one of {choices}")
        if order not in CASE_ORDERS:
            raise AppInputError(f"unknown order {order!r}; choose one of {', '.join(CASE_ORDERS)}")
        studies = self.studies[split]
        keep = np.ones(len(studies), dtype=bool)
        if finding and finding != "any":
            if finding not in LABEL_NAMES_18:
                raise AppInputError(f"unknown finding {finding!r}")
            keep &= self._split_labels(split)[:, LABEL_NAMES_18.index(finding)] == 1
        if order == "dataset" and not errors_only:
            return [s.id for s, k in zip(studies, keep) if k]
        errors = self.error_order(split, progress)
        rank = [0 if e["missed"] else 1 if e["false"] else 2 for e in errors]
        picked = [i for i in range(len(studies)) if keep[i] and (rank[i] < 2 or not errors_only)]
        if order == "errors":
            picked.sort(key=lambda i: (rank[i], -len(errors[i]["missed"]), -len(errors[i]["false"]), i))
        return [studies[i].id for i in picked]

    def error_order(self, split: str, progress=None, batch_size: int = 16) -> list[dict]:
        """[{"id", "missed", "false"}] for every study of `split`, in dataset order: the pathologies (CheXpert-14
        + 4 without No Finding) that the generated report misses or adds against the ground truth, by the rule
        labeler (the finding diff of the comparison panel). The model runs over the whole split once (minutes on
        two cores; `progress(done, total)` after each batch); the result is cached for this model and split."""
        with self._order_lock:
            if split in self._errors:
                return self._errors[split]
            studies, out = self.studies[split], []
            truth = self._split_labels(split)
            pathology = [i for i, name in enumerate(LABEL_NAMES_18) if name != "No Finding"]
            for start in range(0, len(studies), batch_size):
                chunk = studies[start:start + batch_size]
                # the same working copy the page analyses, so the order agrees with what a loaded case shows
                images = [working_copy(read_image(image_file(self.data_root, st))) for st in chunk]
                preds = self.model.predict_batch(images, exclude_ids=[st.id for st in chunk])
                written = self.labeler([clean_report(p.report, "iu") for p in preds])
                for st, gt, gen in zip(chunk, truth[start:start + batch_size], written):
                    out.append({"id": st.id,
                                "missed": [LABEL_NAMES_18[i] for i in pathology if gt[i] == 1 and gen[i] != 1],
                                "false": [LABEL_NAMES_18[i] for i in pathology if gen[i] == 1 and gt[i] != 1]})
                if progress is not None:
                    progress(len(out), len(studies))
            self._errors[split] = out
            return out

    def next_case(self, split: str, finding: str | None, current: str | None, order: str = "dataset",
                  errors_only: bool = False) -> str:
        """The case after `current` in the filtered list (wrapping), or the first one."""
        ids = self.case_ids(split, finding, order, errors_only)
        if not ids:
            raise AppInputError("No case in this split matches the filter.")
        if current in ids:
            return ids[(ids.index(current) + 1) % len(ids)]
        return ids[0]

    @property
    def plugin_switches(self) -> list[tuple[str, str]]:
        """(label, name) of the plug-in parts this model can switch off at inference: none for a plain REVTAF."""
        return [(label, name) for name, (label, _) in ABLATIONS.items()
                if name in self.model.ablations and name not in ("grp", "lrp")]

    @property
    def plugin_note(self) -> str:
        """The sibling methods' parts the model carries and what each does at inference, for the page."""
        parts = [f"{name} ({what})" for name, what in self.model.plugins.items()]
        return "Plug-ins: " + ("; ".join(parts) if parts else "none") + "."

    @property
    def identity(self) -> dict:
        """The model's identity, saved with every review."""
        return model_identity(self.model)

    def review_progress(self, ids: list[str], store: dict) -> str:
        """"N of M reviewed" for the listed cases: a case counts once reviewed with this model (any ablation)."""
        sha = self.identity["model_sha256"]
        done = {r.get("study_id") for r in (store or {}).values() if r.get("model_sha256") == sha}
        return f"**{sum(i in done for i in ids)} of {len(ids)}** listed cases reviewed with this model."

    # ---- model

    def predict(self, image: XrayImage, ablation: str = "full", study_id: str | None = None) -> Prediction:
        """The model's Prediction; a dataset study never retrieves itself (it may be in the training bank)."""
        ablate = frozenset() if ablation == "full" else frozenset(ablation.split("+"))
        if not ablate <= self.model.ablations:
            raise AppInputError(f"unknown ablation {ablation!r}: this model can switch off "
                                f"{sorted(self.model.ablations)}")
        return self.model.predict(image, ablate=ablate, report_lookup=self.reports, exclude_id=study_id)

    def open_upload(self, data: bytes, ablation: str = "full") -> Case:
        """Read uploaded bytes and analyse them. Raises an ImageReadError subclass on a bad file."""
        image = read_image(data)
        case = Case(key=upload_key(data), image=working_copy(image), original_size=image.size,
                    display=Display(invert=None))
        return self.run(case, ablation)

    def open_study(self, study_id: str, ablation: str = "full") -> Case:
        """Read a dataset study's frontal image and analyse it, with its findings as ground truth."""
        study = self._by_id.get((study_id or "").strip())
        if study is None:
            raise AppInputError(f"Unknown study id {study_id!r}." if self.has_data else "No dataset is loaded.")
        image = read_image(image_file(self.data_root, study))
        case = Case(key=f"iu-{study.id}", image=working_copy(image), original_size=image.size,
                    study_id=study.id, ground_truth=study.report)
        return self.run(case, ablation)

    def run(self, case: Case, ablation: str) -> Case:
        """Make `ablation` the case's current prediction, running the model only if it is not cached."""
        if ablation not in case.predictions:
            case.predictions[ablation] = self.predict(case.image, ablation, case.study_id)
        case.ablation = ablation
        return case

    def overlay_gallery(self, case: Case, k: int = 4, opacity: float = 0.6,
                        cmap: str = "inferno") -> list[tuple[np.ndarray, str]]:
        """(overlay, caption) of the k most probable present entities and the first k retrieved sentences."""
        pred, gray = case.prediction, case.gray()
        box = model_box(*gray.shape)
        out = []
        if len(pred.lrp_maps):
            ranked = sorted(pred.entities, key=lambda e: (not e.exists, -e.exist_prob))[:k]
            out += [(overlay(gray, pred.lrp_maps[e.index], opacity, cmap, box),
                     f"LRP {e.label or e.entity} (p={e.exist_prob:.2f}, {e.position_label or e.position})") for e in ranked]
        out += [(overlay(gray, pred.grp_maps[j], opacity, cmap, box),
                 f"GRP sentence {j + 1}: {_short(grp_sentence(pred, j), 60)}")
                for j in range(min(k, len(pred.grp_maps)))]
        return out

    def written_states(self, pred: Prediction) -> np.ndarray:
        """The labeler's states [18] of the generated report (what `disease_summary` checks the prompt against)."""
        return self.labeler([clean_report(pred.report, "iu")])[0]

    # ---- comparison

    def compare(self, ground_truth: str, pred: Prediction) -> Comparison:
        """Ground truth vs generated (and vs the retrieved report): word diff, finding diff, case metrics."""
        if not ground_truth or not ground_truth.strip():
            raise AppInputError("Paste a ground-truth report (or load a dataset case) to compare against.")
        gt, gen = clean_report(ground_truth, "iu"), clean_report(pred.report, "iu")
        retrieved = pred.neighbours[0].report if pred.neighbours and pred.neighbours[0].report else None
        ret = clean_report(retrieved, "iu") if retrieved else None
        texts = [gt, gen] + ([ret] if ret else [])
        labels = self.labeler(texts)

        # finding_diff leaves out observations blank on both sides: those agree
        gen_verdict = {name: v for name, _, _, v in finding_diff(labels[0], labels[1], LABEL_NAMES_18)}
        ret_verdict = {name: v for name, _, _, v in finding_diff(labels[0], labels[2], LABEL_NAMES_18)} if ret else {}
        findings = []
        for k, name in enumerate(LABEL_NAMES_18):
            if name not in gen_verdict and name not in ret_verdict:
                continue
            states = [STATES[int(labels[j][k])] for j in range(len(texts))]
            findings.append([name, states[0], states[1], gen_verdict.get(name, "agreement"),
                             states[2] if ret else "—", ret_verdict.get(name, "agreement") if ret else "—"])
        # disagreements first, so the interesting rows are on top
        findings.sort(key=lambda row: (row[3] == "agreement" and row[5] in ("agreement", "—")))

        metrics = self._case_metrics(gt, gen, ret, labels)
        return Comparison(word_diff_html(gt, gen), findings, metrics)

    def _case_metrics(self, gt: str, gen: str, ret: str | None, labels: np.ndarray) -> list[list]:
        meteor = self.meteor and self.meteor_ready.is_set()
        scores = [case_scores(gt, gen, meteor=meteor)]
        ces = [ce_scores(labels[:1], labels[1:2])["example"]]
        if ret:
            scores.append(case_scores(gt, ret, meteor=meteor))
            ces.append(ce_scores(labels[:1], labels[2:3])["example"])

        def fmt(v):
            return "—" if v is None else f"{v:.4f}"

        if not self.meteor:
            meteor_protocol = f"missing: {self.meteor_problem} (no other METEOR is substituted)"
        elif not meteor:
            meteor_protocol = "not yet: the METEOR 1.5 jar is still starting; press Compare again in a moment"
        else:
            meteor_protocol = CASE_PROTOCOL["METEOR"]
        rows = []
        for key, label in (("BLEU_4", "BLEU-4"), ("ROUGE_L", "ROUGE-L"), ("METEOR", "METEOR")):
            values = [fmt(s[key]) for s in scores] + ["—"] * (2 - len(scores))
            rows.append([label, *values, meteor_protocol if key == "METEOR" else CASE_PROTOCOL[key]])
        for key, label in (("precision", "CE precision"), ("recall", "CE recall"), ("f1", "CE F1")):
            values = [fmt(c[key]) for c in ces] + ["—"] * (2 - len(ces))
            rows.append([label, *values, CASE_PROTOCOL["CE"]])
        return rows


# --------------------------------------------------------------------------------------------- review


# What a review's finding verdicts and case metrics mean, written into every exported entry.
REVIEW_PROTOCOL = ("IU X-Ray findings section, R2Gen cleaning; finding diff by the rule labeler (CheXpert-14 + 4), "
                   "CE rule: only positive counts")
UNKNOWN_MODEL = {"model_sha256": "unknown", "model_config": "unknown"}
MAX_REVIEW_FILE = 5 * 2**20  # an imported review file: thousands of reviews fit in far less


def model_identity(model) -> dict:
    """{"model_sha256", "model_config"} of a loaded model (from its manifest and run card), else "unknown"."""
    config = getattr(model, "preset", None) or "unknown"
    if getattr(model, "quantized", None):  # what was reviewed: the approximation, not the saved weights alone
        config += f" ({model.quantized} decoder)"
    return {"model_sha256": getattr(model, "weights_sha256", None) or "unknown", "model_config": config}


def review_key(record: dict) -> str:
    """One review per case, ablation and model."""
    return f"{record['case']}|{record['ablation']}|{record['model_sha256']}"


def save_review(store: dict, case: Case | None, categories: list[str], note: str, model: dict | None = None) -> dict:
    """A new store with the review of `case` added or replaced (one review per case, ablation and model `model`,
    a `model_identity`)."""
    if case is None:
        raise AppInputError("Analyse an image first; the review is saved for the case on screen.")
    unknown = [c for c in categories or [] if c not in REVIEW_CATEGORIES]
    if unknown:
        raise AppInputError(f"unknown error categories {unknown}; choose from {', '.join(REVIEW_CATEGORIES)}")
    if not categories and not (note or "").strip():
        raise AppInputError("Tick at least one error category or write a note before saving.")
    record = {
        "case": case.key,
        "study_id": case.study_id or "",
        "ablation": case.ablation,
        "categories": [c for c in REVIEW_CATEGORIES if c in categories],
        "note": (note or "").strip(),
        "generated_report": case.prediction.report,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(model or UNKNOWN_MODEL),
        "protocol": REVIEW_PROTOCOL,
    }
    return {**store, review_key(record): record}


REVIEW_HEADERS = ["case", "study_id", "ablation", "categories", "note", "generated_report", "saved_at",
                  "model_sha256", "model_config", "protocol"]


def review_rows(store: dict) -> list[list]:
    return [[r.get(h, "") if h != "categories" else "; ".join(r[h]) for h in REVIEW_HEADERS] for r in store.values()]


def review_csv(store: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(REVIEW_HEADERS)
    writer.writerows(review_rows(store))
    return buf.getvalue()


def review_json(store: dict) -> str:
    return json.dumps(list(store.values()), indent=2, ensure_ascii=False) + "\n"


def read_reviews(path: str | os.PathLike | None) -> list[dict]:
    """The entries of a review JSON exported by this page; AppInputError saying what is wrong with any other file."""
    if not path:
        raise AppInputError("Choose a review file (the JSON this page exports) to import.")
    path = Path(path)
    if path.stat().st_size > MAX_REVIEW_FILE:
        raise AppInputError(f"This review file is larger than {MAX_REVIEW_FILE // 2**20} MB; is it the right file?")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AppInputError("This is not a review file: it is not JSON (use the JSON this page exports, not the CSV).") from None
    if not isinstance(records, list):
        raise AppInputError("This is not a review file: expected a list of reviews.")
    required = ("case", "ablation", "categories", "note", "saved_at")
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict) or any(k not in r for k in required):
            raise AppInputError(f"Review {i} of the file lacks {', '.join(required)}: nothing was imported.")
        if not isinstance(r["categories"], list) or any(c not in REVIEW_CATEGORIES for c in r["categories"]):
            raise AppInputError(f"Review {i} of the file has unknown error categories: nothing was imported.")
        try:
            datetime.fromisoformat(str(r["saved_at"]))
        except ValueError:
            raise AppInputError(f"Review {i} of the file has no valid time: nothing was imported.") from None
    return [{**UNKNOWN_MODEL, "study_id": "", "generated_report": "", "protocol": "", **r} for r in records]


def merge_reviews(store: dict, records: list[dict]) -> tuple[dict, dict]:
    """(new store, counts) with `records` joined in: the same case, ablation and model keep the newer review.
    counts = {"added", "replaced" (an older one here), "kept" (the one here is as new or newer)}."""
    out, counts = dict(store), {"added": 0, "replaced": 0, "kept": 0}
    for record in records:
        key = review_key(record)
        here = out.get(key)
        if here is None:
            counts["added"] += 1
        elif datetime.fromisoformat(record["saved_at"]) > datetime.fromisoformat(here["saved_at"]):
            counts["replaced"] += 1
        else:
            counts["kept"] += 1
            continue
        out[key] = record
    return out, counts


def export_reviews(store: dict, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write the session's reviews as `revtaf_review.csv` and `.json` in a fresh folder under `directory`."""
    if not store:
        raise AppInputError("No review saved yet in this session.")
    out = Path(tempfile.mkdtemp(prefix="review-", dir=directory))
    csv_path, json_path = out / "revtaf_review.csv", out / "revtaf_review.json"
    csv_path.write_text(review_csv(store), encoding="utf-8")
    json_path.write_text(review_json(store), encoding="utf-8")
    return csv_path, json_path


def prune(directory: str | os.PathLike, max_age_s: float = 3600) -> None:
    """Delete exports (review files, /generate images) older than `max_age_s` from the app's own export folder
    (they are copied into Gradio's cache when served)."""
    now = time.time()
    for child in Path(directory).iterdir():
        if now - child.stat().st_mtime > max_age_s:
            shutil.rmtree(child, ignore_errors=True)
