"""Report -> MedKLIP triplets: entity keywords with inflections, exist from the shared negation logic, positions."""

import numpy as np
import pytest

from revtaf.labels import (
    ANATOMIES_51,
    ENTITIES_75,
    ENTITY_GROUPS,
    UNSPECIFIED_POSITION,
    anatomy_sentence,
    extract_triplets,
    extract_triplets_batch,
    triplet_sentence,
)


def triplets(report: str) -> dict[str, tuple[int, str]]:
    exist, position = extract_triplets(report)
    return {ENTITIES_75[e]: (int(exist[e]), ANATOMIES_51[position[e]]) for e in np.flatnonzero(exist != -1)}


@pytest.mark.parametrize(
    "report, expected",
    [
        ("There is a small left pleural effusion. No pneumothorax.",
         {"effusion": (1, "left_pleural"), "pneumothorax": (0, "unspecified")}),
        ("No XXXX of pleural effusion.", {"effusion": (0, "pleural_unspec")}),
        ("XXXX opacity in the right lower lobe, possibly atelectasis.",
         {"opacity": (1, "lower_right_lobe"), "atelectasis": (1, "lower_right_lobe")}),  # uncertain -> present
        ("The heart is mildly enlarged.", {"enlarge": (1, "heart_size")}),
        ("Bilateral pleural effusions.", {"effusion": (1, "pleural_unspec")}),
        ("The lungs are hyperexpanded.", {"hyperinflate": (1, "pulmonary")}),
        ("Left upper lobe calcified granuloma.",
         {"calcification": (1, "upper_left_lobe"), "tail_abnorm_obs": (1, "upper_left_lobe")}),
        ("Scarring at the right lung apex.", {"scar": (1, "right_apical_lung")}),
        ("Pleural thickening.", {"thicken": (1, "pleural_unspec")}),
        ("Right IJ catheter tip in the SVC.", {"catheter": (1, "svc"), "tip": (1, "svc")}),
        ("Degenerative changes of the thoracic spine.", {"degenerative": (1, "spine")}),
        ("Blunting of the left costophrenic angle.", {"blunt": (1, "left_costophrenic")}),
        ("Lingular opacity.", {"opacity": (1, "upper_left_lobe")}),
        ("Opacity in the lung bases.", {"opacity": (1, "lung_bases")}),
        ("Lungs are clear. Normal heart size.",
         {"clear": (1, "pulmonary"), "normal": (1, "heart_size")}),
        ("The lungs are free of focal airspace disease.",
         {"free": (1, "pulmonary"), "air": (0, "pulmonary"), "disease": (0, "pulmonary")}),
        ("Congestive heart failure.", {"chf": (1, "unspecified")}),
    ],
)
def test_report_triplets(report, expected):
    assert triplets(report) == expected


def test_present_wins_over_absent_across_sentences_and_positions_follow_it():
    got = triplets("No right pleural effusion. Small left pleural effusion.")
    assert got["effusion"] == (1, "left_pleural")


def test_batch_shapes_and_dtypes():
    exist, position = extract_triplets_batch(["Mild cardiomegaly.", "", "No effusion."])
    assert exist.shape == position.shape == (3, 75)
    assert exist.dtype == np.int8 and position.dtype == np.int64
    assert (exist[1] == -1).all() and (position[1] == UNSPECIFIED_POSITION).all()
    assert set(np.unique(exist)) <= {-1, 0, 1} and position.min() >= 0 and position.max() < 51
    with pytest.raises(TypeError):
        extract_triplets_batch("not a list")


def test_entity_groups():
    assert len(ENTITY_GROUPS) == 75 and set(ENTITY_GROUPS) == {"finding", "device", "normal descriptor"}
    group = dict(zip(ENTITIES_75, ENTITY_GROUPS))
    assert [group[e] for e in ("tube", "picc", "pacemaker", "stent", "hardware")] == ["device"] * 5
    assert [group[e] for e in ("normal", "clear", "sharply", "free", "intact")] == ["normal descriptor"] * 5
    assert [group[e] for e in ("effusion", "opacity", "cardiomegaly", "tail_abnorm_obs")] == ["finding"] * 4


def test_triplet_and_anatomy_sentences():
    e, p = ENTITIES_75.index("opacity"), ANATOMIES_51.index("lower_right_lobe")
    assert triplet_sentence(e, p, True) == "opacity lower right lobe present"
    assert triplet_sentence(e, UNSPECIFIED_POSITION, False) == "opacity unspecified absent"
    assert triplet_sentence(e, p, True, template="{exist}: {entity} at {position}") == "present: opacity at lower right lobe"
    assert anatomy_sentence(p) == "It is located at lower_right_lobe"
    with pytest.raises(IndexError):
        triplet_sentence(75, 0, True)
    with pytest.raises(IndexError):
        anatomy_sentence(51)
    with pytest.raises(TypeError):
        triplet_sentence("opacity", 0, True)
