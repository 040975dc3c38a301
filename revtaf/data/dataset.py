"""The image side of a study for training and evaluation: one frontal image per annotation entry."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from revtaf.data.annotation import Study, image_file
from revtaf.data.imageio import read_image
from revtaf.data.transforms import test_transform


class XrayDataset(Dataset):
    """`studies[i]` -> {"image": [3, 224, 224] float tensor, "index": i, "id": study id}.

    Images are decoded by `read_image(...).to_pil()`, the same path as a demo upload, so training and the
    demo see identical pixels. `transform` defaults to the evaluation transform.
    """

    def __init__(self, studies: Sequence[Study], root: str | os.PathLike, transform: Callable | None = None):
        self.studies = list(studies)
        self.root = root
        self.transform = transform if transform is not None else test_transform()

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        study = self.studies[index]
        path = image_file(self.root, study)
        try:
            image = read_image(path).to_pil()
        except (ValueError, OSError) as exc:
            # Same error type, with the study named: a training run must say which file is bad.
            raise type(exc)(f"study {study.id} ({path}): {exc}") from exc
        return {"image": self.transform(image), "index": index, "id": study.id}
