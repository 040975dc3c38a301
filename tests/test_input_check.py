"""The input check: view classifier and out-of-distribution score (revtaf/model/input_check.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revtaf.model.input_check import InputCheck, view_from_dicom
from revtaf.model.prediction import Prediction


def _features(seed: int, n: int, shift: float, dim: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    x[:, 0] += shift
    return x


def test_fit_separates_views_and_passes_99_percent_of_val():
    frontal, lateral = _features(0, 400, 0.0), _features(1, 400, 4.0)
    val = _features(2, 300, 0.0)
    check = InputCheck.fit(frontal, lateral, val)
    assert (check.p_lateral(_features(3, 200, 0.0)) < 0.5).float().mean() > 0.95
    assert (check.p_lateral(_features(4, 200, 4.0)) > 0.5).float().mean() > 0.95
    passing = (check.ood_score(val) <= check.ood_threshold).float().mean()
    assert 0.985 <= float(passing) <= 0.995
    far = _features(5, 50, 0.0) * 6  # another distribution entirely
    assert (check.ood_score(far) > check.ood_threshold).all()


def test_the_files_view_tag_wins_and_round_trip(tmp_path):
    check = InputCheck.fit(_features(0, 200, 0.0), _features(1, 200, 4.0), _features(2, 100, 0.0))
    lateral_looking = _features(6, 2, 4.0)
    from_model, from_file = check.check(lateral_looking, [None, "PA"])
    assert (from_model.view, from_model.view_source) == ("lateral", "model")
    assert (from_file.view, from_file.view_source) == ("frontal", "file")
    assert view_from_dicom("ll") == "lateral" and view_from_dicom("") is None and view_from_dicom("XYZ") is None
    check.save(tmp_path)
    again = InputCheck.load(tmp_path)
    assert torch.equal(again.ood_precision, check.ood_precision) and InputCheck.load(tmp_path / "none") is None


def test_prediction_warns_for_lateral_and_out_of_distribution():
    empty = np.zeros((0, 7, 7), np.float32)
    pred = Prediction("r", [], [], [], [], empty, empty, np.zeros((0, 0)), np.zeros((0, 0)))
    assert pred.warning is None and pred.to_json()["warning"] is None
    pred.view, pred.view_source, pred.in_distribution, pred.ood_score = "lateral", "model", True, 3.0
    assert "lateral view" in pred.warning and "from the pixels" in pred.warning
    pred.in_distribution = False
    assert "does not look like a chest radiograph" in pred.to_json()["warning"]


@pytest.fixture(scope="module")
def bundled():
    from revtaf.model.revtaf import REVTAF
    from revtaf.paths import BUNDLED_MODEL

    model = REVTAF.from_pretrained(BUNDLED_MODEL)
    if model.input_check is None:
        pytest.fail("the bundled model carries no input check (revtaf fit-input-check)")
    return model


def test_bundled_model_tells_views_apart_on_real_iu_images(bundled, iu_root):
    from revtaf.data import load_annotation, read_image

    studies = [s for s in load_annotation(iu_root, "iu")["test"] if "Lateral" in s.views][:12]
    images, truth = [], []
    for study in studies:
        for path, view in zip(study.image_paths, study.views):
            images.append(read_image(iu_root / "images" / path))
            truth.append(view.lower())
    predictions = bundled.predict_batch(images)
    called = [p.view for p in predictions]
    assert all(p.view_source == "model" for p in predictions)
    accuracy = np.mean([c == t for c, t in zip(called, truth)])
    assert accuracy >= 0.9, list(zip(called, truth))
    frontal_pass = np.mean([p.in_distribution for p, t in zip(predictions, truth) if t == "frontal"])
    assert frontal_pass >= 0.9


def test_bundled_model_flags_non_radiographs(bundled):
    from revtaf.data.synthetic import NON_RADIOGRAPHS
    from revtaf_bench.hostile_corpus import corpus
    from revtaf.data import read_image

    items = {h.name: h for h in corpus()}
    predictions = bundled.predict_batch([read_image(items[name].data) for name in NON_RADIOGRAPHS])
    assert [p.in_distribution for p in predictions] == [False] * len(NON_RADIOGRAPHS)
    assert all("does not look like a chest radiograph" in p.warning for p in predictions)
    assert all(p.timings_ms["input_check"] < 20 for p in predictions)
