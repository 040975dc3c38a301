"""Image pre-processing of method.md §1.5. Inputs are PIL 'RGB' images (`XrayImage.to_pil()`); outputs
[3, size, size] float tensors normalised with ImageNet statistics (the visual encoders are ImageNet ResNets).

The resize before cropping keeps the official 256 : 224 ratio, so `size=224` reproduces the code exactly.
"""

from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224
ROTATION_DEGREES = 5


def resize_size(size: int) -> int:
    """Shorter side before cropping: 256 for a 224 crop."""
    return round(size * RESIZE_RATIO)


def _finish() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(size: int = 224) -> T.Compose:
    """Resize(256) -> RandomCrop(224) -> RandomRotation(±5°) -> ToTensor -> Normalize."""
    return T.Compose(
        [T.Resize(resize_size(size)), T.RandomCrop(size), T.RandomRotation(ROTATION_DEGREES), *_finish()]
    )


def test_transform(size: int = 224) -> T.Compose:
    """Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize (validation, test and the demo)."""
    return T.Compose([T.Resize(resize_size(size)), T.CenterCrop(size), *_finish()])


test_transform.__test__ = False  # its name would make pytest collect it wherever it is imported


def entity_transform(size: int = 224) -> T.Compose:
    """MedKLIP's test transform, the entity model's input: Resize([224, 224]) (no crop, aspect not kept)."""
    return T.Compose([T.Resize([size, size]), *_finish()])
