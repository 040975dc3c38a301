"""Evidence measures: prompt adherence, map overlap and side pointing (each must be able to fail)."""

import numpy as np
import pytest

from revtaf.labels.constants import ANATOMIES_51, CHEXPERT_14, ENTITIES_75
from revtaf.metrics.evidence import map_overlap, points_to_side, prompt_adherence, side_of, side_pointing

CARDIO, EFFUSION = CHEXPERT_14.index("Cardiomegaly"), CHEXPERT_14.index("Pleural Effusion")


def test_adherence_falls_when_a_report_drops_a_positive_prompt():
    prompt = np.full((4, 14), 2)
    prompt[:, CARDIO] = 1
    prompt[:2, EFFUSION] = 1
    followed = prompt.copy()
    full = prompt_adherence(prompt, followed)
    assert full["positive"] == 1.0 and full["n_positive"] == 6 and full["non_positive"] == 1.0
    dropped = followed.copy()
    dropped[0, EFFUSION] = 2  # the report says "no effusion" although the prompt said positive
    worse = prompt_adherence(prompt, dropped)
    assert worse["positive"] == pytest.approx(5 / 6)
    assert worse["per_class"]["Pleural Effusion"] == {"positive": 0.5, "n_positive": 2}
    invented = followed.copy()
    invented[3, CHEXPERT_14.index("Edema")] = 1  # a finding the prompt did not ask for
    assert prompt_adherence(prompt, invented)["non_positive"] < 1.0


def test_constant_maps_overlap_fully_and_disjoint_maps_not_at_all():
    rng = np.random.default_rng(0)
    one = rng.random(49)
    assert map_overlap([np.stack([one, 3 * one + 1, one])])["mean"] == pytest.approx(1.0)
    disjoint = np.eye(49)[:5]  # five maps, each on its own cell
    assert map_overlap([disjoint])["mean"] == pytest.approx(0.0)
    assert map_overlap([disjoint[:1]]) == {"mean": None, "images": 0}  # nothing to pair


def test_side_pointing_uses_the_radiological_convention_and_fails_mirrored():
    hot_image_left = np.zeros((7, 7))
    hot_image_left[3, 1] = 1.0
    assert points_to_side(hot_image_left, "right")  # patient's right is on the image's left
    assert not points_to_side(hot_image_left, "left")
    effusion = ENTITIES_75.index("effusion")
    right = ANATOMIES_51.index("right_pleural")
    assert side_of(right) == "right" and side_of(ANATOMIES_51.index("lower_left_lobe")) == "left"
    assert side_of(ANATOMIES_51.index("heart_size")) is None
    maps = np.zeros((2, 75, 7, 7))
    maps[:, effusion] = hot_image_left
    exist = np.zeros((2, 75), dtype=int)
    exist[:, effusion] = 1
    position = np.full((2, 75), ANATOMIES_51.index("unspecified"))
    position[:, effusion] = right
    assert side_pointing(maps, exist, position) == {"share": 1.0, "n": 2}
    assert side_pointing(maps[..., ::-1], exist, position) == {"share": 0.0, "n": 2}
    position[1, effusion] = ANATOMIES_51.index("pleural_unspec")  # no side stated: not counted
    assert side_pointing(maps, exist, position)["n"] == 1


def test_border_mass_tells_a_border_map_from_a_central_one():
    from revtaf.metrics.evidence import border_mass

    central, border = np.zeros((7, 7)), np.ones((7, 7))
    central[2:5, 2:5] = 1.0
    border[1:-1, 1:-1] = 0.0
    out = border_mass(np.stack([central.ravel(), border.ravel()]))
    assert out["uniform"] == pytest.approx(24 / 49)
    assert out["mean"] == pytest.approx(0.5)  # one map wholly inside (0), one wholly on the ring (1)
    assert border_mass(central.ravel()[None])["mean"] == 0.0
    assert border_mass(np.zeros((0, 49)))["mean"] is None
    with pytest.raises(ValueError, match="square"):
        border_mass(np.ones((1, 48)))


def test_zone_pointing_reads_the_rows_and_regions_cover_the_stated_place():
    from revtaf.labels.regions import region_table, zone_of
    from revtaf.metrics.evidence import zone_pointing

    upper, lower = ANATOMIES_51.index("right_upper_lung"), ANATOMIES_51.index("left_lower_lung")
    assert zone_of(upper) == "upper" and zone_of(lower) == "lower" and zone_of(ANATOMIES_51.index("spine")) is None
    maps = np.zeros((1, 75, 7, 7))
    maps[0, 0, :2] = 1.0  # entity 0: the top rows
    maps[0, 1, 5:] = 1.0  # entity 1: the bottom rows
    exist, position = np.zeros((1, 75)), np.zeros((1, 75), dtype=int)
    exist[0, :2], position[0, :2] = 1, (upper, lower)
    assert zone_pointing(maps, exist, position) == {"share": 1.0, "n": 2}
    position[0, :2] = (lower, upper)
    assert zone_pointing(maps, exist, position)["share"] == 0.0
    table = region_table(7).reshape(len(ANATOMIES_51), 7, 7)
    assert table[upper, :2, :3].all() and not table[upper, :, 4:].any()  # patient's right = image left
    assert table[lower, 5:, 4:].all() and not table[lower, :4].any()
    assert not table[ANATOMIES_51.index("unspecified")].any()


def test_position_loss_falls_as_the_map_moves_into_the_stated_region():
    import torch

    from revtaf.labels.regions import position_cells
    from revtaf.model.fvtaf import position_loss

    position = np.full((1, 75), -1)
    position[0, 3] = ANATOMIES_51.index("left_lower_lung")
    cells = torch.from_numpy(position_cells(position, 7))
    inside, outside = torch.zeros(1, 75, 49), torch.zeros(1, 75, 49)
    inside[0, 3] = cells[0, 3].float()
    outside[0, 3] = (~cells[0, 3]).float()
    assert position_loss(inside, cells) < 1e-4 < 1.0 < position_loss(outside, cells)
    assert position_loss(outside, torch.zeros_like(cells)) == 0  # no located entity: no loss
