"""Overlays: the attention maps drawn over the displayed image on the model's crop, and the map choices."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps
from PIL import Image

from revtaf.data.transforms import resize_size
from revtaf.model.prediction import Prediction
from revtaf_app.errors import AppInputError
from revtaf_app.panels import shorten


COLORMAPS = ("inferno", "jet", "turbo", "viridis", "magma", "hot")
PNG_MAX_AGE_S = 600  # Gradio copies a returned file into its cache at once; ours are kept a while, then deleted


@functools.cache
def image_dir() -> Path:
    """The process's folder of page images (png_file), removed at exit; the app serves it (ui.build)."""
    folder = Path(tempfile.mkdtemp(prefix="revtaf-images-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def png_file(pixels: np.ndarray, folder: Path | None = None) -> str:
    """pixels [H, W] or [H, W, 3] uint8 as a PNG file (in `folder`, default image_dir()) -> its path, which a
    gr.Image serves as it is. Written at zlib level 1: lossless, and an overlay takes 9 ms instead of the 32 ms of
    Gradio's own PNG (level 6) for ~10 % more bytes; a map change writes two. Files older than PNG_MAX_AGE_S in
    the folder are deleted."""
    folder = folder or image_dir()
    now = time.time()
    for old in folder.glob("*.png"):
        if now - old.stat().st_mtime > PNG_MAX_AGE_S:
            old.unlink(missing_ok=True)
    path = folder / f"{uuid.uuid4().hex}.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return str(path)

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
        choices.append((f"Sentence {j + 1} · {shorten(grp_sentence(pred, j), 70)}", f"grp:{j}"))
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
    """The selected map over the image, the FCC partner's map, a markdown explanation of the pair, and (a
    two-view study) the selected map's lateral part over the lateral film."""

    image: np.ndarray | None
    partner: np.ndarray | None
    caption: str
    lateral: np.ndarray | None = None


def view_shares(frontal: np.ndarray, lateral: np.ndarray) -> str:
    """Which film holds most of a map's mass, for the caption ("**62 % of the map's mass on the frontal film**")."""
    f, lat = float(np.clip(frontal, 0, None).sum()), float(np.clip(lateral, 0, None).sum())
    share = f / (f + lat) if f + lat > 0 else 0.5
    where, most = ("frontal", share) if share >= 0.5 else ("lateral", 1 - share)
    return f"**{most:.0%} of the map's mass on the {where} film**"


def heatmap(pred: Prediction, gray: np.ndarray, key: str | None, opacity: float = 0.5, cmap: str = "inferno",
            lateral_gray: np.ndarray | None = None) -> Heatmap:
    """Overlay of map `key` ('lrp:<entity index>' or 'grp:<sentence index>') and of its FCC partner, on the
    displayed image's model crop; with `lateral_gray` (a two-view prediction), the map's lateral part too, and
    the caption says which film holds most of its mass.

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
    box = model_box(*gray.shape)
    main = overlay(gray, maps[i], opacity, cmap, box)
    lateral_maps = pred.lateral_lrp_maps if kind == "lrp" else pred.lateral_grp_maps
    lateral, shares = None, ""
    if lateral_gray is not None and i < len(lateral_maps):
        lateral = overlay(lateral_gray, lateral_maps[i], opacity, cmap, model_box(*lateral_gray.shape))
        shares = "\n\n" + view_shares(maps[i], lateral_maps[i])
    sim, ovl = np.asarray(pred.fcc_similarity), np.asarray(pred.fcc_overlap)
    n_sent = min(len(pred.grp_maps), sim.shape[1] if sim.ndim == 2 else 0)
    has_pairs = len(pred.lrp_maps) and n_sent
    if kind == "lrp":
        e = pred.entities[i]
        title = (f"**Entity {e.label or e.entity}** (LRP `{e.entity}`) — existence p = {e.exist_prob:.2f}, "
                 f"location *{e.position_label or e.position}*  \n"
                 f"“{e.sentence}”")
        if not has_pairs:
            return Heatmap(main, None, title + shares + "\n\nNo retrieved sentences, so no FCC pair.", lateral)
        j = int(np.argmax(sim[i, :n_sent]))
        partner = overlay(gray, pred.grp_maps[j], opacity, cmap, box)
        pair = f"Partner: **retrieved sentence {j + 1}** (highest S) — “{grp_sentence(pred, j)}”"
        s, o = float(sim[i, j]), float(ovl[i, j])
    else:
        title = f"**Retrieved sentence {i + 1}** (GRP)  \n“{grp_sentence(pred, i)}”"
        if not has_pairs or i >= n_sent:
            return Heatmap(main, None, title + shares + "\n\nNo entity prompts, so no FCC pair.", lateral)
        m = int(np.argmax(sim[:, i]))
        partner = overlay(gray, pred.lrp_maps[m], opacity, cmap, box)
        pair = f"Partner: **entity {pred.entities[m].label or pred.entities[m].entity}** (highest S) — “{pred.entities[m].sentence}”"
        s, o = float(sim[m, i]), float(ovl[m, i])
    caption = (
        f"{title}{shares}\n\n{pair}\n\n**FCC consistency of the pair:** semantic similarity S = {s:.3f}, "
        f"spatial overlap O = {o:.3f} (the FCC loss's IoU of the two maps; 1 − S·O = {1 - s * o:.3f})."
    )
    return Heatmap(main, partner, caption, lateral)
