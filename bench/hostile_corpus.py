"""A corpus of bad and odd inputs, generated in code (nothing downloaded), for the reliability harness.

Each `Hostile` is one kind of input a public demo will eventually receive: not an image, a damaged or
truncated one, a decompression bomb, an odd but valid PNG/JPEG, a non-chest picture, or a DICOM with missing,
compressed, multi-frame or nonsensical content. `expect` is the `ImageReadError` subclass `read_image` must
raise, or None when the file must decode and then produce a report.

Every DICOM carries the identifying marker strings of `dicom_factory.MARKERS`, so the same corpus also checks
that no patient data leaks through an error path; `marker_dicoms` is the dedicated privacy probe. Sizes are
small (a few hundred pixels at most): bombs are crafted headers, never allocated images.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.tag import Tag

from revtaf.data.synthetic import colour_photo, encode, non_radiographs
from revtaf_bench.dicom_factory import MARKERS, make_dataset, make_dicom, ramp, to_bytes, with_fake_compression
from revtaf.data.imageio import (
    CompressedDicomError,
    CorruptImageError,
    EmptyFileError,
    ImageReadError,
    ImageTooLargeError,
    MalformedDicomError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
)


@dataclass(frozen=True)
class Hostile:
    """One corpus item. `name` is unique and safe as a file-name stem; `suffix` is the extension it is uploaded
    with (a text file may well arrive as `.png`)."""

    name: str
    suffix: str
    data: bytes
    expect: type[ImageReadError] | None
    note: str
    warn: bool = False  # decodes, but is not a chest radiograph: the report must come with the input warning

    @property
    def filename(self) -> str:
        return self.name + self.suffix


# ---------------------------------------------------------------------------------------------- builders


def chest_like(rows: int = 96, cols: int = 80, seed: int = 0) -> np.ndarray:
    """[rows, cols] uint8: two dark lung fields in a brighter thorax with noise, a stand-in chest radiograph."""
    y, x = np.mgrid[0:rows, 0:cols] / np.array([rows, cols])[:, None, None]
    lungs = np.exp(-(((x - 0.3) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.7) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2))
    noise = np.random.default_rng(seed).normal(0, 8, (rows, cols))
    return np.clip(200 - 140 * lungs + noise, 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_from_chunks(width: int, height: int, idat: bytes, extra: bytes = b"", depth: int = 8, colour: int = 0) -> bytes:
    """A PNG with the given IHDR fields, optional extra chunks before IDAT and raw (already deflated) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 header is patched to claim width x height (a header-only bomb)."""
    data = bytearray(encode(chest_like(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def nested_sequence_dicom(depth: int) -> bytes:
    """A valid image DICOM followed by a sequence nested `depth` levels deep (a parser-recursion probe), written
    by hand with undefined lengths: (7FE1,0010) private SQ, then `depth` x (item, SQ), then the delimiters."""
    sq = struct.pack("<HH", 0x7FE1, 0x1010) + b"SQ\x00\x00" + b"\xff\xff\xff\xff"
    item, item_end = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF), struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    creator = struct.pack("<HH", 0x7FE1, 0x0010) + b"LO" + struct.pack("<H", 6) + b"ZZTEST"
    return make_dicom(pixels=ramp()) + creator + (sq + item) * depth + (item_end + seq_end) * depth


def sr_dicom() -> bytes:
    """A structured report (text only): a valid DICOM that is not an image."""
    ds = make_dataset(pixels=None)
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality = "SR"
    return to_bytes(ds)


def dicom_with(**tags) -> bytes:
    """The default 12-bit ramp DICOM with some elements set to raw values: a str is written as the element's
    bytes unchecked (so 'abc' can sit in a decimal-string tag, as broken writers do), an int is a US value."""
    ds = make_dataset(pixels=ramp())
    for keyword, value in tags.items():
        if isinstance(value, str):
            tag = pydicom.datadict.tag_for_keyword(keyword)
            raw = value.encode("ascii") + b" " * (len(value) % 2)  # DICOM values have even length
            ds[tag] = RawDataElement(Tag(tag), pydicom.datadict.dictionary_VR(tag), len(raw), raw, 0, False, True)
        else:
            setattr(ds, keyword, value)
    return to_bytes(ds)


def headerless(data: bytes) -> bytes:
    """A DICOM file without its 128-byte preamble, 'DICM' and file meta (older devices write these)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def big_dicom_header(rows: int, cols: int) -> bytes:
    """A DICOM claiming rows x cols with only a few bytes of pixel data (a DICOM decompression bomb)."""
    ds = make_dataset(pixels=ramp(4, 4))
    ds.Rows, ds.Columns = rows, cols
    return to_bytes(ds)


# ---------------------------------------------------------------------------------------------- the corpus


def corpus() -> list[Hostile]:
    """Every kind, in a fixed order. Built fresh on each call (cheap: well under a second)."""
    chest = chest_like()
    chest_png, chest_jpg = encode(chest, "PNG"), encode(chest, "JPEG", quality=90)
    big_png = encode(chest_like(256, 256, seed=3), "PNG")
    dicom = make_dicom(pixels=ramp(64, 64))
    photo = colour_photo()
    items = [
        # ---- not an image at all
        Hostile("empty", ".png", b"", EmptyFileError, "a 0-byte upload"),
        Hostile("text-renamed-png", ".png", b"Findings: heart size normal. Lungs clear.\n" * 20, NotAnImageError,
                "a text file renamed .png"),
        Hostile("html-script", ".png", b"<html><script>alert('x')</script><img src=x onerror=alert(1)></html>",
                NotAnImageError, "markup that must not be rendered back into the page"),
        Hostile("pdf", ".pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 8, NotAnImageError, "a PDF"),
        Hostile("zip", ".dcm", b"PK\x03\x04" + bytes(range(256)) * 4, NotAnImageError, "a zip archive named .dcm"),
        Hostile("random-bytes", ".jpg", np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                NotAnImageError, "4 KiB of noise"),
        Hostile("gif", ".gif", encode(chest, "GIF"), NotAnImageError, "a valid GIF (unsupported format)"),
        Hostile("bmp", ".bmp", encode(chest, "BMP"), NotAnImageError, "a valid BMP (unsupported format)"),
        Hostile("tiff", ".tif", encode(chest, "TIFF"), NotAnImageError, "a valid TIFF (unsupported format)"),
        Hostile("utf16-text", ".png", "rapport: cœur normal\n".encode("utf-16") * 30, NotAnImageError,
                "UTF-16 text (not UTF-8, has NUL bytes)"),
        # ---- damaged PNG / JPEG
        Hostile("png-signature-only", ".png", b"\x89PNG\r\n\x1a\n", CorruptImageError, "8 bytes: the PNG magic"),
        Hostile("png-truncated", ".png", big_png[: len(big_png) // 2], TruncatedImageError, "half a PNG"),
        Hostile("jpeg-truncated", ".jpg", chest_jpg[: len(chest_jpg) // 2], TruncatedImageError, "half a JPEG"),
        Hostile("jpeg-header-only", ".jpg", chest_jpg[:200], CorruptImageError, "the JPEG headers, no scan"),
        Hostile("png-bad-crc", ".png", png_from_chunks(8, 8, zlib.compress(b"\x00" + b"\x80" * 8) * 1,
                                                       extra=png_chunk(b"tEXt", b"a\x00b", crc=0)),
                CorruptImageError, "a chunk with a wrong CRC"),
        Hostile("png-garbage-idat", ".png", png_from_chunks(64, 64, b"not deflate data" * 8), CorruptImageError,
                "a valid header with pixel data that is not zlib"),
        Hostile("png-zero-size", ".png", png_from_chunks(0, 0, zlib.compress(b"")), CorruptImageError,
                "IHDR says 0 x 0"),
        Hostile("png-text-bomb", ".png",
                png_from_chunks(8, 8, zlib.compress(b"\x00" * 9 * 8),
                                extra=png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (8 << 20), 9))),
                CorruptImageError, "a zTXt chunk inflating to 8 MiB (PIL allows 1 MiB)"),
        # ---- decompression bombs: declared sizes, no allocation
        Hostile("png-bomb-20000", ".png", png_from_chunks(20000, 20000, zlib.compress(b"\x00")), ImageTooLargeError,
                "PNG header claiming 20000 x 20000 (400 Mpx)"),
        Hostile("png-bomb-8000", ".png", png_from_chunks(8000, 8000, zlib.compress(b"\x00")), ImageTooLargeError,
                "64 Mpx: over our limit, under PIL's own"),
        Hostile("jpeg-bomb-20000", ".jpg", jpeg_with_size(20000, 20000), ImageTooLargeError,
                "JPEG SOF claiming 20000 x 20000"),
        Hostile("png-bomb-1x2e9", ".png", png_from_chunks(1, 2_000_000_000, zlib.compress(b"\x00")),
                ImageTooLargeError, "1 px wide, 2e9 rows"),
        Hostile("dicom-bomb-65535", ".dcm", big_dicom_header(65535, 65535), ImageTooLargeError,
                "DICOM Rows/Columns 65535 with 32 bytes of pixels"),
        # ---- odd but valid PNG / JPEG: must give a report
        Hostile("png-3x2000", ".png", encode(chest_like(2000, 3), "PNG"), None, "a 3-pixel-wide strip"),
        Hostile("png-1x100000", ".png", encode(np.full((100_000, 1), 90, np.uint8), "PNG"), None,
                "1 x 100000: resizing the short side to 256 px would make a 6.5 Gpx image"),
        Hostile("png-16bit", ".png", encode((chest.astype(np.uint16) * 257), "PNG"), None, "16-bit greyscale"),
        Hostile("png-rgba", ".png", encode(chest, "PNG", mode="RGBA"), None, "RGBA"),
        Hostile("png-palette", ".png", encode(chest, "PNG", mode="P"), None, "palette colour"),
        Hostile("png-1bit", ".png", encode(chest, "PNG", mode="1"), None, "1-bit black and white"),
        Hostile("png-interlaced", ".png", _interlaced(chest), None,
                "Adam7 interlaced"),
        Hostile("jpeg-progressive", ".jpg", encode(chest, "JPEG", progressive=True), None, "progressive JPEG"),
        Hostile("jpeg-cmyk", ".jpg", encode(photo, "JPEG", mode="CMYK"), None, "CMYK JPEG"),
        Hostile("png-trailing-zip", ".png", chest_png + b"PK\x03\x04" + b"\x00" * 64, None,
                "a PNG with a zip appended (polyglot)"),
        # ---- DICOM
        Hostile("dicom-ok", ".dcm", dicom, None, "a plain 12-bit MONOCHROME2 radiograph"),
        Hostile("dicom-monochrome1", ".dcm", make_dicom(pixels=ramp(64, 64), photometric="MONOCHROME1"), None,
                "MONOCHROME1 (inverted)"),
        Hostile("dicom-headerless", ".dcm", headerless(dicom), None, "no preamble / file meta"),
        Hostile("dicom-rgb", ".dcm", make_dicom(pixels=colour_photo(64, 64), photometric="RGB", bits_stored=8),
                None, "an RGB DICOM"),
        Hostile("dicom-no-pixels", ".dcm", make_dicom(pixels=None), UnsupportedDicomError, "no PixelData"),
        Hostile("dicom-sr", ".dcm", sr_dicom(), UnsupportedDicomError, "a structured report"),
        Hostile("dicom-truncated", ".dcm", dicom[:-1000], TruncatedImageError, "cut inside the pixel data"),
        Hostile("dicom-jpegls", ".dcm", with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.JPEGLSLossless),
                CorruptImageError, "JPEG-LS syntax (decoded by GDCM), fragments that are not JPEG-LS"),
        Hostile("dicom-htj2k", ".dcm", with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.HTJ2KLossless),
                CompressedDicomError, "HTJ2K, no decoder plugin installed"),
        Hostile("dicom-jpeg-garbage", ".dcm",
                with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.JPEGBaseline8Bit),
                CorruptImageError, "JPEG baseline syntax, fragments that are not JPEG"),
        Hostile("dicom-rle-garbage", ".dcm",
                with_fake_compression(make_dataset(pixels=ramp()), pydicom.uid.RLELossless),
                CorruptImageError, "RLE syntax, fragments that are not RLE"),
        Hostile("dicom-multiframe", ".dcm", make_dicom(pixels=np.stack([ramp()] * 3), frames=3),
                UnsupportedDicomError, "3 frames"),
        Hostile("dicom-palette", ".dcm", dicom_with(PhotometricInterpretation="PALETTE COLOR"),
                UnsupportedDicomError, "palette colour"),
        Hostile("dicom-zero-rows", ".dcm", dicom_with(Rows=0), UnsupportedDicomError, "Rows = 0"),
        Hostile("dicom-window-zero", ".dcm", dicom_with(WindowCenter="2000", WindowWidth="0"), None,
                "WindowWidth 0 (falls back to a percentile window)"),
        Hostile("dicom-window-negative", ".dcm", dicom_with(WindowCenter="2000", WindowWidth="-50"), None,
                "negative WindowWidth"),
        Hostile("dicom-window-huge", ".dcm", dicom_with(WindowCenter="0", WindowWidth="1e300"), None,
                "WindowWidth 1e300"),
        Hostile("dicom-window-inf", ".dcm", dicom_with(WindowCenter="2000", WindowWidth="inf"), None,
                "WindowWidth 'inf'"),
        Hostile("dicom-window-nan", ".dcm", dicom_with(WindowCenter="nan", WindowWidth="400"), None,
                "WindowCenter 'nan'"),
        Hostile("dicom-window-text", ".dcm", dicom_with(WindowCenter="abc", WindowWidth="lung"), None,
                "window tags that are not numbers"),
        Hostile("dicom-voi-lut-broken", ".dcm", _broken_voi_lut(), None, "a VOI LUT whose descriptor lies"),
        Hostile("dicom-rescale-nan", ".dcm", dicom_with(RescaleSlope="nan", RescaleIntercept="0"),
                CorruptImageError, "RescaleSlope 'nan'"),
        Hostile("dicom-rescale-inf", ".dcm", dicom_with(RescaleSlope="1e300", RescaleIntercept="0"),
                CorruptImageError, "RescaleSlope 1e300 (float32 overflow to inf)"),
        Hostile("dicom-rescale-text", ".dcm", dicom_with(RescaleSlope="steep", RescaleIntercept="0"),
                CorruptImageError, "RescaleSlope that is not a number"),
        Hostile("dicom-rescale-zero", ".dcm", dicom_with(RescaleSlope="0", RescaleIntercept="-1024"), None,
                "RescaleSlope 0: a constant image"),
        Hostile("dicom-frames-zero", ".dcm", dicom_with(NumberOfFrames="0"), None,
                "NumberOfFrames 0 (the pixel data holds exactly one frame)"),
        Hostile("dicom-bits-nonsense", ".dcm", dicom_with(BitsStored=40), CorruptImageError,
                "BitsStored > BitsAllocated"),
        Hostile("dicom-nested-sequences", ".dcm", nested_sequence_dicom(5000), CorruptImageError,
                "a sequence nested 5000 deep (beyond the parser's recursion limit)"),
    ]
    names = [h.name for h in items]
    assert len(names) == len(set(names)), "corpus names must be unique"
    # Inputs that decode but are not chest radiographs: each must come with the input check's warning.
    items += [Hostile(name, suffix, data, None, note, warn=True)
              for name, (suffix, data, note) in non_radiographs().items()]
    return items


def _interlaced(array: np.ndarray) -> bytes:
    """An Adam7-interlaced PNG (PIL writes no interlacing; zlib + filter byte 0 per pass row by hand)."""
    h, w = array.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = array[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def _broken_voi_lut() -> bytes:
    ds = make_dataset(pixels=ramp(), voi_lut=(0, np.arange(0, 4096, 16), 16))
    ds.VOILUTSequence[0].LUTDescriptor = [60000, 0, 16]  # claims far more entries than the table has
    return to_bytes(ds)


# ---------------------------------------------------------------------------------------------- privacy probe

# Values that break their tag's rules (a date that is not a date, an over-long name, a bogus character set):
# pydicom warns and logs about such values, quoting them, if anything ever reads these tags.
MALFORMED = {"PatientBirthDate": "ZZLEAKBADDATE", "InstitutionName": "ZZLEAK OVERLONG HOSPITAL " * 4,
             "SpecificCharacterSet": "ZZLEAK_CHARSET", "OtherPatientIDs": "ZZLEAK-OTHER-ID\\x00"}
ALL_MARKERS = MARKERS + ("ZZLEAKBADDATE", "ZZLEAK OVERLONG HOSPITAL", "ZZLEAK_CHARSET", "ZZLEAK-OTHER-ID")
FILE_MARKER = "ZZLEAK-FILENAME-DOE-JOHN"


def marker_dicoms() -> dict[str, bytes]:
    """The privacy probe: upload name -> bytes of two readable DICOMs and three refused ones (error paths), all
    with marker strings in their identifying tags, some in their file names."""
    pixels = chest_like(96, 80).astype(np.uint16) * 16
    return {
        f"{FILE_MARKER}.dcm": make_dicom(pixels=pixels),
        "malformed-tags.dcm": _quietly(dicom_with, **MALFORMED),
        f"{FILE_MARKER}-multiframe.dcm": make_dicom(pixels=np.stack([pixels] * 2), frames=2),
        "compressed.dcm": with_fake_compression(make_dataset(pixels=pixels), pydicom.uid.JPEGLSLossless),
        "no-pixels.dcm": make_dicom(pixels=None),
    }


def _quietly(build, **kwargs) -> bytes:
    """`build(**kwargs)` without pydicom's warnings and log lines about the malformed values it writes on purpose."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build(**kwargs)
    finally:
        logger.setLevel(level)


def good_image(seed: int = 0) -> bytes:
    """A small valid chest-like PNG (the 'good request' between hostile ones when no dataset is at hand)."""
    return encode(chest_like(128, 112, seed=seed), "PNG")


# ---------------------------------------------------------------------------------------------- pydicom's corpus

PYDICOM_CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
READ = "read"
# pydicom's own test corpus (pydicom/data/test_files, installed with pydicom): the files that do not read, and
# why (everything else must read). The TINY_ALPHA series is a DICOMDIR test set
# of headers without pixel data.
PYDICOM_REFUSED = {
    "ExplVR_BigEndNoMeta.dcm": UnsupportedDicomError,
    "ExplVR_LitEndNoMeta.dcm": UnsupportedDicomError,
    "JPEG-lossy.dcm": CompressedDicomError,
    "JPEG2000-embedded-sequence-delimiter.dcm": CorruptImageError,
    "JPGExtended.dcm": CompressedDicomError,
    "MR_truncated.dcm": TruncatedImageError,
    "README.txt": NotAnImageError,
    "SC_rgb_rle_16bit_2frame.dcm": UnsupportedDicomError,
    "SC_rgb_rle_2frame.dcm": UnsupportedDicomError,
    "SC_rgb_rle_32bit_2frame.dcm": UnsupportedDicomError,
    "UN_sequence.dcm": UnsupportedDicomError,
    "badVR.dcm": MalformedDicomError,
    "crayons.icc": NotAnImageError,
    "dicomdirtests/DICOMDIR": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-bigEnd": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-empty.dcm": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-implicit": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-nooffset": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-nopatient": UnsupportedDicomError,
    "dicomdirtests/DICOMDIR-reordered": UnsupportedDicomError,
    "dicomdirtests/README.txt": NotAnImageError,
    "dicomdirtests/TINY_ALPHA/DICOMDIR": UnsupportedDicomError,
    "dicomdirtests/TINY_ALPHA/README": NotAnImageError,
    "empty_charset_LEI.dcm": UnsupportedDicomError,
    "examples_palette.dcm": UnsupportedDicomError,
    "examples_ybr_color.dcm": UnsupportedDicomError,
    "meta_missing_tsyntax.dcm": UnsupportedDicomError,
    "nested_priv_SQ.dcm": UnsupportedDicomError,
    "no_meta.dcm": NotAnImageError,
    "no_meta_group_length.dcm": UnsupportedDicomError,
    "priv_SQ.dcm": UnsupportedDicomError,
    "reportsi.dcm": UnsupportedDicomError,
    "reportsi_with_empty_number_tags.dcm": UnsupportedDicomError,
    "rtdose.dcm": UnsupportedDicomError,
    "rtdose_expb.dcm": UnsupportedDicomError,
    "rtdose_rle.dcm": UnsupportedDicomError,
    "rtplan.dcm": UnsupportedDicomError,
    "rtplan.dump": NotAnImageError,
    "rtplan_truncated.dcm": UnsupportedDicomError,
    "rtstruct.dcm": UnsupportedDicomError,
    "rtstruct.dump": NotAnImageError,
    "test-SR.dcm": UnsupportedDicomError,
    "test1.json": NotAnImageError,
    "test_PN.json": NotAnImageError,
    "waveform_ecg.dcm": UnsupportedDicomError,
    "zipMR.gz": NotAnImageError,
}
SERIES_WITHOUT_PIXELS = "dicomdirtests/TINY_ALPHA/PT000000/"


def pydicom_expected(name: str):
    """The outcome `read_image` must give for a file of pydicom's corpus: READ or an ImageReadError class."""
    if name in PYDICOM_REFUSED:
        return PYDICOM_REFUSED[name]
    return UnsupportedDicomError if name.startswith(SERIES_WITHOUT_PIXELS) else READ


def pydicom_corpus() -> list[Hostile]:
    """Every file of pydicom's test corpus as a corpus item (uploaded as .dcm, as a PACS export would be)."""
    items = []
    for path in sorted(p for p in PYDICOM_CORPUS.rglob("*") if p.is_file()):
        name = str(path.relative_to(PYDICOM_CORPUS))
        want = pydicom_expected(name)
        stem = "pydicom-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        items.append(Hostile(stem, ".dcm", path.read_bytes(), None if want is READ else want, f"pydicom {name}"))
    return items
