"""Does the evidence mean something? Prompt adherence of the reports and grounding of the attention maps.

- `prompt_adherence`: for the 14 CheXpert classes, the share of positive prompt states (what the classifier, or
  an oracle, told the decoder) that the labeler finds positive in the generated report, and the share of
  non-positive states that it does not find positive. A decoder that ignores its prompt writes the same report
  whatever the prompt says and scores low on the first share.
- `map_overlap`: mean pairwise soft IoU between an image's entity maps (LRPs of the entities predicted present),
  averaged over images. Identical maps give 1.
- `border_mass`: the share of the maps' normalised mass on the outer ring of the patch grid (on 7×7, 24 of the
  49 cells: .49 for a uniform map). Most of a radiograph's border is outside the lungs, so maps drawn to the
  border (a transport plan dumping mass it cannot place) score well above .49.
- `side_pointing`: for a finding whose reference report states a side, whether more of the entity's map mass
  lies on that side of the image. Radiographs are shown as if facing the patient, so the patient's right is the
  image's left (columns 0 .. W/2 on a frontal view). Chance is 0.5; a map mirrored left-right inverts it.
- `zone_pointing`: the same for the vertical zone a reference position names (upper / mid / lower third of the
  grid, labels/regions.py); chance about 1/3.

Maps are min-max normalised per map (as the FCC loss treats them) before IoU or mass; shapes in docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from revtaf.labels.constants import CHEXPERT_14
from revtaf.labels.regions import side_of, zone_of

POSITIVE = 1


def prompt_adherence(prompt_states: np.ndarray, report_states: np.ndarray, classes: int = len(CHEXPERT_14)) -> dict:
    """prompt_states, report_states [n, >=14] CheXpert states (0 blank, 1 positive, 2 negative, 3 uncertain), over
    the first `classes` CheXpert classes (13: the findings, No Finding excluded).

    Returns {"positive": share of positive prompts written positive, "n_positive",
    "non_positive": share of non-positive prompts not written positive, "n_non_positive",
    "per_class": {name: {"positive", "n_positive"}}}; a share is None when it has no case.
    """
    prompt = np.asarray(prompt_states)[:, :classes] == POSITIVE
    written = np.asarray(report_states)[:, :classes] == POSITIVE
    if prompt.shape != written.shape:
        raise ValueError(f"prompt {prompt.shape} and report {written.shape} states differ in shape")

    def share(hits: np.ndarray, cases: np.ndarray) -> float | None:
        return float(hits[cases].mean()) if cases.any() else None

    per_class = {name: {"positive": share(written[:, c], prompt[:, c]), "n_positive": int(prompt[:, c].sum())}
                 for c, name in enumerate(CHEXPERT_14[:classes])}
    return {"positive": share(written, prompt), "n_positive": int(prompt.sum()),
            "non_positive": share(~written, ~prompt), "n_non_positive": int((~prompt).sum()),
            "per_class": per_class}


def _minmax(maps: np.ndarray) -> np.ndarray:
    """[..., L] -> each map scaled to [0, 1] over its L positions (a constant map becomes all zeros)."""
    lo = maps.min(-1, keepdims=True)
    hi = maps.max(-1, keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, 1e-6)


def pairwise_soft_iou(maps: np.ndarray) -> np.ndarray:
    """maps [T, L] -> [T, T] soft IoU Σmin / Σmax of the min-max normalised maps (1 for identical maps)."""
    m = _minmax(np.asarray(maps, dtype=np.float64))
    inter = np.minimum(m[:, None, :], m[None, :, :]).sum(-1)
    union = np.maximum(m[:, None, :], m[None, :, :]).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


def map_overlap(maps_per_image: Sequence[np.ndarray]) -> dict:
    """maps_per_image: one [T_i, L] array per image (e.g. the maps of its entities predicted present).

    Returns {"mean": mean over images of the mean pairwise soft IoU of distinct maps, "images": images with
    at least two maps}; mean None when no image has two.
    """
    means = []
    for maps in maps_per_image:
        if len(maps) < 2:
            continue
        iou = pairwise_soft_iou(maps)
        means.append(iou[np.triu_indices(len(maps), k=1)].mean())
    return {"mean": float(np.mean(means)) if means else None, "images": len(means)}


def border_mass(maps: np.ndarray) -> dict:
    """maps [n, L] with L a square grid -> {"mean": mean share of each min-max normalised map's mass on the outer
    ring of cells, "uniform": that share for a uniform map}; mean None for no maps."""
    maps = np.asarray(maps, dtype=np.float64)
    side = int(round(maps.shape[-1] ** 0.5)) if maps.size else 0
    if maps.size == 0:
        return {"mean": None, "uniform": None}
    if side * side != maps.shape[-1]:
        raise ValueError(f"{maps.shape[-1]} patches are not a square grid")
    ring = np.ones((side, side), dtype=bool)
    ring[1:-1, 1:-1] = False
    m = _minmax(maps)
    total = m.sum(-1)
    share = m[:, ring.ravel()].sum(-1)[total > 0] / total[total > 0]
    return {"mean": float(share.mean()) if share.size else None, "uniform": float(ring.mean())}


def side_mass(map_2d: np.ndarray) -> tuple[float, float]:
    """map_2d [H, W] of a frontal view -> (patient's right, patient's left) mass of the min-max-normalised map
    (patient's right = image left). The middle column of an odd width counts for neither side."""
    m = _minmax(np.asarray(map_2d, dtype=np.float64).reshape(-1)).reshape(np.shape(map_2d))
    W = m.shape[1]
    return float(m[:, : W // 2].sum()), float(m[:, (W + 1) // 2 :].sum())


def points_to_side(map_2d: np.ndarray, side: str) -> bool:
    """True when more normalised mass of map_2d [H, W] lies on the patient's `side` (`side_mass`)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    right, left = side_mass(map_2d)
    return right > left if side == "right" else left > right


def side_pointing(entity_maps: np.ndarray, ref_exist: np.ndarray, ref_position: np.ndarray) -> dict:
    """entity_maps [n, 75, H, W]; ref_exist [n, 75] (1 = present in the reference report), ref_position [n, 75].

    Over every (study, entity) present in the reference at a sided position: the share whose map points to
    that side, with its count `n` (share None when n = 0).
    """
    return _pointing(entity_maps, ref_exist, ref_position, side_of, points_to_side)


def _pointing(entity_maps, ref_exist, ref_position, place_of, points_to) -> dict:
    hits = []
    for i, j in zip(*np.nonzero(np.asarray(ref_exist) == 1)):
        place = place_of(int(ref_position[i, j]))
        if place is not None:
            hits.append(points_to(entity_maps[i, j], place))
    return {"share": float(np.mean(hits)) if hits else None, "n": len(hits)}


def points_to_zone(map_2d: np.ndarray, zone: str) -> bool:
    """map_2d [H, W] of a frontal view; True when, of the three row bands (upper, mid, lower thirds), the stated
    `zone` holds the most normalised mass. Chance is about 1/3."""
    m = _minmax(np.asarray(map_2d, dtype=np.float64).reshape(-1)).reshape(np.shape(map_2d))
    H = m.shape[0]
    bands = {z: m[int(round(lo * H / 3)): int(round(hi * H / 3))].sum()
             for z, (lo, hi) in (("upper", (0, 1)), ("mid", (1, 2)), ("lower", (2, 3)))}
    return max(bands, key=bands.get) == zone


def zone_pointing(entity_maps: np.ndarray, ref_exist: np.ndarray, ref_position: np.ndarray) -> dict:
    """As `side_pointing`, for the vertical zone (upper / mid / lower) a reference position names."""
    return _pointing(entity_maps, ref_exist, ref_position, zone_of, points_to_zone)
