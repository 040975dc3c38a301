"""Pipeline pieces that need no trained model: report lookup, baselines and scoring extras, run metadata,
the MIMIC-layout data root."""

from __future__ import annotations

import json

import numpy as np
import pytest

from revtaf.data import load_annotation
from revtaf_train.evaluate import CONSTANT_REPORT, abnormal_mask, random_reports, score_rows, write_outputs
from revtaf.data import detect_dataset
from revtaf_train.pipeline import data_fingerprint
from revtaf.data.reports import ReportLookup, openi_archive


@pytest.fixture(scope="module")
def iu_test(iu_root):
    return load_annotation(iu_root, "iu")["test"]


def test_report_lookup_prefers_the_data_root_and_falls_back_to_open_i(iu_root, iu_test):
    assert openi_archive() is not None, "torchxrayvision (the offline Open-i report source) is not installed"
    with_data = ReportLookup(iu_root, archive=None)
    offline = ReportLookup(None)
    for study in iu_test[:25]:
        assert with_data(study.id) == study.report
        assert with_data.source(study.id) == "data root"
        # the archive's FINDINGS are the same text, found from the study id alone
        assert offline(study.id) == study.report
        assert offline.source(study.id) == "Open-i archive (torchxrayvision)"
    assert offline("CXR999999_IM-0000") is None and offline.source("not-an-iu-id") is None
    assert ReportLookup(None, archive=None)(iu_test[0].id) is None  # no source at all: no text
    with pytest.raises(FileNotFoundError):
        ReportLookup(iu_root / "images")


def test_random_baseline_is_seeded_and_draws_training_reports():
    train = [f"report {i} ." for i in range(50)]
    a, ia = random_reports(20, train, seed=1)
    b, ib = random_reports(20, train, seed=1)
    c, _ = random_reports(20, train, seed=2)
    assert a == b and ia == ib and a != c
    assert all(t == train[i] for t, i in zip(a, ia)) and len(set(a)) > 1
    with pytest.raises(ValueError):
        random_reports(3, [])


def test_abnormal_mask_ignores_no_finding():
    labels = np.zeros((3, 18), dtype=int)
    labels[0, 13] = 1  # No Finding only
    labels[1, 1] = 1  # Cardiomegaly
    labels[2, 1] = 2  # negative cardiomegaly
    assert abnormal_mask(labels).tolist() == [False, True, False]


def test_constant_baseline_scoring_and_outputs(iu_test, tmp_path):
    normal = [s for s in iu_test if s.mesh == ["normal"]][:20]
    abnormal = [s for s in iu_test if any(m.startswith("Cardiomegaly") for m in s.mesh)][:20]
    studies = normal + abnormal
    rows = [{"id": s.id, "generated": CONSTANT_REPORT, "reference": s.report, "retrieved_id": None} for s in studies]
    metrics = score_rows(rows, "iu")
    assert metrics["n"] == 40 and metrics["distinct_reports"] == 1
    assert 0 < metrics["BLEU_1"] < 1 and "protocol" in metrics
    assert metrics["abnormal_studies"] == sum(1 for r in rows if any(
        v == "positive" and k != "No Finding" for k, v in r["reference_labels"].items()))
    # the constant report states nothing positive, so CE on abnormal studies finds nothing
    assert metrics["CE_abnormal"]["example"]["recall"] == 0.0
    write_outputs(tmp_path, metrics, rows)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 40
    first = json.loads(lines[0])
    assert {"id", "generated", "reference", "retrieved_id", "labels", "reference_labels"} <= set(first)
    assert json.loads((tmp_path / "metrics.json").read_text())["distinct_reports"] == 1


def test_fingerprint_changes_with_the_annotation(tmp_path, iu_root):
    (tmp_path / "annotation.json").write_text('{"train": [], "val": [], "test": []}')
    a = data_fingerprint(tmp_path, {"train": 0})
    (tmp_path / "annotation.json").write_text('{"train": [], "val": [], "test": [] }')
    b = data_fingerprint(tmp_path, {"train": 0})
    assert a["annotation_sha256"] != b["annotation_sha256"]
    assert detect_dataset(iu_root) == "iu"


def test_mimic_layout_fixture_loads(tmp_path):
    """A tiny synthetic data root in PromptMRG's MIMIC-CXR layout (one entry per image, 18 labels)."""
    from PIL import Image

    entries = {"train": [], "val": [], "test": []}
    for split, n in (("train", 4), ("val", 1), ("test", 1)):
        for i in range(n):
            rel = f"p10/p100000{i}/s5000{i}/{split}{i}.jpg"
            (tmp_path / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32), 40 * i, dtype=np.uint8)).save(tmp_path / "images" / rel)
            entries[split].append({
                "id": f"{split}{i}", "study_id": 5000 + i, "subject_id": 100000 + i, "split": split,
                "report": "Heart size is normal. No pleural effusion.", "image_path": [rel],
                "labels": [0] * 13 + [1] + [0] * 4,
            })
    (tmp_path / "annotation.json").write_text(json.dumps(entries))
    assert detect_dataset(tmp_path) == "mimic"
    splits = load_annotation(tmp_path, "mimic")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    assert splits["train"][0].labels[13] == 1 and splits["train"][0].frontal_path.endswith("train0.jpg")
