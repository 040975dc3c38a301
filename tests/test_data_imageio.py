"""read_image: every bad input has its typed error; windowing, inversion and modality LUT are numerically right."""

from __future__ import annotations

import io
import json
import logging
import struct
import warnings
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image, features
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder

from revtaf_bench.dicom_factory import MARKERS, make_dataset, make_dicom, ramp, to_bytes, with_fake_compression
from revtaf.data.imageio import (
    CompressedDicomError,
    CorruptImageError,
    EmptyFileError,
    ImageReadError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    XrayImage,
    read_image,
)


@pytest.fixture(scope="module")
def iu_jpeg(iu_root) -> bytes:
    study = json.loads((iu_root / "annotation.json").read_text())["test"][0]
    return (iu_root / "images" / study["image_path"][0]).read_bytes()


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries (almost) no pixel data: a decompression-bomb stand-in."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------- PNG / JPEG


def test_real_iu_jpeg_reads_as_8bit_grey(iu_jpeg):
    image = read_image(iu_jpeg)
    grey = np.asarray(Image.open(io.BytesIO(iu_jpeg)).convert("L"))
    assert image.source_format == "jpeg" and image.bits == 8
    assert image.raw.dtype == np.float32 and image.raw.shape == grey.shape
    assert image.size == (grey.shape[1], grey.shape[0])
    assert image.window == (127.5, 255.0) and not image.invert and image.view_position is None
    # The default window of an 8-bit image is the identity: display pixels are the file's pixels.
    np.testing.assert_array_equal(image.to_uint8(), grey)
    pil = image.to_pil()
    assert pil.mode == "RGB" and pil.size == image.size
    np.testing.assert_array_equal(np.asarray(pil)[..., 1], grey)


def test_read_from_path_and_bytes_agree(iu_root, iu_jpeg, tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(iu_jpeg)
    np.testing.assert_array_equal(read_image(path).raw, read_image(iu_jpeg).raw)
    np.testing.assert_array_equal(read_image(str(path)).raw, read_image(iu_jpeg).raw)


def test_16bit_png_keeps_full_precision():
    values = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 31 + 7).astype(np.uint16)
    image = read_image(png_bytes(values))
    assert image.bits == 16 and image.source_format == "png"
    np.testing.assert_array_equal(image.raw, values.astype(np.float32))
    lo, hi = np.percentile(values.astype(np.float32), [0.5, 99.5])
    assert image.window == pytest.approx(((lo + hi) / 2, hi - lo))
    # Neighbouring 16-bit values must stay distinct under a narrow window (they would merge at 8 bits).
    narrow = image.render(center=float(values[0, 1]), width=64.0)
    assert narrow[0, 0] < narrow[0, 1] < narrow[0, 2]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "L"])
def test_colour_pngs_become_grey(mode):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    image = read_image(png_bytes(grey, mode))
    assert image.raw.ndim == 2 and image.bits == 8
    np.testing.assert_array_equal(image.raw, grey.astype(np.float32))


def test_empty_input():
    with pytest.raises(EmptyFileError, match="empty"):
        read_image(b"")


def test_empty_file_on_disk(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyFileError):
        read_image(tmp_path / "empty.png")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"Findings: the heart is normal.\nImpression: no acute disease.\n", "text"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 4, "not a PNG, JPEG or DICOM"),
        (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not a PNG, JPEG or DICOM"),
        (b"\x08\x00" + b"\xff" * 300, "not a PNG, JPEG or DICOM"),  # sniffed as headerless DICOM, is not
    ],
)
def test_not_an_image(data, words):
    with pytest.raises(NotAnImageError, match=words):
        read_image(data)


def test_truncated_jpeg(iu_jpeg):
    with pytest.raises(TruncatedImageError, match="incomplete"):
        read_image(iu_jpeg[: len(iu_jpeg) // 2])


def test_truncated_png():
    data = png_bytes(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(TruncatedImageError):
        read_image(data[: len(data) // 2])


def test_damaged_png_header():
    data = png_bytes(np.zeros((8, 8), np.uint8))
    with pytest.raises(CorruptImageError, match="PNG"):
        read_image(data[:30])


def test_bomb_checked_from_header_before_decoding():
    # 8000 x 8000 = 64 Mpx: over our 50 Mpx default, under PIL's own limit. The file has no pixel data, so
    # reaching ImageTooLargeError (not TruncatedImageError) proves the check ran before decoding.
    with pytest.raises(ImageTooLargeError, match="8000 x 8000"):
        read_image(png_header_only(8000, 8000))


def test_bomb_over_pil_limit():
    with pytest.raises(ImageTooLargeError):  # 100 Mpx: PIL's DecompressionBombWarning zone
        read_image(png_header_only(10_000, 10_000))
    with pytest.raises(ImageTooLargeError):  # 900 Mpx: PIL's DecompressionBombError zone
        read_image(png_header_only(30_000, 30_000), max_pixels=10**12)


def test_jpeg_bomb_from_patched_header(iu_jpeg):
    sof = iu_jpeg.index(b"\xff\xc0")
    patched = iu_jpeg[: sof + 5] + struct.pack(">HH", 8000, 8000) + iu_jpeg[sof + 9 :]
    with pytest.raises(ImageTooLargeError, match="8000 x 8000"):
        read_image(patched)


def test_max_pixels_applies_to_small_images(iu_jpeg):
    with pytest.raises(ImageTooLargeError):
        read_image(iu_jpeg, max_pixels=1000)


def test_render_rejects_bad_window(iu_jpeg):
    with pytest.raises(ValueError, match="width"):
        read_image(iu_jpeg).render(center=100, width=0)


# ------------------------------------------------------------------------------------------- DICOM


def test_dicom_window_center_width():
    image = read_image(make_dicom(window=(1000, 2000)))
    assert image.source_format == "dicom" and image.bits == 12 and image.view_position == "PA"
    assert image.window == (1000.0, 2000.0) and not image.invert
    raw = ramp().astype(np.float32)
    np.testing.assert_array_equal(image.raw, raw)
    np.testing.assert_allclose(image.render(), np.clip(raw / 2000.0, 0, 1), atol=1e-6)
    # Explicit values override the file's window.
    np.testing.assert_allclose(image.render(center=3000, width=1000), np.clip((raw - 2500) / 1000, 0, 1), atol=1e-6)


def test_dicom_multivalued_window_uses_first():
    image = read_image(make_dicom(window=([600, 2000], [1200, 4000])))
    assert image.window == (600.0, 1200.0)


def test_dicom_without_voi_uses_percentile_window():
    image = read_image(make_dicom())
    lo, hi = np.percentile(ramp().astype(np.float32), [0.5, 99.5])
    assert image.window == pytest.approx(((lo + hi) / 2, hi - lo))


def test_dicom_modality_lut_rescale():
    image = read_image(make_dicom(rescale=(2.0, -1024.0), window=(0, 400)))
    np.testing.assert_allclose(image.raw, ramp().astype(np.float32) * 2 - 1024)
    np.testing.assert_allclose(image.render(), np.clip((image.raw + 200) / 400, 0, 1), atol=1e-6)


def test_dicom_voi_lut_sequence_is_honoured():
    first, n = 500, 1000
    table = (np.linspace(0, 1, n) ** 2 * 4095).round()  # non-linear, so a window could not fake it
    image = read_image(make_dicom(voi_lut=(first, table, 12), window=(9999, 10)))
    raw = ramp().astype(np.int64)
    expected = table[np.clip(raw - first, 0, n - 1)] / 4095
    np.testing.assert_allclose(image.render(), expected, atol=1e-6)
    assert image.window == (first + n / 2, float(n))  # the slider default covers the LUT's input range
    # Moving a slider switches to a linear window.
    np.testing.assert_allclose(image.render(center=1000, width=1000), np.clip((raw - 500) / 1000, 0, 1), atol=1e-6)


def test_monochrome1_is_inverted():
    mono2 = read_image(make_dicom(window=(2048, 4096)))
    mono1 = read_image(make_dicom(photometric="MONOCHROME1", window=(2048, 4096)))
    assert mono1.invert and not mono2.invert
    np.testing.assert_array_equal(mono1.raw, mono2.raw)
    np.testing.assert_allclose(mono1.render(), 1 - mono2.render(), atol=1e-6)
    np.testing.assert_allclose(mono1.render(invert=False), mono2.render(), atol=1e-6)
    assert mono1.to_uint8()[0, 0] == 255 and mono2.to_uint8()[0, 0] == 0


def test_dicom_16bit():
    pixels = ramp(high=65535)
    image = read_image(make_dicom(pixels=pixels, bits_stored=16))
    assert image.bits == 16
    np.testing.assert_array_equal(image.raw, pixels.astype(np.float32))


def test_dicom_rgb_and_ybr_become_grey():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    image = read_image(make_dicom(pixels=rgb, photometric="RGB", bits_stored=8))
    assert image.raw.shape == (16, 24) and image.bits == 8
    np.testing.assert_allclose(image.raw, luma, atol=1e-3)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    image = read_image(make_dicom(pixels=ybr, photometric="YBR_FULL", bits_stored=8))
    np.testing.assert_allclose(image.raw, luma, atol=2.0)  # colour conversion rounds twice


def test_dicom_view_position_absent():
    assert read_image(make_dicom(view_position=None)).view_position is None
    assert read_image(make_dicom(view_position="LL")).view_position == "LL"


def test_dicom_single_frame_declared():
    pixels = ramp()
    ds = make_dataset(pixels=pixels)
    ds.NumberOfFrames = 1
    np.testing.assert_array_equal(read_image(to_bytes(ds)).raw, pixels)


def test_dicom_without_file_meta():
    ds = make_dataset(pixels=ramp())
    del ds.file_meta
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    np.testing.assert_array_equal(read_image(buf.getvalue()).raw, ramp())


def test_dicom_no_pixel_data():
    with pytest.raises(UnsupportedDicomError, match="no image pixels"):
        read_image(make_dicom(pixels=None))


def test_dicom_multiframe_refused():
    frames = np.stack([ramp()] * 3)
    with pytest.raises(UnsupportedDicomError, match="3 frames"):
        read_image(make_dicom(pixels=frames, frames=3))


def test_dicom_bomb_checked_before_pixels():
    ds = make_dataset(pixels=ramp())
    ds.Rows, ds.Columns = 60_000, 60_000  # pixel data stays tiny: only the header claims the size
    with pytest.raises(ImageTooLargeError, match="60000 x 60000"):
        read_image(to_bytes(ds))


@pytest.mark.parametrize("keep", [0.97, 0.4])
def test_dicom_truncated(keep):
    data = make_dicom(pixels=ramp(64, 64))
    with pytest.raises(TruncatedImageError, match="incomplete"):
        read_image(data[: int(len(data) * keep)])


def test_dicom_rle_decodes():
    # A real RLE Lossless file from pydicom's encoder; pydicom's own RLE decoder is always available.
    ds = make_dataset(pixels=ramp())
    ds.compress(pydicom.uid.RLELossless)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(read_image(to_bytes(ds)).raw, ramp())


@pytest.mark.skipif(not features.check("jpg_2000"), reason="Pillow built without OpenJPEG")
def test_dicom_jpeg2000_decodes_when_a_plugin_is_installed():
    pixels = ramp()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG2000", irreversible=False, no_jp2=True)
    ds = make_dataset(pixels=pixels)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    np.testing.assert_array_equal(read_image(to_bytes(ds)).raw, pixels)


def test_dicom_compressed_without_plugin():
    assert not get_decoder(pydicom.uid.HTJ2KLossless).is_available  # GDCM (installed) decodes JPEG-LS, not HTJ2K
    data = with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.HTJ2KLossless)
    with pytest.raises(CompressedDicomError, match="High-Throughput JPEG 2000 compression and no decoder plugin.*pip install"):
        read_image(data)


def test_dicom_compression_nobody_decodes():
    data = with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.MPEG2MPML)
    with pytest.raises(CompressedDicomError, match="cannot be decoded"):
        read_image(data)


def test_dicom_corrupt_compressed_data():
    data = with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.RLELossless)
    with pytest.raises(CorruptImageError, match="damaged"):
        read_image(data)


def test_dicom_palette_colour_refused():
    ds = make_dataset(pixels=ramp(high=255).astype(np.uint8), bits_stored=8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(UnsupportedDicomError, match="colour model"):
        read_image(to_bytes(ds))


def _bad_dicoms() -> list[bytes]:
    good = make_dicom(pixels=ramp(64, 64))
    big = make_dataset(pixels=ramp())
    big.Rows = big.Columns = 60_000
    return [
        make_dicom(pixels=None),
        make_dicom(pixels=np.stack([ramp()] * 2), frames=2),
        to_bytes(big),
        good[: len(good) // 2],
        with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.JPEGLSLossless),
        with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.RLELossless),
    ]


def test_no_identifying_tag_leaks(caplog):
    texts = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        for data in _bad_dicoms():
            with pytest.raises(ImageReadError) as info:
                read_image(data)
            error = info.value
            while error is not None:  # the whole chain, as a traceback in a log would show it
                texts.append(str(error))
                error = error.__cause__ or error.__context__
        image = read_image(make_dicom(window=(1, 2)))
        texts.append(repr(image))
        assert isinstance(image, XrayImage)
    texts += [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert len(texts) > 6
    leaks = [(m, t) for t in texts for m in MARKERS if m.lower() in t.lower()]
    assert not leaks, leaks
