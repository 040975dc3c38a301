"""Where on a frontal chest film an anatomy position lies: a coarse region of the patch grid per MedKLIP position
(ours). Used to supervise the entity maps weakly with the positions the training reports state
(`fvtaf.position_loss`) and to measure whether a map points to the stated side and zone (metrics/evidence.py).

Frontal films are shown as if facing the patient: the patient's right is the image's left. The grid's rows run
from the apices (top) to the costophrenic angles (bottom) in thirds; its columns split at the midline. The
heart sits low and left of the midline (image right). Positions with no place on a frontal film (unspecified,
pulmonary, interstitium, lung volumes, rib, ...) have no region.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from revtaf.labels.constants import ANATOMIES_51


def side_of(position: int) -> str | None:
    """The patient side an anatomy position names ("left" / "right"), else None."""
    parts = set(ANATOMIES_51[position].split("_"))
    if "left" in parts and "right" not in parts:
        return "left"
    if "right" in parts and "left" not in parts:
        return "right"
    return None


_UPPER = {"upper", "apical", "apices"}
_LOWER = {"lower", "bases", "costophrenic", "diaphragm", "retrocardiac", "cardiophrenic"}
_MID = {"mid", "middle", "hilar"}


def zone_of(position: int) -> str | None:
    """The vertical zone an anatomy position names ("upper" / "mid" / "lower"), else None."""
    parts = set(ANATOMIES_51[position].split("_"))
    for zone, words in (("upper", _UPPER), ("lower", _LOWER), ("mid", _MID)):
        if parts & words:
            return zone
    return None


def _band(grid: int, zone: str) -> slice:
    third = grid / 3
    lo, hi = {"upper": (0, 1), "mid": (1, 2), "lower": (2, 3)}[zone]
    return slice(int(round(lo * third)), int(round(hi * third)))


def _half(grid: int, side: str) -> slice:
    """Image columns of the patient's `side` (the middle column of an odd grid belongs to neither)."""
    return slice(0, grid // 2) if side == "right" else slice((grid + 1) // 2, grid)


_HEART = {"heart_size", "heart_border", "right_atrium", "right_ventricle"}


@lru_cache(maxsize=8)
def region_table(grid: int) -> np.ndarray:
    """bool [51, grid*grid]: the cells of each anatomy position's region; a row of all False = no region."""
    table = np.zeros((len(ANATOMIES_51), grid, grid), dtype=bool)
    for p, name in enumerate(ANATOMIES_51):
        side, zone = side_of(p), zone_of(p)
        cells = table[p]
        if name in _HEART:  # low, from the midline to the patient's left (image right)
            cells[grid // 3: grid - grid // 7, grid // 3: grid - grid // 7] = True
        elif side or zone:
            rows = _band(grid, zone) if zone else slice(0, grid)
            cols = _half(grid, side) if side else slice(0, grid)
            cells[rows, cols] = True
    table.flags.writeable = False
    return table.reshape(len(ANATOMIES_51), grid * grid)


def position_cells(position: np.ndarray, grid: int) -> np.ndarray:
    """position [...] ints (−1 = none) -> bool [..., grid*grid] region cells (all False without a region)."""
    position = np.asarray(position)
    table = region_table(grid)
    out = table[np.clip(position, 0, None)]
    out[position < 0] = False
    return out
