"""XrayDataset: frontal image of each study through read_image -> to_pil -> transform, on IU and MIMIC layouts."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from revtaf_bench.dicom_factory import make_mimic_root
from revtaf.data import (
    CorruptImageError,
    XrayDataset,
    image_file,
    load_annotation,
    read_image,
    transforms,
)


@pytest.fixture(scope="module")
def iu_test(iu_root):
    return load_annotation(iu_root, "iu")["test"][:4]


def test_iu_items_match_the_demo_decoding_path(iu_root, iu_test):
    dataset = XrayDataset(iu_test, iu_root, transforms.test_transform())
    assert len(dataset) == 4
    item = dataset[2]
    assert set(item) == {"image", "index", "id"}
    assert item["index"] == 2 and item["id"] == iu_test[2].id
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    expected = transforms.test_transform()(read_image(image_file(iu_root, iu_test[2])).to_pil())
    assert torch.equal(item["image"], expected)
    assert not torch.equal(item["image"], dataset[1]["image"])


def test_default_transform_is_the_evaluation_one(iu_root, iu_test):
    explicit = XrayDataset(iu_test, iu_root, transforms.test_transform())
    assert torch.equal(XrayDataset(iu_test, iu_root)[0]["image"], explicit[0]["image"])


def test_batches_collate(iu_root, iu_test):
    batch = next(iter(DataLoader(XrayDataset(iu_test, iu_root), batch_size=3)))
    assert batch["image"].shape == (3, 3, 224, 224)
    assert batch["index"].tolist() == [0, 1, 2] and batch["id"] == [s.id for s in iu_test[:3]]


def test_mimic_layout(tmp_path):
    root = make_mimic_root(tmp_path)
    train = load_annotation(root, "mimic")["train"]
    dataset = XrayDataset(train, root, transforms.entity_transform())
    for k in range(2):  # fake image k is uniformly 30 k grey
        image = dataset[k]["image"]
        expected = (30 * k / 255 - torch.tensor(transforms.IMAGENET_MEAN)) / torch.tensor(transforms.IMAGENET_STD)
        torch.testing.assert_close(image[:, 100, 100], expected)


def test_missing_image_names_the_study(tmp_path):
    root = make_mimic_root(tmp_path)
    study = load_annotation(root, "mimic")["val"][0]
    image_file(root, study).unlink()
    with pytest.raises(FileNotFoundError, match=study.id):
        XrayDataset([study], root)[0]


def test_bad_image_keeps_its_error_type(tmp_path):
    root = make_mimic_root(tmp_path)
    study = load_annotation(root, "mimic")["test"][0]
    path = image_file(root, study)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CorruptImageError, match=study.id):
        XrayDataset([study], root)[0]
