"""MeSH mapping and the labeler-vs-MeSH agreement on the real IU X-Ray val split."""

import numpy as np
import pytest

from revtaf.labels import MESH_CLASSES, format_table, label_check, mesh_classes


def test_mesh_terms_map_to_classes():
    got = mesh_classes(["Cardiac Shadow/enlarged/mild", "Pulmonary Atelectasis/base/left", "Fractures, Bone/ribs/right"])
    assert {k for k, v in got.items() if v} == {"Cardiomegaly", "Atelectasis", "Fracture"}
    assert not any(mesh_classes(["normal"]).values())
    assert not mesh_classes(["Cardiac Shadow/irregular"])["Cardiomegaly"]
    assert mesh_classes(["Density/lung/base/left"])["Lung Opacity"]
    assert not mesh_classes(["Density/ribs/right/focal"])["Lung Opacity"]  # a density over a rib is no lung opacity
    assert mesh_classes(["Markings/lung/interstitial/prominent"])["Lung Opacity"]
    assert not mesh_classes(["Markings/bronchovascular"])["Lung Opacity"]
    assert mesh_classes(["Pulmonary Congestion/mild"])["Edema"]  # CheXpert's edema includes congestion
    got = mesh_classes(["Hydropneumothorax/left/large"])
    assert got["Pneumothorax"] and got["Pleural Effusion"]
    assert mesh_classes(["Nodule/lung/lingula"])["Lung Lesion"] and mesh_classes(["Mass"])["Lung Lesion"]
    with pytest.raises(TypeError):
        mesh_classes("Cardiomegaly")


class _Constant:
    """A labeler that calls everything positive: recall 1, precision = prevalence. 14 columns, like CheXbert."""

    def __call__(self, reports):
        return np.ones((len(reports), 14), dtype=np.int8)


def test_label_check_scores_a_trivial_labeler(iu_root):
    result = label_check(iu_root, "val", labeler=_Constant())
    assert result["n"] == 296
    for c in result["classes"].values():
        assert c["recall"] == (1.0 if c["support"] else 0.0) and c["predicted"] == 296
        assert c["precision"] == pytest.approx(c["support"] / 296)


def test_rule_labeler_agrees_with_mesh_on_val(iu_root):
    result = label_check(iu_root, "val")
    table = format_table(result)
    assert set(result["classes"]) == set(MESH_CLASSES) and len(MESH_CLASSES) == 10
    assert all(name in table for name in MESH_CLASSES) and "macro" in table
    assert result["macro_f1"] >= 0.88, table


def test_label_check_errors(iu_root, tmp_path):
    with pytest.raises(KeyError):
        label_check(iu_root, "dev")
    with pytest.raises(FileNotFoundError):
        label_check(tmp_path, "val")
