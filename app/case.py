"""One analysed study as a session holds it: its working image, display window and one Prediction per ablation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from revtaf.data import XrayImage
from revtaf.model.inference import Encoding
from revtaf.model.prediction import Prediction, ViewAssignment
from revtaf_app.render import Heatmap, heatmap
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
    lateral: XrayImage | None = None  # working copy of the study's lateral film, when the model reads two
    uploaded: list[ViewAssignment] = field(default_factory=list)  # an upload's files (their order) and their views
    predictions: dict[str, Prediction] = field(default_factory=dict)
    encodings: dict[str, Encoding] = field(default_factory=dict)
    ablation: str = "full"

    @property
    def prediction(self) -> Prediction:
        return self.predictions[self.ablation]

    def gray(self) -> np.ndarray:
        return self.display.render(self.image)

    def lateral_gray(self) -> np.ndarray | None:
        """The lateral film in its file's own window (the window controls are the frontal's), or None."""
        return None if self.lateral is None else Display().render(self.lateral)

    @property
    def films(self) -> list[XrayImage]:
        """What the model reads: the frontal, then the lateral when there is one."""
        return [self.image] if self.lateral is None else [self.image, self.lateral]

    def heatmap(self, key: str | None, opacity: float = 0.5, cmap: str = "inferno") -> Heatmap:
        """`heatmap` of the current prediction over the displayed image(s), on the model's crop."""
        return heatmap(self.prediction, self.gray(), key, opacity, cmap, self.lateral_gray())
