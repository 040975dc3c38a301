"""pydicom's own test corpus (pydicom/data/test_files, installed with pydicom) through `read_image`: every file
either reads as a 2-D image of its stated size or raises the typed error this table names. A regression in
either direction (a file that stops reading, or an error that changes class or becomes untyped) fails."""

from __future__ import annotations

import time

import pydicom
import pytest

from revtaf_bench.hostile_corpus import PYDICOM_CORPUS as CORPUS
from revtaf_bench.hostile_corpus import PYDICOM_REFUSED as REFUSED
from revtaf_bench.hostile_corpus import READ, pydicom_expected as expected
from revtaf.data.imageio import (
    CompressedDicomError,
    CorruptImageError,
    ImageReadError,
    MalformedDicomError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    read_image,
)

FILES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file())


def test_the_corpus_is_the_one_the_table_describes():
    assert len(FILES) >= 170 and set(REFUSED) <= set(FILES)
    assert sum(expected(f) is READ for f in FILES) >= 80


@pytest.mark.parametrize("name", FILES)
def test_pydicom_corpus_file(name):
    want = expected(name)
    started = time.perf_counter()
    if want is READ:
        image = read_image(CORPUS / name)
        header = pydicom.dcmread(CORPUS / name, stop_before_pixels=True, force=True)
        assert image.raw.ndim == 2 and image.raw.shape == (int(header.Rows), int(header.Columns))
    else:
        with pytest.raises(ImageReadError) as caught:
            read_image(CORPUS / name)
        assert type(caught.value) is want, f"{name}: {type(caught.value).__name__}: {caught.value}"
    assert time.perf_counter() - started < 5.0


def test_messages_name_the_missing_decoder_not_damage():
    with pytest.raises(CompressedDicomError, match=r"12-bit JPEG Extended.*revtaf\[jpeg12\].*GPL"):
        read_image(CORPUS / "JPGExtended.dcm")
    with pytest.raises(MalformedDicomError, match="NumberOfFrames is not a valid number") as caught:
        read_image(CORPUS / "badVR.dcm")
    assert "1A" not in str(caught.value)  # the tag is named, its value never quoted
    assert isinstance(caught.value, CorruptImageError) and not isinstance(caught.value, TruncatedImageError)
    assert not isinstance(NotAnImageError("x"), UnsupportedDicomError)


def test_decoders_installed_with_the_package():
    """JPEG Lossless (the usual CR/DX PACS export), JPEG-LS and YBR 4:2:2 read out of the box."""
    for name in ("SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm",
                 "SC_ybr_full_422_uncompressed.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        assert expected(name) is READ
        assert read_image(CORPUS / name).raw.size > 0
