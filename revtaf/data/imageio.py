"""Reading chest X-rays from PNG (8/16-bit), JPEG and DICOM into one `XrayImage` (README, "Demo").

DICOM path: pixel data -> modality LUT (rescale) -> VOI (LUT sequence, else window center/width, else a
percentile window) -> invert MONOCHROME1. `XrayImage.raw` keeps modality values as float32 for the model and
the window/level sliders; `render()` applies the window.

Safety rules, because uploads come from strangers:
- sizes are checked from the header before any pixel is decoded (decompression bombs);
- truncated files are errors, never silently padded (PIL's LOAD_TRUNCATED_IMAGES is never set);
- error messages name the problem in a radiologist's words and never quote DICOM tag values, so no
  patient-identifying text can reach the UI or a log through them. Identifying tags are never read.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DEFAULT_MAX_PIXELS = 50_000_000
PERCENTILE_WINDOW = (0.5, 99.5)
# A file's window is ignored beyond this: (raw - (c - w/2)) / w must stay finite in float32.
MAX_WINDOW = 1e30
# ITU-R BT.601 luma, the weights PIL's convert("L") uses; applied to RGB DICOMs too so both paths agree.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(ValueError):
    """Base class: the file could not be turned into an X-ray image. The message is meant for the user."""


class EmptyFileError(ImageReadError):
    """The file has no bytes."""


class NotAnImageError(ImageReadError):
    """The bytes are not a PNG, JPEG or DICOM file."""


class CorruptImageError(ImageReadError):
    """The file looks like a supported format but its content cannot be decoded."""


class TruncatedImageError(CorruptImageError):
    """The file ends before its pixel data does."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than allowed (a decompression bomb or an unreasonably large scan)."""


class UnsupportedDicomError(ImageReadError):
    """A valid DICOM that is not a single radiograph we can show (no pixels, multi-frame, palette colour...)."""


class CompressedDicomError(UnsupportedDicomError):
    """The DICOM's compression needs a decoder plugin that is not installed."""


class MalformedDicomError(CorruptImageError):
    """A header value the pixels depend on (size, frames, bit depth) is not a valid number."""


@dataclass
class XrayImage:
    """A decoded X-ray and the information needed to display it.

    `raw` [H, W] float32 holds modality values (after the DICOM modality LUT / rescale; plain pixel values
    for PNG/JPEG). `window` = (center, width) is the file's own default. `voi_lut` is the DICOM VOI LUT
    (first mapped value, table normalised to [0, 1]) that `render()` uses when no window is asked for.
    """

    raw: np.ndarray
    window: tuple[float, float]
    invert: bool = False
    view_position: str | None = None
    source_format: str = ""
    bits: int = 8
    voi_lut: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return int(self.raw.shape[1]), int(self.raw.shape[0])

    def render(
        self, center: float | None = None, width: float | None = None, invert: bool | None = None
    ) -> np.ndarray:
        """Display values [H, W] float32 in [0, 1]: a linear window (clipped), then inversion.

        With neither `center` nor `width` given, a DICOM VOI LUT sequence wins over the default window. The
        window is the plain linear one, lo = c - w/2, hi = c + w/2 (DICOM's LINEAR differs by half a unit),
        so the default window of an 8-bit image, (127.5, 255), maps pixel values v to v / 255 exactly.
        """
        if center is None and width is None and self.voi_lut is not None:
            first, table = self.voi_lut
            index = np.clip(np.rint(self.raw) - first, 0, len(table) - 1).astype(np.int64)
            out = table[index]
        else:
            c = float(self.window[0] if center is None else center)
            w = float(self.window[1] if width is None else width)
            if not np.isfinite(c) or not np.isfinite(w) or w <= 0:
                raise ValueError(f"window width must be a positive number and center finite, got center={c}, width={w}")
            out = np.clip((self.raw - (c - w / 2)) / w, 0.0, 1.0)
        if self.invert if invert is None else invert:
            out = 1.0 - out
        return out.astype(np.float32, copy=False)

    def to_uint8(
        self, center: float | None = None, width: float | None = None, invert: bool | None = None
    ) -> np.ndarray:
        """[H, W] uint8 display image."""
        return np.rint(self.render(center, width, invert) * 255.0).astype(np.uint8)

    def to_pil(
        self, center: float | None = None, width: float | None = None, invert: bool | None = None
    ) -> Image.Image:
        """PIL 'RGB' image (grey replicated in 3 channels), what the model transforms take."""
        return Image.fromarray(self.to_uint8(center, width, invert), mode="L").convert("RGB")


def read_image(source: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Decode a PNG, JPEG or DICOM given as bytes or a path. Raises an `ImageReadError` subclass on bad input."""
    data = _read_bytes(source, max_pixels)
    if not data:
        raise EmptyFileError("The file is empty (0 bytes).")
    if data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC):
        return _read_pil(data, max_pixels)
    if data[128:132] == b"DICM":
        with _pydicom_silenced():
            return _read_dicom(data, max_pixels, headerless=False)
    # A DICOM written without preamble starts with a group-0002 or group-0008 tag (either byte order).
    if data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        with _pydicom_silenced():
            return _read_dicom(data, max_pixels, headerless=True)
    if _looks_like_text(data):
        raise NotAnImageError("This file contains text, not an image. Upload a PNG, JPEG or DICOM (.dcm) file.")
    raise NotAnImageError("This file is not a PNG, JPEG or DICOM image. Upload a PNG, JPEG or DICOM (.dcm) file.")


def _read_bytes(source: bytes | str | os.PathLike, max_pixels: int) -> bytes:
    # Even a raw 16-bit RGBA image needs at most 8 bytes a pixel; anything larger cannot be a sane upload.
    max_bytes = 8 * max_pixels + (1 << 20)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such image file: {path}")
        if path.stat().st_size > max_bytes:
            raise ImageTooLargeError(f"The file is too large ({path.stat().st_size / 1e6:.0f} MB).")
        data = path.read_bytes()
    else:
        raise TypeError(f"read_image takes bytes or a path, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"The file is too large ({len(data) / 1e6:.0f} MB).")
    return data


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut at the end of the sample is still text
            return False
    return b"\x00" not in head


def _too_large(width: int, height: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"The image is {width} x {height} pixels, too large to process safely. "
        "Downsample it (a chest X-ray needs at most a few thousand pixels a side)."
    )


# ---------------------------------------------------------------------------------------------- PNG / JPEG


def _read_pil(data: bytes, max_pixels: int) -> XrayImage:
    kind = "PNG" if data.startswith(PNG_MAGIC) else "JPEG"
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between 1x and 2x its own pixel limit: treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[kind])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError("The image is too large to process safely (decompression bomb check).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImageError(
            f"The file starts like a {kind} image but its header is damaged or incomplete."
        ) from exc
    width, height = im.size
    if width * height > max_pixels:
        raise _too_large(width, height)
    try:
        im.load()  # decodes everything now, so a truncated file fails here and not later in a transform
    except (OSError, EOFError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
            raise TruncatedImageError(f"The {kind} file is incomplete: it ends before the image data does.") from exc
        raise CorruptImageError(f"The {kind} image data is damaged and cannot be decoded.") from exc

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        raw, bits = np.asarray(im).astype(np.float32), 16
    else:
        # RGB-stored greyscale (IU X-Ray), palette, LA/RGBA (alpha dropped), CMYK, 1-bit: all to 8-bit luma.
        if im.mode in ("P", "PA", "1", "CMYK"):
            im = im.convert("RGB")
        raw, bits = np.asarray(im.convert("L")).astype(np.float32), 8
    window = (127.5, 255.0) if bits == 8 else _percentile_window(raw)
    return XrayImage(raw=raw, window=window, source_format=kind.lower(), bits=bits)


def _percentile_window(raw: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(raw, PERCENTILE_WINDOW)
    return float(lo + hi) / 2, max(float(hi - lo), 1.0)


# ---------------------------------------------------------------------------------------------- DICOM

_quiet = {"depth": 0, "level": logging.NOTSET}
_quiet_lock = threading.Lock()


@contextmanager
def _pydicom_silenced():
    """No pydicom warning or log record while an upload is read: they quote element values (e.g. "Unknown
    encoding '<Specific Character Set>'"), which must not reach a server log. The 'pydicom' logger is muted
    process-wide while any read is in progress (reference-counted across threads); pydicom serves nothing else."""
    logger = logging.getLogger("pydicom")
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["level"] = logger.level
            logger.setLevel(logging.CRITICAL + 1)
        _quiet["depth"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logger.setLevel(_quiet["level"])



def _read_dicom(data: bytes, max_pixels: int, headerless: bool) -> XrayImage:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels.processing import apply_modality_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warnings about odd elements may quote tag values
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # pydicom raises many types on garbage; none of their messages is shown
        if headerless:
            raise NotAnImageError("This file is not a PNG, JPEG or DICOM image.") from None
        raise CorruptImageError("The DICOM file is damaged or incomplete and cannot be read.") from None

    if "PixelData" not in ds:
        # Without a preamble the sniff guessed DICOM from two bytes; only a parsed SOP class or modality
        # proves the guess (an RT plan, a structure set...), anything else is not an image file at all.
        if headerless and not (_tag_text(ds, "SOPClassUID") or _tag_text(ds, "Modality")):
            raise NotAnImageError("This file is not a PNG, JPEG or DICOM image.")
        if "Rows" in ds:  # the image is described but its pixels are missing: the file was cut short
            raise TruncatedImageError("The DICOM file is incomplete: it ends before the image data does.")
        raise UnsupportedDicomError(
            "This DICOM file holds no image pixels (it may be a report, a presentation state or a directory, "
            "or the file is incomplete)."
        )
    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    if rows <= 0 or cols <= 0:
        raise UnsupportedDicomError("This DICOM file does not state its image size (Rows / Columns).")
    if rows * cols > max_pixels:
        raise _too_large(cols, rows)
    frames = _int_tag(ds, "NumberOfFrames", 1) or 1  # 0 is written by some exporters for a single frame
    if frames != 1:
        raise UnsupportedDicomError(
            f"This DICOM holds {frames} frames (a multi-frame object); only single radiographs are supported. "
            "Export the frame you want as its own file."
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB") and not photometric.startswith("YBR"):
        raise UnsupportedDicomError(f"This DICOM's colour model ({photometric}) is not supported for X-rays.")

    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # No file meta: pydicom knows how the dataset was encoded, which fixes the (uncompressed) syntax.
        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit else
            pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
    syntax = ds.file_meta.TransferSyntaxUID
    samples, allocated = _int_tag(ds, "SamplesPerPixel", 1), _int_tag(ds, "BitsAllocated", 16)
    if syntax.is_compressed:
        _check_decoder(syntax, _int_tag(ds, "BitsStored", allocated))
    else:
        # YBR_FULL_422 stores two chroma samples per two pixels: 2 values a pixel instead of 3
        values = rows * cols * (2 if photometric == "YBR_FULL_422" and samples == 3 else samples)
        expected = (values * allocated + 7) // 8
        if len(ds.PixelData) < expected:
            raise TruncatedImageError("The DICOM file is incomplete: it ends before the image data does.")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array  # YBR is converted to RGB by pydicom
    except Exception as exc:
        raise CorruptImageError("The DICOM image data is damaged and cannot be decoded.") from exc

    if photometric.startswith("MONOCHROME"):
        if pixels.ndim != 2:
            raise UnsupportedDicomError("This DICOM's pixel data does not form a single greyscale image.")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                raw = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
        except Exception:  # rescale tags that are not numbers, a broken modality LUT sequence
            raw = None
        if raw is None or not np.isfinite(raw).all():
            raise CorruptImageError(
                "This DICOM's rescale values (modality LUT) are not valid numbers, so its pixels cannot be read."
            )
        bits = _int_tag(ds, "BitsStored", allocated)
    else:
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise UnsupportedDicomError("This DICOM's colour pixel data does not form a single RGB image.")
        raw = pixels.astype(np.float32) @ LUMA
        bits = 8

    voi_lut = _voi_lut(ds, raw)
    file_window = _file_window(ds)
    if voi_lut is not None:
        first, table = voi_lut
        window = (first + len(table) / 2, float(len(table)))
    elif file_window is not None:
        window = file_window
    elif bits == 8 and not photometric.startswith("MONOCHROME"):
        window = (127.5, 255.0)
    else:
        window = _percentile_window(raw)
    view = str(ds.get("ViewPosition") or "").strip().upper() or None
    return XrayImage(
        raw=raw,
        window=window,
        invert=photometric == "MONOCHROME1",
        view_position=view,
        source_format="dicom",
        bits=bits,
        voi_lut=voi_lut,
    )


# Which plugin to suggest, by transfer-syntax family (checked in order: HTJ2K before JPEG 2000 before JPEG).
_PLUGINS = (
    ("HTJ2K", "High-Throughput JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg"),
    ("JPEG2000", "JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg"),
    ("JPEGLS", "JPEG-LS", "pip install pylibjpeg pylibjpeg-libjpeg"),
    ("JPEG", "JPEG", "pip install pylibjpeg pylibjpeg-libjpeg"),
    ("RLE", "RLE", "pip install pylibjpeg pylibjpeg-rle"),
)


def _tag_text(ds, keyword: str) -> str:
    """A header value as text for a yes/no check only (never shown), "" when absent or unreadable."""
    try:
        return str(ds.get(keyword) or "").strip()
    except Exception:
        return ""


def _int_tag(ds, keyword: str, default: int) -> int:
    """An integer header value the pixels depend on; a malformed one (badVR.dcm's NumberOfFrames "1A") is refused
    with a typed error that names the tag, never its value."""
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (ValueError, TypeError, OverflowError):
        raise MalformedDicomError(
            f"This DICOM's {keyword} is not a valid number, so its pixels cannot be read reliably."
        ) from None


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# 12-bit JPEG Extended (process 2 & 4), common in older CR archives: neither GDCM nor Pillow decodes 12-bit
# samples; pylibjpeg-libjpeg does, but it is GPL-3.0, so it is an optional extra (`pip install 'revtaf[jpeg12]'`).
JPEG12_HINT = "pip install 'revtaf[jpeg12]' (pylibjpeg-libjpeg, GPL-3.0)"


def _check_decoder(syntax, bits_stored: int = 8) -> None:
    from pydicom.pixels import get_decoder

    if syntax == "1.2.840.10008.1.2.4.51" and bits_stored > 8 and not _has_module("libjpeg"):
        raise CompressedDicomError(
            f"This DICOM uses 12-bit JPEG Extended compression; its decoder is an optional extra ({JPEG12_HINT})."
        )

    family, hint = syntax.name, "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm"
    for prefix, name, plugin in _PLUGINS:
        if syntax.keyword.startswith(prefix):
            family, hint = name, plugin
            break
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CompressedDicomError(
            f"This DICOM uses {family} compression, which cannot be decoded here. "
            "Export it as an uncompressed DICOM, PNG or JPEG."
        ) from None
    if not decoder.is_available:
        raise CompressedDicomError(
            f"This DICOM uses {family} compression and no decoder plugin is installed ({hint})."
        )


def _first_value(value) -> float:
    # WindowCenter/Width may be multi-valued (alternative windows); the first is the default one.
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _file_window(ds) -> tuple[float, float] | None:
    """(center, width) of WindowCenter/WindowWidth, or None when absent or unusable (not numbers, not finite,
    width <= 0, or beyond MAX_WINDOW): the percentile window is used then, as when the tags are missing."""
    try:
        if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
            return None
        center, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if not (np.isfinite(center) and np.isfinite(width) and 0 < width and abs(center) + width < MAX_WINDOW):
        return None
    return center, width


def _voi_lut(ds, raw: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The first VOI LUT of the sequence as (first mapped value, table in [0, 1]), or None."""
    from pydicom.pixels.processing import apply_voi

    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return None
    try:
        n_entries, first, depth = (int(v) for v in sequence[0].LUTDescriptor)
        n_entries = n_entries or 1 << 16  # 0 means 65536 entries (PS3.3 C.11.2.1.1)
        # pydicom parses the table (VR, endianness, descriptor quirks); feeding it a ramp reads it out.
        table = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds).astype(np.float32)
    except Exception:
        return None  # a broken VOI LUT falls back to the window / percentile default instead of failing
    return first, table / float((1 << depth) - 1)
