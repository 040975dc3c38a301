"""Image pre-processing of docs/method.md §1.5. Inputs are PIL 'RGB' images (`XrayImage.to_pil()`); outputs
[3, size, size] float tensors normalised with ImageNet statistics (the visual encoders are ImageNet ResNets).

The resize before cropping keeps the official 256 : 224 ratio, so `size=224` reproduces the code exactly.
"""

from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224
ROTATION_DEGREES = 5
MAX_ASPECT = 4.0  # chest radiographs are ~0.7-1.4; anything beyond this is cropped before resizing


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


class CapAspect:
    """Centre-crop the longer side to at most `max_ratio` times the shorter one (PIL in, PIL out).

    Resize(256) scales the *shorter* side, so an uploaded 1 x 100000 strip would become a 256 x 25.6M image
    (20 GB) before the centre crop. Images within the ratio, i.e. every radiograph, pass unchanged.
    """

    def __init__(self, max_ratio: float = MAX_ASPECT):
        self.max_ratio = max_ratio

    def __call__(self, image):
        w, h = image.size
        limit = max(1, int(self.max_ratio * min(w, h)))
        if max(w, h) <= limit:
            return image
        nw, nh = min(w, limit), min(h, limit)
        left, top = (w - nw) // 2, (h - nh) // 2
        return image.crop((left, top, left + nw, top + nh))


def test_transform(size: int = 224) -> T.Compose:
    """CapAspect -> Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize (validation, test and the demo)."""
    return T.Compose([CapAspect(), T.Resize(resize_size(size)), T.CenterCrop(size), *_finish()])


test_transform.__test__ = False  # its name would make pytest collect it wherever it is imported


def entity_transform(size: int = 224) -> T.Compose:
    """MedKLIP's test transform, the entity model's input: Resize([224, 224]) (no crop, aspect not kept)."""
    return T.Compose([T.Resize([size, size]), *_finish()])
