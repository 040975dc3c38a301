"""The demo's logic (app/service.py) on real IU X-Ray images with a REAL, randomly initialised cpu-preset REVTAF
saved to a temporary directory and loaded the way the app loads a checkpoint.

`make_model_dir` is imported by the other app tests.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from revtaf_app import errors, panels, render, review, uploads
from revtaf_app.case import Case
from revtaf.model.disease_prompts import NEVER_POSITIVE
from revtaf.paths import resolve_model
from revtaf_app import service as S
from revtaf_bench.dicom_factory import MARKERS, make_dataset, make_dicom, to_bytes, with_fake_compression
from revtaf.data import (
    CompressedDicomError,
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    clean_report,
    image_file,
    load_annotation,
    split_sentences,
)
from revtaf.labels import LABEL_NAMES_18, RuleLabeler
from revtaf.labels.constants import ENTITIES_75

BANK_SIZE = 40
HTJ2K = "1.2.840.10008.1.2.4.201"  # a transfer syntax no installed plugin decodes (GDCM reads JPEG-LS)
MAX_SENTENCES = 8


def make_model_dir(directory: Path, iu_root: Path, seed: int = 0) -> Path:
    """A random-init cpu-preset REVTAF saved with save_pretrained. Its bank holds real IU training study ids
    (random embeddings), so the app can show retrieved reports and GRP sentences; generation is shortened so
    the tests stay fast (an untrained decoder always runs to max_new_tokens)."""
    from revtaf.model.config import GenerationSettings, REVTAFConfig
    from revtaf.model.revtaf import REVTAF
    from revtaf.model.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    train = load_annotation(iu_root, "iu")["train"]
    # plan=False: a random decoder writes to no topic, so a plan would drop every sentence (an empty report)
    cfg = replace(REVTAFConfig.cpu(), generation=GenerationSettings(num_beams=2, max_new_tokens=24, min_length=12,
                                                                    plan=False))
    tokenizer = build_tokenizer([clean_report(s.report, "iu") for s in train], vocab_size=1000, topic_tokens=True)
    d = cfg.text.dim
    model = REVTAF(cfg, tokenizer, triplet_table=torch.randn(75, 51, 2, d))
    bank = train[:BANK_SIZE]
    sentences = [len(split_sentences(clean_report(s.report, "iu"))) for s in bank]
    counts = torch.tensor([min(max(n, 1), MAX_SENTENCES) for n in sentences])
    mask = torch.arange(MAX_SENTENCES)[None] < counts[:, None]
    model.set_bank(
        ids=[s.id for s in bank],
        scores=torch.rand(BANK_SIZE, 75),
        sentence_emb=torch.randn(BANK_SIZE, MAX_SENTENCES, d) * mask[..., None],
        sentence_mask=mask,
        report_emb=torch.randn(BANK_SIZE, d),
        labels=torch.randint(0, 4, (BANK_SIZE, 18)),
    )
    model.eval().save_pretrained(directory)
    return directory


def shared_model_dir(tmp_path_factory, iu_root: Path) -> Path:
    """`make_model_dir` once per test session, reused by every app test module."""
    path = tmp_path_factory.getbasetemp() / "app-model"
    if not (path / "config.json").is_file():
        make_model_dir(path, iu_root)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory, iu_root) -> S.Service:
    return S.Service(S.load_model(resolve_model(shared_model_dir(tmp_path_factory, iu_root))), iu_root)


@pytest.fixture(scope="module")
def test_ids(iu_root) -> list[str]:
    return [s.id for s in load_annotation(iu_root, "iu")["test"]]


@pytest.fixture(scope="module")
def study_case(service, test_ids) -> Case:
    return service.open_study(test_ids[0])


def iu_bytes(iu_root: Path, study_id: str) -> bytes:
    study = next(s for s in load_annotation(iu_root, "iu")["test"] if s.id == study_id)
    return image_file(iu_root, study).read_bytes()


# ------------------------------------------------------------------------------------------- panels


def test_a_report_with_the_de_identification_mark_says_what_it_is():
    assert "de-identification" in panels.placeholder_note("there is a xxxx opacity in the right lower lobe .")
    assert panels.placeholder_note("there is a patchy opacity in the right lower lobe .") == ""


def test_dataset_case_fills_every_panel(service, study_case, iu_root, test_ids):
    case, pred = study_case, study_case.prediction
    study = next(s for s in load_annotation(iu_root, "iu")["test"] if s.id == test_ids[0])
    assert case.study_id == study.id and case.ground_truth == study.report
    assert isinstance(pred.report, str) and pred.report.strip()

    diseases = panels.disease_rows(pred)
    assert [r[0] for r in diseases] == list(LABEL_NAMES_18)
    assert all(r[1] in ("blank", "positive", "negative", "uncertain") for r in diseases)
    assert all(abs(sum(r[2:6]) - 1) < 0.01 for r in diseases)
    # when each is called positive: this model has no decision thresholds, so the argmax; with them, each its own
    assert service.model.cfg.positive_thresholds is None and {r[6] for r in diseases} == {"argmax"}
    thresholded = replace(pred, diseases=[replace(d, threshold=t) for d, t in
                                          zip(pred.diseases, [0.5641] + [NEVER_POSITIVE] * 17)])
    assert [r[6] for r in panels.disease_rows(thresholded)[:2]] == ["≥ 0.56", "never"]

    entities = panels.entity_rows(pred)
    assert len(entities) == 75 and sorted(r[6] for r in entities) == sorted(ENTITIES_75)
    # readable names and locations for the radiologist; the internal id stays in its own column
    assert all("_" not in r[2] and "_" not in r[5] for r in entities)
    assert any(r[6] == "tail_abnorm_obs" and r[2] == "other abnormality (rare)" for r in entities)
    groups = [panels.GROUPS.index(r[1]) for r in entities]
    assert groups == sorted(groups)  # grouped: findings, then devices, then normal descriptors
    only = panels.entity_rows(pred, "device")
    assert only and {r[1] for r in only} == {"device"}

    # retrieval: the nearest bank study, its report from the data root, never the query itself
    text, facts = panels.retrieved_summary(pred)
    top = pred.neighbours[0]
    assert top.study_id != study.id and text == service.report_lookup(top.study_id)
    assert top.study_id in facts and f"{top.distance:.4f}" in facts
    runners = panels.neighbour_rows(pred)[1:]
    assert runners and all(r[2] >= top.distance for r in runners)

    # heatmaps: the default entity map and its FCC partner, at the displayed image's size
    choices = [key for _, key in render.heatmap_choices(pred)]
    assert sum(k.startswith("lrp:") for k in choices) == 75 and any(k.startswith("grp:") for k in choices)
    hm = case.heatmap(render.default_heatmap(pred))
    assert hm.image.shape == hm.partner.shape == (*case.gray().shape, 3) and hm.image.dtype == np.uint8
    assert "S =" in hm.caption and "O =" in hm.caption

    gallery = service.overlay_gallery(case)
    assert len(gallery) >= 5 and all(img.shape == (*case.gray().shape, 3) for img, _ in gallery)

    # comparison with the dataset's findings
    comparison = service.compare(case.ground_truth, pred)
    assert comparison.findings and comparison.metrics
    assert [r[0] for r in comparison.metrics][:2] == ["BLEU-4", "ROUGE-L"]
    assert all(r[3] for r in comparison.metrics)  # every number names its protocol


def test_fcc_partner_is_the_most_similar(service, study_case):
    pred = study_case.prediction
    sim, ovl = pred.fcc_similarity, pred.fcc_overlap
    assert sim.shape == ovl.shape == (75, len(pred.grp_maps))
    m = 10
    j = int(np.argmax(sim[m]))
    hm = study_case.heatmap(f"lrp:{m}")
    assert f"retrieved sentence {j + 1}**" in hm.caption
    assert f"S = {sim[m, j]:.3f}" in hm.caption and f"O = {ovl[m, j]:.3f}" in hm.caption
    i = int(np.argmax(sim[:, 0]))
    assert f"entity {pred.entities[i].label}" in study_case.heatmap("grp:0").caption
    with pytest.raises(errors.AppInputError):
        study_case.heatmap("xyz:1")
    # a retrieved study whose text no source has: its sentence maps are still shown, labelled as such
    bare = replace(pred, grp_sentences=[])
    labels = [label for label, key in render.heatmap_choices(bare) if key.startswith("grp:")]
    assert len(labels) == len(pred.grp_maps) and "text not available" in labels[0]
    assert "text not available" in render.heatmap(bare, study_case.gray(), "lrp:10").caption


def test_ablation_reruns_once_and_drops_the_branch(service, iu_root, test_ids):
    calls = []
    model_encode = service.model.encode
    service.model.encode = lambda images, ablate, *a: calls.append(ablate) or model_encode(images, ablate, *a)
    try:
        case = service.open_study(test_ids[1])
        service.run(case, "grp")
        service.run(case, "full")  # cached: no new model call
        service.run(case, "grp+lrp")
        service.what_if(case, {"Cardiomegaly": "positive"})  # from the case's encoding: the image is not read again
    finally:
        del service.model.encode
    assert calls == [frozenset(), frozenset({"grp"}), frozenset({"grp", "lrp"})]
    assert case.ablation == "grp+lrp"
    no_grp = case.predictions["grp"]
    assert len(no_grp.grp_maps) == 0 and len(no_grp.lrp_maps) == 75
    assert "switched off" in case.heatmap("grp:0").caption
    assert render.heatmap_choices(case.prediction) == []
    # this model carries no plug-in: no plug-in switch shown, and asking for one is refused by name
    assert service.plugin_switches == [] and service.model.ablations == {"grp", "lrp"}
    assert service.plugin_note == "Plug-ins: none."
    with pytest.raises(errors.AppInputError, match="can switch off"):
        service.run(case, "tisr")


def test_the_summary_names_positive_prompts_the_report_leaves_out(service):
    from types import SimpleNamespace

    diseases = [SimpleNamespace(name=n, state="positive" if n in ("Cardiomegaly", "Lung Opacity") else "blank")
                for n in LABEL_NAMES_18]
    heart_only = SimpleNamespace(diseases=diseases, report="the heart is enlarged . the lungs are clear .")
    summary = panels.disease_summary(heart_only, service.written_states(heart_only))
    assert summary.endswith("not stated in the report:** Lung Opacity")  # cardiomegaly is written: not listed
    both = SimpleNamespace(diseases=diseases, report="the heart is enlarged . there is a right lower lobe opacity .")
    assert "not stated" not in panels.disease_summary(both, service.written_states(both))
    assert "not stated" not in panels.disease_summary(heart_only)  # without the labeler's reading: the states only


def test_plugin_switches_follow_the_model():
    from types import SimpleNamespace

    carries = SimpleNamespace(model=SimpleNamespace(ablations=frozenset({"grp", "lrp", "tisr", "tir"})))
    assert S.Service.plugin_switches.fget(carries) == [("TISR pseudo words", "tisr"), ("TIR attention mask", "tir")]
    assert S.ablation_tag(False, False) == "full" and S.ablation_tag(True, True) == "grp+lrp"
    assert S.ablation_tag(False, True, ["tir", "tisr"]) == "lrp+tisr+tir"  # one tag per set, whatever the order
    assert S.ablation_label("full") == "full model" and S.ablation_label("tisr") == "TISR pseudo words off"
    assert S.ablation_label("grp+lrp") == "GRP and LRP off" and S.ablation_label("grp+lrp+tir") == "GRP, LRP and TIR off"
    with pytest.raises(errors.AppInputError, match="unknown switch"):
        S.ablation_tag(False, False, ["cra"])  # CRA and LSU act in training only: nothing to switch at inference


# ------------------------------------------------------------------------------------------- uploads


def test_upload_of_16bit_png_and_dicom(service, iu_root, test_ids):
    grey = np.asarray(Image.open(io.BytesIO(iu_bytes(iu_root, test_ids[0]))).convert("L"), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey * 257).save(buf, format="PNG")
    png16 = service.open_upload(buf.getvalue())
    assert png16.image.bits == 16 and png16.key.startswith("upload-")
    assert png16.prediction.report.strip()

    dicom = make_dicom(pixels=grey * 16, bits_stored=12, view_position="AP", window=(2048, 4096))
    case = service.open_upload(dicom)
    assert case.image.source_format == "dicom" and case.image.view_position == "AP"
    info = panels.describe_image(case.image, case.original_size)
    assert "DICOM" in info and "AP" in info and "12-bit" in info
    # no identifying tag value anywhere the page shows
    pred = case.prediction
    shown = json.dumps([info, pred.to_json(), panels.entity_rows(pred), panels.retrieved_summary(pred), panels.neighbour_rows(pred)])
    assert not any(marker in shown for marker in MARKERS)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return buf.getvalue()


def bad_inputs(iu_root: Path, test_id: str) -> dict[str, tuple[bytes, type]]:
    """name -> (file bytes, the typed error it must raise). Shared with the client test."""
    jpeg = iu_bytes(iu_root, test_id)
    no_pixels = make_dataset(pixels=None)
    return {
        "empty.png": (b"", EmptyFileError),
        "text_renamed.png": (b"this is a text file, not an X-ray\n" * 20, NotAnImageError),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], TruncatedImageError),
        "huge.png": (_png((9000, 9000)), ImageTooLargeError),
        "no_pixels.dcm": (to_bytes(no_pixels), UnsupportedDicomError),
        "htj2k.dcm": (with_fake_compression(make_dataset(pixels=np.zeros((16, 16), np.uint16)), HTJ2K),
                       CompressedDicomError),
    }


def test_bad_uploads_raise_typed_readable_errors(service, iu_root, test_ids):
    for name, (data, error) in bad_inputs(iu_root, test_ids[0]).items():
        with pytest.raises(error) as info:
            service.open_upload(data)
        message = str(info.value)
        assert message and "Traceback" not in message and name not in message, name
    # and the service keeps working
    assert service.open_upload(iu_bytes(iu_root, test_ids[0])).prediction.report.strip()


def test_consume_upload_deletes_only_inside_the_upload_root(tmp_path):
    root = tmp_path / "uploads"
    (root / "abc123").mkdir(parents=True)
    inside = root / "abc123" / "x.png"
    inside.write_bytes(b"pixels")
    outside = tmp_path / "mine.png"
    outside.write_bytes(b"keep")
    assert uploads.consume_upload(inside, root) == b"pixels"
    # the file goes at once; its folder stays (Gradio may be renaming the next same-bytes upload into it)
    assert not inside.exists() and (root / "abc123").is_dir()
    (root / "fresh").mkdir()
    (root / "busy").mkdir()
    (root / "busy" / "y.png").write_bytes(b"pixels")
    old = time.time() - 3600
    for name in ("abc123", "busy"):
        os.utime(root / name, (old, old))
    uploads.prune_upload_folders(root, max_age_s=600)
    assert sorted(p.name for p in root.iterdir()) == ["busy", "fresh"]  # only the old empty folder went
    assert uploads.consume_upload(outside, root) == b"keep" and outside.exists()
    with pytest.raises(errors.AppInputError):
        uploads.consume_upload(None, root)
    with pytest.raises(errors.AppInputError):
        uploads.consume_upload(tmp_path / "gone.png", root)
    # an API payload names its own path: a file the app did not receive is never read
    with pytest.raises(errors.AppInputError, match="uploaded to this app"):
        uploads.consume_upload(outside, root, uploads_only=True)
    with pytest.raises(errors.AppInputError, match="uploaded to this app"):
        uploads.consume_upload(root / ".." / "mine.png", root, uploads_only=True)


# ------------------------------------------------------------------------------------------- pure functions


def test_page_images_are_lossless_pngs_and_old_ones_go(tmp_path):
    """render.png_file: the page's film and maps are written as PNG (zlib level 1), pixel for pixel, into the
    folder the app serves; files older than PNG_MAX_AGE_S there are deleted on the next write."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    stale = tmp_path / "stale.png"
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - render.PNG_MAX_AGE_S - 1,) * 2)
    path = Path(render.png_file(pixels, tmp_path))
    assert path.parent == tmp_path and path.suffix == ".png" and not stale.exists()
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)
    gray = pixels[..., 0]
    np.testing.assert_array_equal(np.asarray(Image.open(render.png_file(gray, tmp_path))), gray)
    assert render.png_file(gray).startswith(str(render.image_dir()))


def test_overlay_lands_on_the_model_crop():
    gray = np.full((200, 300), 100, np.uint8)  # landscape: the model sees a centred square crop
    box = render.model_box(200, 300)
    side = 200 * 224 / 256
    assert box == (round((300 - side) / 2), round((200 - side) / 2), round((300 + side) / 2), round((200 + side) / 2))
    heat = np.zeros((7, 7), np.float32)
    heat[0, 6] = 1.0  # top-right patch of the crop
    out = render.overlay(gray, heat, opacity=1.0, cmap="jet", box=box)
    assert out.shape == (200, 300, 3) and out.dtype == np.uint8
    x0, y0, x1, y1 = box
    assert (out[5:y0 - 1, 5:x0 - 1] == 100).all()  # outside the crop: the radiograph untouched
    diff = np.abs(out.astype(int) - 100).sum(-1)
    peak = np.unravel_index(np.argmax(diff[y0 + 2:y1 - 2, x0 + 2:x1 - 2]), (y1 - y0 - 4, x1 - x0 - 4))
    assert peak[0] < (y1 - y0) / 4 and peak[1] > 3 * (x1 - x0) / 4
    assert (render.overlay(gray, heat, opacity=0.0) == 100).all()
    with pytest.raises(errors.AppInputError):
        render.overlay(gray, heat, cmap="rainbow-unicorn")
    with pytest.raises(errors.AppInputError):
        render.overlay(gray, heat, opacity=1.5)


def test_overlay_colours_are_matplotlibs():
    """The overlay's colour table gives exactly the colours matplotlib's colormap call gives every pixel."""
    from matplotlib import colormaps

    gray = np.zeros((64, 64), np.uint8)
    heat = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    for cmap in render.COLORMAPS:
        out = render.overlay(gray, heat, opacity=1.0, cmap=cmap)
        span = heat.max() - heat.min()
        full = cv2.resize((heat - heat.min()) / span, (64, 64), interpolation=cv2.INTER_LINEAR)
        expected = np.rint(colormaps[cmap](full)[..., :3].astype(np.float32) * full[..., None] * 255)
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1, cmap


def test_window_presets_and_working_copy(service, iu_root, test_ids):
    from revtaf.data import read_image

    image = read_image(iu_bytes(iu_root, test_ids[0]))
    presets = uploads.window_presets(image)
    assert presets["file"] == image.window
    assert presets["lung"][0] < presets["mediastinum"][0] < presets["bone"][0]
    big = replace(image, raw=np.kron(image.raw, np.ones((6, 6), np.float32)))  # 1536 px
    small = uploads.working_copy(big)
    assert max(small.raw.shape) == uploads.WORKING_MAX_SIDE and small.window == big.window
    assert uploads.working_copy(image) is image
    lung = uploads.Display(*presets["lung"]).render(image)
    assert lung.dtype == np.uint8 and lung.mean() > uploads.Display().render(image).mean()  # dark lungs brightened


def test_word_and_finding_diff(service, study_case):
    gt = "There is mild cardiomegaly. No pleural effusion."
    pred = replace(study_case.prediction, report="heart size is normal . there is a small right pleural effusion .")
    comparison = service.compare(gt, pred)
    assert "<del" in comparison.diff_html and "<ins" in comparison.diff_html
    verdicts = {row[0]: row[3] for row in comparison.findings}
    assert verdicts["Cardiomegaly"] == "missed finding"
    assert verdicts["Pleural Effusion"] == "false finding"
    labels = RuleLabeler()([clean_report(gt, "iu")])[0]
    assert labels[LABEL_NAMES_18.index("Cardiomegaly")] == 1
    ce = {row[0]: row[1] for row in comparison.metrics}
    assert ce["CE recall"] == "0.0000"  # the only positive of the ground truth is missed
    with pytest.raises(errors.AppInputError):
        service.compare("   ", pred)
    html_diff = panels.word_diff_html("a <b> c", "a c")
    assert "&lt;b&gt;" in html_diff and "<b>" not in html_diff


def test_case_browser_filters_by_ground_truth_finding(service):
    all_test = service.case_ids("test")
    cardio = service.case_ids("test", "Cardiomegaly")
    assert 0 < len(cardio) < len(all_test) and set(cardio) <= set(all_test)
    labels = RuleLabeler()([clean_report(service.report_lookup(i), "iu") for i in cardio])
    assert (labels[:, LABEL_NAMES_18.index("Cardiomegaly")] == 1).all()
    assert service.next_case("test", "Cardiomegaly", cardio[-1]) == cardio[0]
    assert service.next_case("test", "Cardiomegaly", None) == cardio[0]
    with pytest.raises(errors.AppInputError):
        service.case_ids("nonsense")
    with pytest.raises(errors.AppInputError):
        service.open_study("CXR-does-not-exist")


# ------------------------------------------------------------------------------------------- review


def test_review_store_and_exports(service, study_case, tmp_path):
    with pytest.raises(errors.AppInputError):
        review.save_review({}, None, ["style"], "x")
    with pytest.raises(errors.AppInputError):
        review.save_review({}, study_case, [], "  ")
    with pytest.raises(errors.AppInputError):
        review.save_review({}, study_case, ["typo"], "")
    store = review.save_review({}, study_case, ["missed finding", "wrong location"], "misses the effusion, says “left”")
    again = review.save_review(store, study_case, ["style"], "replaced")  # one review per case and ablation
    assert len(store) == 1 and len(again) == 1 and store != again  # the input store is not mutated
    csv_path, json_path = review.export_reviews(store, tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert rows[0]["note"] == "misses the effusion, says “left”"
    assert rows[0]["categories"] == "missed finding; wrong location" and rows[0]["study_id"] == study_case.study_id
    records = json.loads(json_path.read_text(encoding="utf-8"))
    assert records[0]["categories"] == ["missed finding", "wrong location"]
    assert records[0]["generated_report"] == study_case.prediction.report
    with pytest.raises(errors.AppInputError):
        review.export_reviews({}, tmp_path)
    # a sentence of the report reviewed beside the case: its own entry, its own categories, a readable refusal
    assert study_case.prediction.sentences
    both = review.save_review(store, study_case, ["wrong location"], "says left", sentence=0)
    assert len(both) == 2 and {r["sentence"] for r in both.values()} == {"", 1}
    assert next(r for r in both.values() if r["sentence"] == 1)["sentence_text"] == study_case.prediction.sentences[0].text
    with pytest.raises(errors.AppInputError, match="do not apply to a sentence"):
        review.save_review(store, study_case, ["missed finding"], "", sentence=0)
    with pytest.raises(errors.AppInputError, match="no sentence 99"):
        review.save_review(store, study_case, ["other"], "", sentence=98)
    merged, counts = review.merge_reviews({}, review.read_reviews(review.export_reviews(both, tmp_path)[1]))
    assert counts["added"] == 2 and merged.keys() == both.keys()


def test_what_if_sentences_and_their_difference(service, study_case):
    """The page's what-if: the case rewritten to the user's findings, its sentences against the model's; the
    report as highlighted sentences and a sentence's evidence."""
    before = study_case.prediction
    after = service.what_if(study_case, {"Cardiomegaly": "positive"})
    assert next(d for d in after.diseases if d.name == "Cardiomegaly").source == "user"
    diff = panels.sentence_diff(before, after)
    assert "".join(t for t, mark in diff if mark != "removed").strip() == after.report
    assert "".join(t for t, mark in diff if mark != "added").strip() == before.report
    segments = panels.sentence_segments(before)
    assert "".join(t for t, _ in segments).strip() == before.report and len(segments) == len(before.sentences)
    assert before.sentences[0].text in panels.sentence_evidence(before, 0)
    with pytest.raises(errors.AppInputError, match="no sentence"):
        panels.sentence_evidence(before, len(before.sentences))
    for states in ({}, {"Pneumonitis": "positive"}, {"Cardiomegaly": "maybe"}):
        with pytest.raises(errors.AppInputError):
            service.what_if(study_case, states)
    # the disease table's state column as a what-if: a typed state that differs from the model's is an override
    rows = panels.disease_rows(before)
    assert panels.states_from_rows(before, rows) == {}
    row = next(r for r in rows if r[0] == "Pleural Effusion")
    row[1] = "Positive " if row[1] != "positive" else "blank"
    expected = {"Pleural Effusion": row[1].strip().lower()}
    assert panels.states_from_rows(before, rows) == expected
    assert panels.disease_rows(before, expected)[LABEL_NAMES_18.index("Pleural Effusion")][1] == expected["Pleural Effusion"]
    row[1] = "likely"
    with pytest.raises(errors.AppInputError, match="Pleural Effusion: 'likely' is not a state"):
        panels.states_from_rows(before, rows)
    # where a map's mass lies, in the patient's terms: the image's left half is the patient's right
    heat = np.zeros((7, 7))
    heat[2:5, 0:2] = 1.0
    assert panels.map_side(heat) == "map: 100% on the patient's right"
    assert panels.map_side(heat[:, ::-1]) == "map: 100% on the patient's left"
    assert panels.map_side(np.zeros((7, 7))) == "map: empty"


# ------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_resolution(tmp_path, monkeypatch):
    import huggingface_hub

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    assert resolve_model(tmp_path, default=bundled) == tmp_path
    with pytest.raises(FileNotFoundError):
        resolve_model(tmp_path / "missing", default=bundled)

    asked = {}

    def offline(repo_id, revision=None, **kwargs):  # never touch the network in tests
        asked.update(repo_id=repo_id, revision=revision)
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_model(hf_repo="someone/revtaf", hf_revision="abc123", default=bundled) == bundled
    assert asked == {"repo_id": "someone/revtaf", "revision": "abc123"}
    assert any("using the bundled model" in str(w.message) for w in caught)
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        resolve_model(default=tmp_path / "nothing")


def test_reviews_carry_the_model_and_merge_newer_wins(service, study_case, tmp_path):
    identity = service.identity
    assert set(identity) == {"model_sha256", "model_config"} and len(identity["model_sha256"]) == 64
    store = review.save_review({}, study_case, ["missed finding"], "first look", identity)
    record = next(iter(store.values()))
    assert record["model_sha256"] == identity["model_sha256"] and record["protocol"] == review.REVIEW_PROTOCOL
    _, json_path = review.export_reviews(store, tmp_path)
    exported = review.read_reviews(json_path)
    # a later review of the same case and model replaces the older one; an older one is left out
    newer = [{**exported[0], "note": "second look", "saved_at": "2999-01-01T00:00:00+00:00"}]
    merged, counts = review.merge_reviews(store, newer)
    assert counts == {"added": 0, "replaced": 1, "kept": 0} and next(iter(merged.values()))["note"] == "second look"
    again, counts = review.merge_reviews(merged, exported)
    assert counts == {"added": 0, "replaced": 0, "kept": 1} and again == merged
    # another model's review of the same case is its own entry
    other, counts = review.merge_reviews(store, [{**exported[0], "model_sha256": "0" * 64}])
    assert counts["added"] == 1 and len(other) == 2


@pytest.mark.parametrize("content, message", [
    ("model_sha256,case\n", "not JSON"),
    ('{"reviews": []}', "list of reviews"),
    ('[{"case": "x"}]', "lacks"),
    ('[{"case": "x", "ablation": "full", "categories": ["typo"], "note": "", "saved_at": "2026-01-01"}]', "categories"),
    ('[{"case": "x", "ablation": "full", "categories": [], "note": "", "saved_at": "yesterday"}]', "time"),
])
def test_importing_a_wrong_file_says_why_and_imports_nothing(tmp_path, content, message):
    path = tmp_path / "review.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(errors.AppInputError, match=message):
        review.read_reviews(path)


class NormalReportWriter:
    """A stand-in model that writes the constant normal report for every image: the order's logic, not a model's
    quality, is under test (a random-init model writes random findings)."""

    weights_sha256, preset = "0" * 64, "test"
    cfg = SimpleNamespace(visual=SimpleNamespace(views=1))  # reads the frontal, as the one-view models

    def __init__(self):
        self.batches = 0

    def predict_batch(self, images, exclude_ids=None):
        self.batches += 1
        return [SimpleNamespace(report="the heart is normal in size . the lungs are clear .") for _ in images]


def test_errors_first_order_puts_missed_findings_before_agreeing_cases(tmp_path, iu_root):
    """A small split: cases whose ground truth has a finding the report misses come before the agreeing ones."""
    test = load_annotation(iu_root, "iu")["test"]
    labels = RuleLabeler()([clean_report(s.report, "iu") for s in test])
    cardio = LABEL_NAMES_18.index("Cardiomegaly")
    sick = [s for s, row in zip(test, labels) if row[cardio] == 1][:2]
    normal = [s for s, row in zip(test, labels) if row[LABEL_NAMES_18.index("No Finding")] == 1][:3]
    root = tmp_path / "iu-slice"
    root.mkdir()
    raw = {e["id"]: e for e in json.loads((iu_root / "annotation.json").read_text())["test"]}
    (root / "annotation.json").write_text(json.dumps({"train": [], "val": [],
                                                      "test": [raw[s.id] for s in normal + sick]}))
    (root / "images").symlink_to(iu_root / "images")
    model = NormalReportWriter()
    service = S.Service(model, root)
    seen = []
    errors = service.error_order("test", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5, 5) and [e["id"] for e in errors] == [s.id for s in normal + sick]
    missed = {e["id"] for e in errors if "Cardiomegaly" in e["missed"]}
    agreeing = [e["id"] for e in errors if not e["missed"] and not e["false"]]
    assert missed == {s.id for s in sick} and agreeing
    ordered = service.case_ids("test", order="errors")
    assert max(ordered.index(i) for i in missed) < min(ordered.index(i) for i in agreeing)
    assert set(service.case_ids("test", errors_only=True)) == {e["id"] for e in errors if e["missed"] or e["false"]}
    assert service.case_ids("test") == [s.id for s in normal + sick]  # dataset order untouched
    n = model.batches
    service.case_ids("test", "Cardiomegaly", order="errors")
    assert model.batches == n  # cached for this model and split
    case = Case(key=f"iu-{sick[0].id}", image=None, original_size=(1, 1), study_id=sick[0].id,
                  predictions={"full": SimpleNamespace(report="the heart is normal .")})
    store = review.save_review({}, case, ["missed finding"], "", service.identity)
    assert service.review_progress(ordered, store).startswith("**1 of 5**")
    assert service.review_progress(ordered, {**store, "x": {**next(iter(store.values())), "model_sha256": "1" * 64,
                                                            "study_id": sick[1].id}}).startswith("**1 of 5**")
