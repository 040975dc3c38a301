"""The REVTAF model and its parts. `from revtaf.model import REVTAF, REVTAFConfig, Prediction`.

Exports resolve lazily: importing `revtaf.model.prediction` (numpy only) must not pull in torch and
transformers, which the top-level names need.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "REVTAF": "revtaf.model.revtaf",
    "Inference": "revtaf.model.revtaf",
    "REVTAFConfig": "revtaf.model.config",
    "Prediction": "revtaf.model.prediction",
    "DiseaseState": "revtaf.model.prediction",
    "EntityPrompt": "revtaf.model.prediction",
    "Neighbour": "revtaf.model.prediction",
    "build_tokenizer": "revtaf.model.tokenizer",
    "load_tokenizer": "revtaf.model.tokenizer",
    "encode_reports": "revtaf.model.decoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
