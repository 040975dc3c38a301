"""REVTAF: Learnable Retrieval Enhanced Visual-Text Alignment and Fusion for radiology report generation.

The public API, in five lines::

    import revtaf
    model = revtaf.REVTAF.from_pretrained("assets/revtaf-iu")   # a directory, or a Hub id "owner/name"
    image = revtaf.read_image("cxr.dcm")                         # PNG, JPEG or DICOM
    prediction = model.predict(image)                            # a revtaf.Prediction
    print(prediction.report)

Names resolve lazily, so `import revtaf` stays cheap (no torch until a model is asked for).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "REVTAF": "revtaf.model.revtaf",
    "REVTAFConfig": "revtaf.model.config",
    "Prediction": "revtaf.model.prediction",
    "read_image": "revtaf.data.imageio",
    "XrayImage": "revtaf.data.imageio",
    "ImageReadError": "revtaf.data.imageio",
    "BUNDLED_MODEL": "revtaf.paths",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
