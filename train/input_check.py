"""`revtaf fit-input-check`: fit the view classifier and the out-of-distribution score of a trained model
(revtaf/model/input_check.py) on IU X-Ray's own view labels, store them beside its weights, and measure them.

Features: the model's pooled visual features of the test transform, for every image of every study (frontal
and lateral views, as the annotation's `view` labels them). Fitted on train, threshold on val frontal images,
measured on test (never used to fit) and on the hostile corpus's non-radiographs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def pooled_features(model, images, batch_size: int = 32) -> torch.Tensor:
    """XrayImage / PIL images -> the model's pooled visual features [n,C] under the test transform."""
    from revtaf.data.transforms import test_transform
    from revtaf.model.inference import to_pil

    transform = test_transform(model.cfg.image_size)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(to_pil(im)) for im in images[start : start + batch_size]])
        out.append(model.visual(batch.to(model.triplet_table.device))[1].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.visual.out_dim)


def _view_images(root: Path, studies) -> tuple[list, list[str]]:
    from revtaf.data import read_image

    images, views = [], []
    for study in studies:
        for path, view in zip(study.image_paths, study.views or ["Frontal"] * len(study.image_paths)):
            images.append(read_image(root / "images" / path))
            views.append(view.lower())
    return images, views


def fit_input_check(checkpoint, data, batch_size: int = 32, max_studies: int | None = None) -> dict:
    """Fit, save (manifest rewritten) and measure the input check of the model in `checkpoint`."""
    from revtaf.data.synthetic import NON_RADIOGRAPHS, non_radiographs
    from revtaf.data import detect_dataset, load_annotation, read_image, require_data_root
    from revtaf.integrity import read_manifest, write_manifest
    from revtaf.model.input_check import InputCheck
    from revtaf.model.revtaf import REVTAF

    root, ckpt = require_data_root(data), Path(checkpoint)
    splits = {k: v[:max_studies] for k, v in load_annotation(root, detect_dataset(root)).items()}
    model = REVTAF.from_pretrained(ckpt)
    feats, views = {}, {}
    for split in ("train", "val", "test"):
        images, views[split] = _view_images(root, splits[split])
        feats[split] = pooled_features(model, images, batch_size)
        views[split] = np.array(views[split])
    frontal = {s: feats[s][torch.from_numpy(views[s] == "frontal")] for s in feats}
    lateral = {s: feats[s][torch.from_numpy(views[s] == "lateral")] for s in feats}
    if len(lateral["train"]) == 0 or len(frontal["val"]) == 0:
        raise ValueError("fitting the input check needs lateral training images and frontal val images")
    check = InputCheck.fit(frontal["train"], lateral["train"], frontal["val"])

    test_lateral = check.p_lateral(feats["test"]) > 0.5
    truth = torch.from_numpy(views["test"] == "lateral")
    odd_images = non_radiographs()
    odd = pooled_features(model, [read_image(odd_images[name][1]) for name in NON_RADIOGRAPHS])
    odd_pass = (check.ood_score(odd) <= check.ood_threshold).tolist()
    report = {
        "view_accuracy_test": float((test_lateral == truth).float().mean()),
        "view_accuracy_test_frontal": float((~test_lateral[~truth]).float().mean()),
        "view_accuracy_test_lateral": float(test_lateral[truth].float().mean()) if truth.any() else None,
        "test_images": {"frontal": int((~truth).sum()), "lateral": int(truth.sum())},
        "ood_threshold": float(check.ood_threshold),
        "ood_pass_val_frontal": float((check.ood_score(frontal["val"]) <= check.ood_threshold).float().mean()),
        "ood_pass_test_frontal": float((check.ood_score(frontal["test"]) <= check.ood_threshold).float().mean()),
        "ood_pass_test_lateral": float((check.ood_score(lateral["test"]) <= check.ood_threshold).float().mean())
        if len(lateral["test"]) else None,
        "non_radiographs_passing": {n: bool(p) for n, p in zip(NON_RADIOGRAPHS, odd_pass)},
    }
    saved = check.save(ckpt).name
    (ckpt / "input_check.json").write_text(json.dumps(report, indent=2) + "\n")
    write_manifest(ckpt, list(dict.fromkeys([*read_manifest(ckpt), saved, "input_check.json"])))
    return report
