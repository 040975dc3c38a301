"""The bundled model's evidence on real IU X-Ray test images: the maps of an image are not one map, the reports
differ between images, and a positive prompt is written (the measures of revtaf.metrics.evidence)."""

from __future__ import annotations

import numpy as np
import pytest

from revtaf.metrics.evidence import map_overlap

N_STUDIES = 8


@pytest.fixture(scope="module")
def predictions(iu_root):
    from revtaf.data import image_file, load_annotation, read_image
    from revtaf.model.revtaf import REVTAF
    from revtaf.paths import BUNDLED_MODEL

    model = REVTAF.from_pretrained(BUNDLED_MODEL)
    studies = load_annotation(iu_root, "iu")["test"][:N_STUDIES]
    return model, model.predict_batch([read_image(image_file(iu_root, s)) for s in studies])


def test_entity_maps_of_an_image_are_their_own(predictions):
    _, preds = predictions
    present = [p.lrp_maps[[e.index for e in p.entities if e.exists]].reshape(-1, 49) for p in preds]
    overlap = map_overlap(present)
    assert overlap["images"] >= N_STUDIES // 2 and overlap["mean"] < 0.9, overlap
    sentences = map_overlap([p.grp_maps.reshape(len(p.grp_maps), -1) for p in preds])
    assert sentences["mean"] < 0.9, sentences
    for p in preds:  # and no two entities share one map up to scale and shift
        maps = p.lrp_maps.reshape(75, -1)
        corr = np.corrcoef(maps[np.std(maps, 1) > 0])
        assert np.mean(corr[np.triu_indices(len(corr), 1)]) < 0.99


def test_different_images_get_different_reports(predictions):
    _, preds = predictions
    assert len({p.report for p in preds}) >= 3
