"""Two views (issue 28): a study's frontal and lateral in, one report out. The data side on real IU studies, the
view assignment rules, a two-view model's visual memory (a study without a lateral reads as its frontal twice,
encoded once), and `revtaf train --views 2` end to end on a handful of studies."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from revtaf.data import XrayDataset, image_file, load_annotation, read_image
from revtaf.model.config import GenerationSettings
from revtaf.model.input_check import assign_views

N = 24
QUICK = GenerationSettings(num_beams=2, max_new_tokens=8, plan=False)


@pytest.fixture(scope="module")
def test_split(iu_root):
    return load_annotation(iu_root, "iu")["test"]


@pytest.fixture(scope="module")
def two_view_model():
    from revtaf.model.config import REVTAFConfig
    from revtaf.model.random_init import random_model

    cpu = REVTAFConfig.cpu
    try:  # the cpu preset with two views
        REVTAFConfig.cpu = classmethod(lambda cls: replace(cpu(), visual=replace(cpu().visual, views=2)))
        return random_model("cpu", bank_size=64)
    finally:
        REVTAFConfig.cpu = cpu


def test_a_study_has_its_frontal_and_lateral(iu_root, test_split):
    """IU lists each image's view: the lateral is the first lateral after the frontal; a study without one has
    none, and XrayDataset(views=2) then holds its frontal twice."""
    study = test_split[0]
    assert study.views[:2] == ["Frontal", "Lateral"]
    assert image_file(iu_root, study, "lateral") == iu_root / "images" / study.image_paths[1]
    single = replace(study, image_paths=study.image_paths[:1], views=study.views[:1])
    assert single.lateral_path is None and image_file(iu_root, single, "lateral") is None
    with pytest.raises(ValueError, match="unknown view"):
        image_file(iu_root, study, "oblique")
    data = XrayDataset([study, single], iu_root, views=2)
    both, alone = data[0], data[1]
    assert both["image"].shape == (2, 3, 224, 224) and both["has_lateral"] and not alone["has_lateral"]
    assert not torch.equal(both["image"][0], both["image"][1])
    torch.testing.assert_close(alone["image"][0], alone["image"][1])
    torch.testing.assert_close(both["image"][0], XrayDataset([study], iu_root)[0]["image"])


def test_views_are_assigned_by_the_file_then_the_classifier_then_the_order():
    assert assign_views([None]) == [("frontal", "order")]
    assert assign_views(["LL", None]) == [("lateral", "file"), ("frontal", "file")]
    assert assign_views([None, "PA"]) == [("lateral", "file"), ("frontal", "file")]
    assert assign_views([None, None], [0.9, 0.2]) == [("lateral", "model"), ("frontal", "model")]
    assert assign_views([None, None]) == [("frontal", "order"), ("lateral", "order")]
    assert assign_views(["AP", None], [0.1, 0.05]) == [("frontal", "file"), ("lateral", "file")]  # the file wins
    with pytest.raises(ValueError, match="both files say they are lateral"):
        assign_views(["LL", "RL"])
    with pytest.raises(ValueError, match="one or two films"):
        assign_views([None, None, None])


def test_a_two_view_memory_holds_both_films_and_a_missing_lateral_reads_as_the_frontal(iu_root, test_split,
                                                                                       two_view_model):
    """Patches [B, 2L, C], the frontal's first; a study without a lateral gives what its frontal given twice
    gives (the training-time view dropout's input), in a batch beside a two-view study, each as when alone."""
    model, study = two_view_model, test_split[0]
    frontal, lateral = read_image(image_file(iu_root, study)), read_image(image_file(iu_root, study, "lateral"))
    batch = model.encode([[frontal, lateral], frontal])
    fc, L = batch.out.fused.fc, 49
    assert fc.shape[1] == 2 * L and batch.out.has_lateral.tolist() == [True, False]
    torch.testing.assert_close(fc[0], model.encode([[frontal, lateral]]).out.fused.fc[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fc[1], model.encode([frontal]).out.fused.fc[0], atol=1e-4, rtol=1e-4)
    x = XrayDataset([study], iu_root, views=2)[0]["image"][None]
    twice = x[:, :1].expand(-1, 2, -1, -1, -1)
    patches, pooled, per_view = model.visual_memory(twice)
    again, _, _ = model.visual_memory(x, torch.tensor([False]))
    torch.testing.assert_close(patches, again, atol=1e-4, rtol=1e-4)
    assert pooled.shape == (1, model.visual.out_dim) and per_view.shape == (1, 2, model.visual.out_dim)
    with pytest.raises(ValueError, match="2-view model reads images"):
        model.visual_memory(x[:, 0])


def test_a_prediction_names_its_films_and_has_a_map_on_each(iu_root, test_split, two_view_model):
    model, study = two_view_model, test_split[0]
    frontal, lateral = read_image(image_file(iu_root, study)), read_image(image_file(iu_root, study, "lateral"))
    pred = model.predict([frontal, lateral], generation=QUICK)  # no view classifier: the order decides
    assert [(f.index, f.view, f.source) for f in pred.films] == [(0, "frontal", "order"), (1, "lateral", "order")]
    assert pred.lrp_maps.shape == pred.lateral_lrp_maps.shape == (75, 7, 7)
    # each film's part of the maps over both films' patches, the frontal's first
    maps = model.encode([[frontal, lateral]]).out.fused.local_maps[0].float().numpy()
    np.testing.assert_allclose(pred.lrp_maps.reshape(75, 49), maps[:, :49], atol=1e-5)
    np.testing.assert_allclose(pred.lateral_lrp_maps.reshape(75, 49), maps[:, 49:], atol=1e-5)
    alone = model.predict(frontal, generation=QUICK)
    assert alone.lateral_lrp_maps.shape[0] == 0 and [f.view for f in alone.films] == ["frontal"]
    assert json.loads(json.dumps(pred.to_json()))["lateral_lrp_maps"] == [75, 7, 7]


def test_the_bundled_model_reads_a_study_in_either_order(iu_root, test_split):
    """The bundled model given a study's lateral and frontal, in that order: its view classifier finds which is
    which, and the report is the one the films given frontal first get."""
    from revtaf.model.revtaf import REVTAF
    from revtaf.paths import BUNDLED_MODEL

    model = REVTAF.from_pretrained(BUNDLED_MODEL)
    study = test_split[0]
    frontal, lateral = read_image(image_file(iu_root, study)), read_image(image_file(iu_root, study, "lateral"))
    pred = model.predict([lateral, frontal])
    assert [(f.view, f.source) for f in pred.films] == [("lateral", "model"), ("frontal", "model")]
    assert pred.films[0].p_lateral > 0.5 > pred.films[1].p_lateral and pred.warning is None
    assert pred.report == model.predict([frontal, lateral]).report
    assert len(pred.lateral_lrp_maps) == (75 if model.cfg.visual.views == 2 else 0)
    # two frontals (two studies' films) are no study: the one read as the lateral is named, the report withheld
    other = read_image(image_file(iu_root, test_split[1]))
    both = model.predict([frontal, other])
    lateral_film = next(f for f in both.films if f.view == "lateral")
    assert both.warning.startswith(f"File {lateral_film.index + 1} is read as the lateral")
    assert "looks frontal" in both.warning


@pytest.fixture(scope="module")
def two_view_run(iu_root, tmp_path_factory):
    from revtaf.paths import BUNDLED_MODEL
    from revtaf_cli.main import main

    out = tmp_path_factory.mktemp("two-views")
    assert main(["train", "--preset", "cpu", "--data", str(iu_root), "--out", str(out / "run"), "--max-studies",
                 str(N), "--epochs", "1", "--steps", "2", "--views", "2", "--entity-from", str(BUNDLED_MODEL),
                 "--export", str(out / "export")]) == 0
    return out


def test_train_views_2_trains_a_two_view_model_on_the_entity_model_it_is_given(two_view_run):
    from revtaf.model.revtaf import REVTAF
    from revtaf.paths import BUNDLED_MODEL

    meta = json.loads((two_view_run / "run" / "run.json").read_text())
    assert meta["model"]["visual"]["views"] == 2 and meta["model"]["visual"]["view_dropout"] > 0
    done = json.loads((two_view_run / "run" / "entity_model" / "DONE.json").read_text())
    assert done["from"] == str(BUNDLED_MODEL)
    model = REVTAF.from_pretrained(two_view_run / "export")
    bundled = REVTAF.from_pretrained(BUNDLED_MODEL)
    assert model.cfg.visual.views == 2 and model.view_embedding.shape == (2, model.visual.out_dim)
    for name, value in bundled.entity_model.state_dict().items():  # taken as it is, not trained
        torch.testing.assert_close(model.entity_model.state_dict()[name].float(), value.float())


def test_evaluate_frontal_only_and_the_auroc_comparison(two_view_run, iu_root, capsys):
    from revtaf_cli.main import main

    args = ["evaluate", "--checkpoint", str(two_view_run / "export"), "--data", str(iu_root), "--split", "test",
            "--max-studies", "8", "--out"]
    assert main([*args, str(two_view_run / "both")]) == 0
    assert main([*args, str(two_view_run / "frontal"), "--frontal-only"]) == 0
    both = json.loads((two_view_run / "both" / "metrics.json").read_text())
    frontal = json.loads((two_view_run / "frontal" / "metrics.json").read_text())
    assert both["generator"]["views"] == 2 and frontal["generator"]["views"] == 1
    assert set(both["classifier_auroc_mesh"]) == {"Pleural Effusion", "Atelectasis", "Lung Opacity", "Cardiomegaly"}
    capsys.readouterr()
    assert main(["compare", str(two_view_run / "both"), str(two_view_run / "frontal"), "--data", str(iu_root),
                 "--resamples", "50"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert set(compared["auroc_mesh"]) == set(both["classifier_auroc_mesh"])
    rows = [json.loads(x) for x in (two_view_run / "both" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows[0]["p_positive"]) == 18


def test_the_demo_reads_an_upload_of_two_films_by_their_dicom_views(iu_root, test_split, two_view_model):
    """An upload of a study's two DICOMs, lateral first: the files' ViewPosition makes the second the frontal,
    each film read by the visual encoder once (its two PNGs too);
    the page's case holds both films, the map is drawn on each and the caption says where its mass lies.
    Three files, or two that both say lateral, are clear errors."""
    from PIL import Image

    from revtaf_app import panels
    from revtaf_app import service as S
    from revtaf_app.errors import AppInputError
    from revtaf_app.render import default_heatmap
    from revtaf_bench.dicom_factory import make_dicom

    study = test_split[0]
    grey = {v: np.asarray(Image.open(image_file(iu_root, study, v)).convert("L"), dtype=np.uint16) * 16
            for v in ("frontal", "lateral")}
    lateral = make_dicom(pixels=grey["lateral"], bits_stored=12, view_position="LL", window=(2048, 4096))
    frontal = make_dicom(pixels=grey["frontal"], bits_stored=12, view_position="PA", window=(2048, 4096))
    service = S.Service(two_view_model, iu_root)
    rows = []  # films through the visual encoder: each film once, its view assigned on the way
    hook = two_view_model.visual.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    try:
        case = service.open_upload([lateral, frontal])
        assert sum(rows) == 2
        by_order = service.open_upload([image_file(iu_root, study, v).read_bytes() for v in ("lateral", "frontal")])
        assert sum(rows) == 4
    finally:
        hook.remove()
    # this small model has no view classifier: the order decides (the bundled model's is tested above)
    assert [(f.view, f.source) for f in by_order.uploaded] == [("frontal", "order"), ("lateral", "order")]
    assert case.image.view_position == "PA" and case.lateral.view_position == "LL"
    assert [(f.view, f.source) for f in case.uploaded] == [("lateral", "file"), ("frontal", "file")]
    assert case.prediction.films == case.uploaded
    line = panels.describe_films(case.uploaded, case.prediction)
    assert line == " · frontal: file 2, lateral: file 1 (from the files' DICOM ViewPosition)"
    hm = case.heatmap(default_heatmap(case.prediction))
    assert hm.lateral is not None and hm.lateral.shape == (*case.lateral_gray().shape, 3)
    assert "of the map's mass on the" in hm.caption
    alone = service.open_upload(frontal)
    assert alone.lateral is None and alone.heatmap(default_heatmap(alone.prediction)).lateral is None
    with pytest.raises(AppInputError, match="both files say they are lateral"):
        service.open_upload([lateral, lateral])
    with pytest.raises(AppInputError, match="got 3 files"):
        service.open_upload([frontal, lateral, frontal])
    assert service.open_study(study.id).lateral is not None
