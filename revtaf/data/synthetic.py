"""Synthetic images that decode but are not chest radiographs: what the input check (model/input_check.py) must
flag. Fitting the check measures them (train/input_check.py) and the QA corpus sends them through the demo
(bench/hostile_corpus.py); both read them here."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    """PIL-encoded bytes of `array` (optionally converted to `mode` first)."""
    im = Image.fromarray(array)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def colour_photo(rows: int = 120, cols: int = 160, seed: int = 1) -> np.ndarray:
    """[rows, cols, 3] uint8: a saturated synthetic 'photo' (sky gradient, sun, grass, noise): not an X-ray."""
    y, x = np.mgrid[0:rows, 0:cols]
    img = np.zeros((rows, cols, 3), np.float32)
    img[..., 2] = 255 - y * 0.8
    img[..., 1] = 120 + 0.5 * x
    img[y > rows * 0.65] = (40, 160, 50)
    img[(y - 30) ** 2 + (x - 120) ** 2 < 200] = (255, 220, 0)
    img += np.random.default_rng(seed).normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def document_page(rows: int = 200, cols: int = 150) -> np.ndarray:
    """[rows, cols] uint8: a white page with black text-like bars (a scanned form, not a radiograph)."""
    page = np.full((rows, cols), 245, np.uint8)
    for top in range(15, rows - 10, 12):
        length = 40 + (top * 37) % (cols - 60)
        page[top:top + 5, 10:10 + length] = 20
    return page


def non_radiographs() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file suffix, encoded bytes, what it is), for each image the input check must flag."""
    return {
        "colour-photo": (".jpg", encode(colour_photo(), "JPEG"), "a colour photograph, not a radiograph"),
        "document-scan": (".png", encode(document_page(), "PNG"), "a scanned text page"),
        "png-black": (".png", encode(np.zeros((64, 64), np.uint8), "PNG"), "all black"),
        "png-1x1": (".png", encode(np.full((1, 1), 128, np.uint8), "PNG"), "a single pixel"),
        "png-16bit-constant": (".png", encode(np.full((40, 40), 4000, np.uint16), "PNG"), "16-bit, every pixel the same"),
    }


NON_RADIOGRAPHS = ("colour-photo", "document-scan", "png-black", "png-1x1", "png-16bit-constant")
