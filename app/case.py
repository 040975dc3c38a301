"""One analysed study as a session holds it: its working image, display window and one Prediction per ablation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from revtaf.data import XrayImage
from revtaf.model.inference import Encoding
from revtaf.model.prediction import Prediction
from revtaf_app.render import Heatmap, heatmap, model_box
from revtaf_app.uploads import Display


@dataclass
class Case:
    """One analysed study as a session holds it: heatmap and window events need no model run.

    `predictions` caches one Prediction per ablation tag ('full', 'grp', 'lrp', 'grp+lrp', 'tisr', ...), and
    `encodings` the model's reading of the image under it (REVTAF.encode), from which a what-if is written."""

    key: str
    image: XrayImage  # working copy, what the model saw
    original_size: tuple[int, int]
    display: Display = field(default_factory=Display)
    study_id: str | None = None
    ground_truth: str | None = None
    predictions: dict[str, Prediction] = field(default_factory=dict)
    encodings: dict[str, Encoding] = field(default_factory=dict)
    ablation: str = "full"

    @property
    def prediction(self) -> Prediction:
        return self.predictions[self.ablation]

    def gray(self) -> np.ndarray:
        return self.display.render(self.image)

    def heatmap(self, key: str | None, opacity: float = 0.5, cmap: str = "inferno") -> Heatmap:
        """`heatmap` of the current prediction over the displayed image, on the model's crop."""
        gray = self.gray()
        return heatmap(self.prediction, gray, key, opacity, cmap, model_box(*gray.shape))
