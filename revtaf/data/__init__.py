"""Data layer: annotation files, X-ray decoding (PNG / JPEG / DICOM), report cleaning, transforms, datasets."""

from revtaf.data import transforms
from revtaf.data.annotation import (AnnotationError, Study, detect_dataset, image_file, load_annotation,
                                    require_data_root)
from revtaf.data.clean import clean_report, split_sentences
from revtaf.data.dataset import XrayDataset
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
    XrayImage,
    read_image,
)

__all__ = [
    "AnnotationError",
    "CompressedDicomError",
    "CorruptImageError",
    "EmptyFileError",
    "ImageReadError",
    "ImageTooLargeError",
    "MalformedDicomError",
    "NotAnImageError",
    "Study",
    "TruncatedImageError",
    "UnsupportedDicomError",
    "XrayDataset",
    "XrayImage",
    "detect_dataset",
    "require_data_root",
    "clean_report",
    "image_file",
    "load_annotation",
    "read_image",
    "split_sentences",
    "transforms",
]
