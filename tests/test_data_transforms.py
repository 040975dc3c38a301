"""Pre-processing of docs/method.md §1.5: sizes, crops, normalisation, randomness only where the recipe has it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from revtaf.data import transforms

MEAN = np.array(transforms.IMAGENET_MEAN, dtype=np.float32)[:, None, None]
STD = np.array(transforms.IMAGENET_STD, dtype=np.float32)[:, None, None]


def bordered(size: int = 256, border: int = 16) -> Image.Image:
    """Grey ramp inside a white frame `border` px wide: a centre crop removes the frame, a plain resize keeps it."""
    grey = np.tile(np.linspace(0, 200, size).astype(np.uint8), (size, 1))
    grey[:border], grey[-border:], grey[:, :border], grey[:, -border:] = 255, 255, 255, 255
    return Image.fromarray(grey).convert("RGB")


def unnormalise(x: torch.Tensor) -> np.ndarray:
    return x.numpy() * STD + MEAN


def test_test_transform_is_resize_then_centre_crop():
    image = bordered()
    out = transforms.test_transform()(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # A 256 px image is not resized; the 224 centre crop starts 16 px in, exactly where the frame ends.
    expected = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[:, 16:240, 16:240] / 255
    np.testing.assert_allclose(unnormalise(out), expected, atol=1e-5)
    assert torch.equal(out, transforms.test_transform()(image))


def test_entity_transform_keeps_the_whole_image():
    out = unnormalise(transforms.entity_transform()(bordered(300)))
    assert out.shape == (3, 224, 224)
    assert out[:, :5, :].min() > 0.95 and out[:, :, -5:].min() > 0.95  # the frame survives: no crop


@pytest.mark.parametrize("factory", [transforms.train_transform, transforms.test_transform])
def test_shorter_side_resized_then_cropped(factory):
    tall = Image.fromarray(np.zeros((600, 300), np.uint8)).convert("RGB")
    assert factory()(tall).shape == (3, 224, 224)


def test_entity_transform_squashes_non_square():
    wide = Image.fromarray(np.zeros((100, 400), np.uint8)).convert("RGB")
    assert transforms.entity_transform()(wide).shape == (3, 224, 224)


def test_sizes_are_configurable():
    assert transforms.resize_size(224) == 256 and transforms.resize_size(112) == 128
    image = bordered()
    for factory in (transforms.train_transform, transforms.test_transform, transforms.entity_transform):
        assert factory(112)(image).shape == (3, 112, 112)


def test_train_transform_is_random_but_seedable():
    image = bordered()
    train = transforms.train_transform()
    torch.manual_seed(0)
    a = train(image)
    torch.manual_seed(0)
    b = train(image)
    torch.manual_seed(1)
    c = train(image)
    assert a.shape == (3, 224, 224)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalisation_is_imagenet():
    white = Image.new("RGB", (256, 256), (255, 255, 255))
    out = transforms.test_transform()(white)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), ((1 - MEAN) / STD).ravel(), rtol=1e-5)
