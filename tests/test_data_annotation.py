"""load_annotation on the real IU X-Ray file, a MIMIC-layout fixture, a PromptMRG flat list, and broken files."""

from __future__ import annotations

import json

import pytest

from revtaf_bench.dicom_factory import MIMIC_ENTRIES, make_mimic_root
from revtaf.data.annotation import AnnotationError, Study, image_file, load_annotation
from revtaf.data.imageio import read_image


@pytest.fixture(scope="module")
def iu(iu_root):
    return load_annotation(iu_root, "iu")


def test_iu_r2gen_split_sizes(iu):
    assert {k: len(v) for k, v in iu.items()} == {"train": 2069, "val": 296, "test": 590}
    ids = [s.id for v in iu.values() for s in v]
    assert len(set(ids)) == len(ids)


def test_iu_study_fields(iu, iu_root):
    raw = json.loads((iu_root / "annotation.json").read_text())["test"][0]
    study = iu["test"][0]
    assert study.id == raw["id"] == study.study_id and study.split == "test" and study.dataset == "iu"
    assert study.report == raw["report"] and study.impression == raw["impression"]
    assert study.indication == raw["indication"] and study.mesh == raw["mesh"]
    assert study.image_paths == raw["image_path"] and study.views == raw["view"]
    assert study.labels is None
    assert image_file(iu_root, study) == iu_root / "images" / raw["image_path"][0]


def test_iu_frontal_first(iu, iu_root):
    studies = [s for v in iu.values() for s in v]
    with_frontal = [s for s in studies if "Frontal" in s.views]
    assert len(studies) - len(with_frontal) == 10  # SOURCES.md: 10 studies have laterals only
    assert all(s.views[0] == "Frontal" for s in with_frontal)
    for study in iu["test"][:3]:
        assert image_file(iu_root, study).is_file()
        assert read_image(image_file(iu_root, study)).size == (256, 256)


def test_mimic_layout(tmp_path):
    root = make_mimic_root(tmp_path)
    splits = load_annotation(root, "mimic")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    first, second = splits["train"]
    assert first.dataset == "mimic" and first.views == [] and first.mesh == []
    assert first.study_id == second.study_id == str(MIMIC_ENTRIES[0][1]) != first.id
    assert first.labels == [0] * 18 and second.labels == [1] * 18
    assert splits["test"][0].labels is None
    assert "synthetic report 0" in first.report
    for k, study in enumerate(s for split in ("train", "val", "test") for s in splits[split]):
        assert read_image(image_file(root, study)).size == (50 + 8 * k, 40 + 8 * k)


def test_promptmrg_flat_list_is_test(tmp_path):
    entries = [{"id": "CXR1_1_IM-0001", "report": "No effusion.", "image_path": ["CXR1_1_IM-0001/0.png"]}]
    (tmp_path / "annotation.json").write_text(json.dumps(entries))
    splits = load_annotation(tmp_path, "iu")
    assert splits["train"] == [] and splits["val"] == []
    assert splits["test"] == [
        Study(id="CXR1_1_IM-0001", split="test", report="No effusion.", image_paths=["CXR1_1_IM-0001/0.png"])
    ]


def write(tmp_path, data) -> None:
    (tmp_path / "annotation.json").write_text(data if isinstance(data, str) else json.dumps(data))


ENTRY = {"id": "a1", "report": "x", "image_path": ["a1/0.png"]}


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"train": [', r"not valid JSON: .* line 1"),
        ("42", "expected an object"),
        ({"training": []}, "unexpected split"),
        ({"train": {"a": 1}}, "must be a list"),
        ({"train": ["a1"]}, r"train\[0\] must be an object"),
        ({"val": [ENTRY, {"id": "b2", "report": "x"}]}, r"val\[1\] \(id 'b2'\) is missing 'image_path'"),
        ({"test": [{"image_path": ["x.png"]}]}, r"test\[0\] is missing 'id', 'report'"),
        ({"test": [{**ENTRY, "image_path": []}]}, "non-empty list"),
        ({"test": [{**ENTRY, "report": None}]}, "'report' must be a string"),
        ({"test": [{**ENTRY, "view": ["Frontal", "Lateral"]}]}, "one view per image"),
        ({"test": [{**ENTRY, "labels": [0] * 14}]}, "18 integers"),
        ({"test": [{**ENTRY, "labels": [0] * 17 + [4]}]}, "18 integers"),
        ({"test": [{**ENTRY, "labels": [0.0] * 18}]}, "18 integers"),
    ],
)
def test_malformed_annotation(tmp_path, data, message):
    write(tmp_path, data)
    with pytest.raises(AnnotationError, match=message):
        load_annotation(tmp_path, "mimic")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation.json"):
        load_annotation(tmp_path)


def test_unknown_dataset(tmp_path):
    write(tmp_path, {"test": [ENTRY]})
    with pytest.raises(ValueError, match="unknown dataset"):
        load_annotation(tmp_path, "chexpert")
