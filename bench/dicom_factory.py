"""Synthetic inputs for tests: DICOM files built with pydicom, and a tiny MIMIC-layout data root.

Every DICOM carries identifying tags filled with the strings of `MARKERS`, so a test can check that none of
them leaks into an error message, a warning, a log record or the UI.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# Identifying tags and their marker values (valid for each tag's VR, unique enough to grep for).
IDENTIFYING = {
    "PatientName": "ZZLEAK^PATIENTNAME",
    "PatientID": "ZZLEAK-PID-90417",
    "PatientBirthDate": "19230417",
    "InstitutionName": "ZZLEAK INSTITUTION",
    "AccessionNumber": "ZZLEAKACC8812",
    "ReferringPhysicianName": "ZZLEAK^REFERRING",
    "StudyDate": "19870211",
}
MARKERS = tuple(IDENTIFYING.values())


def ramp(rows: int = 32, cols: int = 48, high: int = 4095) -> np.ndarray:
    """[rows, cols] uint16 values spread over 0..high, row-major, so every value is predictable."""
    return np.linspace(0, high, rows * cols).round().astype(np.uint16).reshape(rows, cols)


def make_dataset(
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple | None = None,
    voi_lut: tuple[int, np.ndarray, int] | None = None,
    rescale: tuple[float, float] | None = None,
    view_position: str | None = "PA",
    frames: int = 1,
) -> Dataset:
    """A CR image dataset. `pixels` [H, W] (or [H, W, 3] for RGB, [F, H, W] for frames > 1); None = no pixel data.

    `window` = (center, width) or ([centers], [widths]); `voi_lut` = (first mapped value, table, bits per entry);
    `rescale` = (slope, intercept).
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    if view_position is not None:
        ds.ViewPosition = view_position
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored)
        if frames > 1:
            ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if voi_lut is not None:
        first, table, depth = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first, depth]
        item.LUTData = [int(v) for v in table]
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = Sequence([item])
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_dicom(**kwargs) -> bytes:
    """Bytes of a DICOM file built by `make_dataset(**kwargs)`; by default a 32x48 12-bit ramp."""
    kwargs.setdefault("pixels", ramp())
    return to_bytes(make_dataset(**kwargs))


def with_fake_compression(ds: Dataset, syntax: str) -> bytes:
    """The dataset relabelled with a compressed transfer syntax and encapsulated (undecodable) pixel bytes."""
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


MIMIC_ENTRIES = (("train", 50000001), ("train", 50000001), ("val", 50000002), ("test", 50000003))


def make_mimic_root(root: Path) -> Path:
    """A PromptMRG MIMIC-layout root from `MIMIC_ENTRIES` (split, study): one image per entry, a fake PNG of
    size (h, w) = (40 + 8 k, 50 + 8 k) so a test can tell which file was read; labels on all but the last."""
    data = {"train": [], "val": [], "test": []}
    for k, (split, study) in enumerate(MIMIC_ENTRIES):
        dicom_id = f"{k:04d}abcd-ef01"
        rel = f"p10/p10000032/s{study}/{dicom_id}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40 + 8 * k, 50 + 8 * k), 30 * k, dtype=np.uint8)).save(root / "images" / rel)
        entry = {
            "id": dicom_id,
            "study_id": study,
            "subject_id": 10000032,
            "report": f"FINDINGS: synthetic report {k}.\n IMPRESSION: none.",
            "image_path": [rel],
            "split": split,
        }
        if k < len(MIMIC_ENTRIES) - 1:
            entry["labels"] = [k % 4] * 18
        data[split].append(entry)
    (root / "annotation.json").write_text(json.dumps(data))
    return root
