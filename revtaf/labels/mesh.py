"""IU X-Ray's manual MeSH annotations as an independent reference for the report labeler.

Open-i annotators indexed every IU report with MeSH-based terms: `Main term/qualifier/qualifier...`, e.g.
`Pulmonary Atelectasis/base/left`, `Cardiac Shadow/enlarged/mild`, `normal`. `mesh_classes` maps them onto the
CheXpert observations that MeSH names cleanly; `label_check` compares a labeler's positives with them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from revtaf.labels.constants import POSITIVE

# CheXpert observation -> (MeSH main term, qualifiers of which one is required or None). Main terms are exact
# MeSH spellings as annotated; some count only with a qualifier: `Cardiac Shadow/enlarged` is cardiomegaly,
# `Cardiac Shadow/irregular` is not; `Density` is a lung opacity only where it lies in the lung.
_INTERSTITIAL = frozenset({"interstitial", "reticular"})
MESH_MAP: dict[str, tuple[tuple[str, frozenset | None], ...]] = {
    "Cardiomegaly": (("Cardiomegaly", None), ("Cardiac Shadow", frozenset({"enlarged"}))),
    # CheXpert's Lung Opacity includes interstitial patterns, which MeSH files under Markings and Lung.
    "Lung Opacity": (("Opacity", None), ("Airspace Disease", None), ("Infiltrate", None),
                     ("Density", frozenset({"lung", "retrocardiac"})), ("Markings", _INTERSTITIAL),
                     ("Lung", _INTERSTITIAL), ("Lung Diseases, Interstitial", None)),
    "Lung Lesion": (("Nodule", None), ("Mass", None)),
    # CheXpert's Edema covers vascular congestion and heart failure; MeSH indexes those separately.
    "Edema": (("Pulmonary Edema", None), ("Pulmonary Congestion", None), ("Heart Failure", None)),
    "Consolidation": (("Consolidation", None),),
    "Pneumonia": (("Pneumonia", None),),
    "Atelectasis": (("Pulmonary Atelectasis", None),),
    "Pneumothorax": (("Pneumothorax", None), ("Hydropneumothorax", None), ("Hemopneumothorax", None)),
    "Pleural Effusion": (("Pleural Effusion", None), ("Hydropneumothorax", None), ("Hemothorax", None),
                         ("Hemopneumothorax", None)),
    "Fracture": (("Fractures, Bone", None),),
}
MESH_CLASSES = tuple(MESH_MAP)


def mesh_classes(mesh_terms: list[str]) -> dict[str, bool]:
    """MeSH terms of one study -> {class: asserted} for the classes of MESH_MAP."""
    if isinstance(mesh_terms, str) or not all(isinstance(t, str) for t in mesh_terms):
        raise TypeError("mesh_terms must be a list of str, e.g. ['Cardiomegaly/mild', 'normal']")
    parsed = []
    for term in mesh_terms:
        main, *qualifiers = [p.strip() for p in term.split("/")]
        parsed.append((main, set(qualifiers)))
    return {
        cls: any(main == want and (need is None or need & quals) for main, quals in parsed for want, need in rules)
        for cls, rules in MESH_MAP.items()
    }


def study_text(entry: dict) -> str:
    """What the labeler reads for a study: findings then impression, one section per line."""
    return "\n".join(s for s in (entry.get("report", ""), entry.get("impression", "")) if s)


def label_check(root: str | os.PathLike, split: str, labeler=None) -> dict:
    """Compare labeler positives with MeSH, per class of MESH_CLASSES, on one split of `root`/annotation.json.

    Only state 1 (positive) counts as a labeler positive: MeSH indexes findings the report asserts (see
    docs/labeler.md). Returns {'split', 'n', 'classes': {class: {precision, recall, f1, support, predicted}},
    'macro_f1'}.
    """
    from revtaf.data.annotation import require_data_root

    path = require_data_root(root) / "annotation.json"
    annotation = json.loads(path.read_text())
    if split not in annotation:
        raise KeyError(f"split {split!r} not in {path}; have {sorted(annotation)}")
    entries = annotation[split]
    if labeler is None:
        from revtaf.labels.chexpert import RuleLabeler

        labeler = RuleLabeler()
    from revtaf.labels.chexpert import LABEL_NAMES_18

    predicted = np.asarray(labeler([study_text(e) for e in entries]))
    classes = {}
    for cls in MESH_CLASSES:
        pred = predicted[:, LABEL_NAMES_18.index(cls)] == POSITIVE
        gold = np.array([mesh_classes(e["mesh"])[cls] for e in entries])
        tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        classes[cls] = {"precision": p, "recall": r, "f1": f1, "support": int(gold.sum()), "predicted": int(pred.sum())}
    macro = float(np.mean([c["f1"] for c in classes.values()]))
    return {"split": split, "n": len(entries), "classes": classes, "macro_f1": macro}


def format_table(result: dict) -> str:
    """Markdown table of a label_check result."""
    lines = [
        f"MeSH agreement, {result['split']} split ({result['n']} studies), labeler positives vs MeSH",
        "",
        "| class | precision | recall | F1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cls, c in result["classes"].items():
        scores = " | ".join(f"{c[key]:.3f}" for key in ("precision", "recall", "f1"))
        lines.append(f"| {cls} | {scores} | {c['support']} | {c['predicted']} |")
    lines.append(f"| **macro** | | | **{result['macro_f1']:.3f}** | | |")
    return "\n".join(lines)
