"""The image side of a study for training and evaluation: its frontal image, and its lateral for a two-view model."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from revtaf.data.annotation import Study, image_file
from revtaf.data.imageio import read_image
from revtaf.data.transforms import test_transform


class XrayDataset(Dataset):
    """`studies[i]` -> {"image": [3, 224, 224] float tensor, "index": i, "id": study id}; with `views=2`, "image"
    is [2, 3, 224, 224] (the frontal, then the lateral, or the frontal again for a study without one) and
    "has_lateral" says which.

    Images are decoded by `read_image(...).to_pil()`, the same path as a demo upload, so training and the
    demo see identical pixels. `transform` defaults to the evaluation transform.
    """

    def __init__(self, studies: Sequence[Study], root: str | os.PathLike, transform: Callable | None = None,
                 views: int = 1):
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        self.studies = list(studies)
        self.root = root
        self.transform = transform if transform is not None else test_transform()
        self.views = views

    def __len__(self) -> int:
        return len(self.studies)

    def _read(self, study: Study, view: str) -> torch.Tensor:
        path = image_file(self.root, study, view)
        try:
            image = read_image(path).to_pil()
        except (ValueError, OSError) as exc:
            # Same error type, with the study named: a training run must say which file is bad.
            raise type(exc)(f"study {study.id} ({path}): {exc}") from exc
        return self.transform(image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str | bool]:
        study = self.studies[index]
        frontal = self._read(study, "frontal")
        item = {"image": frontal, "index": index, "id": study.id}
        if self.views == 2:
            has_lateral = study.lateral_path is not None
            item["image"] = torch.stack([frontal, self._read(study, "lateral") if has_lateral else frontal])
            item["has_lateral"] = has_lateral
        return item
