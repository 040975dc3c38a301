"""Annotation files in the R2Gen / PromptMRG layout (docs/method.md §1.2): `<root>/annotation.json` + `<root>/images/`.

- IU X-Ray (this project's copy): `{"train", "val", "test"}` of studies with `id, report, image_path, view`,
  plus `impression, indication, mesh` (SOURCES.md). PromptMRG's IU file is a flat list: read as split "test".
- MIMIC-CXR (PromptMRG): `{"train", "val", "test"}` of entries `id, study_id, subject_id, report, image_path,
  split, labels` (18 ints in 0..3, optional); one entry per image, several entries may share a study.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from revtaf.labels.constants import STATES

SPLITS = ("train", "val", "test")
DATASETS = ("iu", "mimic")
VIEWS = ("frontal", "lateral")  # a two-view model reads them in this order
N_LABELS = 18  # PromptMRG's 14 CheXpert observations + 4 auxiliary classes (docs/method.md §1.2)
REQUIRED_KEYS = ("id", "report", "image_path")


class AnnotationError(ValueError):
    """annotation.json exists but does not have the expected layout."""


@dataclass(slots=True)
class Study:
    """One annotation entry. `image_paths` are relative to `<root>/images/`; IU lists the first frontal first.

    `study_id` groups entries of the same study (MIMIC has one entry per image); it equals `id` for IU.
    `labels` [18] are disease states (0 blank, 1 positive, 2 negative, 3 uncertain) when the file has them.
    """

    id: str
    split: str
    report: str
    image_paths: list[str]
    views: list[str] = field(default_factory=list)
    impression: str = ""
    indication: str = ""
    mesh: list[str] = field(default_factory=list)
    labels: list[int] | None = None
    dataset: str = "iu"
    study_id: str = ""

    def __post_init__(self) -> None:
        self.study_id = self.study_id or self.id

    @property
    def frontal_path(self) -> str:
        """The image the model sees (docs/method.md §1.1: only `image_path[0]` is used)."""
        return self.image_paths[0]

    @property
    def lateral_path(self) -> str | None:
        """The study's first lateral film after the frontal (a two-view model's second view), None without one.
        IU lists each image's view; an entry without views is taken to be frontal, then lateral (R2Gen's order)."""
        views = self.views or ["Frontal", "Lateral"][: len(self.image_paths)]
        return next((p for p, v in zip(self.image_paths[1:], views[1:]) if v.lower() == "lateral"), None)


def require_data_root(root: str | os.PathLike) -> Path:
    """`root` as an absolute Path when it holds an annotation.json (a server started in another folder must find
    it too), else FileNotFoundError naming it (one message everywhere)."""
    root = Path(root).expanduser().resolve()
    if not (root / "annotation.json").is_file():
        raise FileNotFoundError(f"{root} is not a data root: it has no annotation.json")
    return root


def detect_dataset(root: str | os.PathLike) -> str:
    """"mimic" when the annotation's entries carry MIMIC's subject_id, else "iu"."""
    data = json.loads((require_data_root(root) / "annotation.json").read_text())
    entries = data if isinstance(data, list) else next((v for v in data.values() if v), [])
    return "mimic" if entries and "subject_id" in entries[0] else "iu"


def load_annotation(root: str | os.PathLike, dataset: str = "iu") -> dict[str, list[Study]]:
    """Read `<root>/annotation.json` -> {"train": [...], "val": [...], "test": [...]} (missing splits are empty)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {DATASETS}")
    path = Path(root) / "annotation.json"
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path} is not UTF-8 text") from None

    if isinstance(data, list):  # PromptMRG's IU file: every entry is evaluated
        data = {"test": data}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise AnnotationError(f"{path}: expected an object with {SPLITS} or a list of entries, got {kind}")
    unknown = sorted(set(data) - set(SPLITS))
    if unknown:
        raise AnnotationError(f"{path}: unexpected split name(s) {unknown}; expected {SPLITS}")

    out: dict[str, list[Study]] = {}
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise AnnotationError(f"{path}: split {split!r} must be a list of entries, got {type(entries).__name__}")
        out[split] = [_parse_entry(entry, split, i, dataset, path.name) for i, entry in enumerate(entries)]
    return out


def image_file(root: str | os.PathLike, study: Study, view: str = "frontal") -> Path | None:
    """Path of the study's frontal (model input) or lateral image under `<root>/images/`; None for a lateral the
    study does not have."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: expected one of {VIEWS}")
    path = study.frontal_path if view == "frontal" else study.lateral_path
    return None if path is None else Path(root) / "images" / path


def _parse_entry(entry: object, split: str, index: int, dataset: str, filename: str) -> Study:
    where = f"{filename}: {split}[{index}]"
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where} must be an object, got {type(entry).__name__}")
    if "id" in entry:
        where += f" (id {entry['id']!r})"
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise AnnotationError(f"{where} is missing {', '.join(map(repr, missing))}")

    paths = entry["image_path"]
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise AnnotationError(f"{where}: 'image_path' must be a non-empty list of paths")
    if not isinstance(entry["report"], str):
        raise AnnotationError(f"{where}: 'report' must be a string")
    views = entry.get("view", [])
    if not isinstance(views, list) or (views and len(views) != len(paths)):
        raise AnnotationError(f"{where}: 'view' must list one view per image path")
    mesh = entry.get("mesh", [])
    if not isinstance(mesh, list):
        raise AnnotationError(f"{where}: 'mesh' must be a list")

    labels = entry.get("labels")
    if labels is not None:
        if (
            not isinstance(labels, list)
            or len(labels) != N_LABELS
            or not all(type(v) is int and 0 <= v < len(STATES) for v in labels)
        ):
            raise AnnotationError(f"{where}: 'labels' must be {N_LABELS} integers in 0..{len(STATES) - 1}")

    return Study(
        id=str(entry["id"]),
        split=split,
        report=entry["report"],
        image_paths=paths,
        views=[str(v) for v in views],
        impression=str(entry.get("impression") or ""),
        indication=str(entry.get("indication") or ""),
        mesh=[str(m) for m in mesh],
        labels=labels,
        dataset=dataset,
        study_id=str(entry.get("study_id") or ""),
    )
