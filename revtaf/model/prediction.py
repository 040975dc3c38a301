"""What one study's inference returns: everything the demo shows, as plain data.

Arrays are numpy so the UI and JSON export need no torch. `to_json()` drops the maps' raw arrays
unless asked, because 75 + N maps of 7x7 are for overlays, not for reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class DiseaseState:
    """One of the 18 disease prompts: its chosen state and the 4-way probabilities."""

    name: str
    state: str  # blank | positive | negative | uncertain
    probs: dict[str, float]  # state -> probability, sums to 1
    source: str = "model"  # "user": set by a what-if (predict(..., states=...)), not the classifier's call
    # the P(positive) at which the classifier calls it positive (its decision threshold); None: the argmax decides
    threshold: float | None = None


@dataclass
class Neighbour:
    """A retrieved training study in the LRE's hyperbolic space."""

    study_id: str
    distance: float  # Poincaré distance to the query
    labels: dict[str, str] = field(default_factory=dict)  # observation -> state
    report: str | None = None  # filled from the data root / report archive when available


@dataclass
class EntityPrompt:
    """One of the 75 local reference prompts (LRPs): a MedKLIP-style (entity, position, exist) triplet."""

    index: int
    entity: str
    group: str  # finding | device | normal descriptor
    exist_prob: float
    exists: bool
    position: str
    sentence: str  # the triplet sentence fed to the text encoder
    label: str = ""  # the entity in a radiologist's words ("costophrenic blunting"); `entity` keeps the id
    position_label: str = ""  # the position in words ("left lower lobe")


@dataclass
class ReportSentence:
    """One sentence of a report written to a plan, with its evidence (inference.sentence_evidence).

    `findings` {finding: "positive" | "negative"} is the sentence's topic, `probability` the classifier's
    P(that state) for each, `user` whether a what-if set any of them. `entity_index` is the entity (LRP) the
    sentence mentions, a row of `Prediction.lrp_maps` (None when it mentions none), `position` the place it names.
    `grp_index` is the retrieved sentence that says most alike (a row of `grp_maps` / `grp_sentences`; None
    without the neighbour's text), `grp_similarity` their ROUGE-L F; `fcc_similarity` and `fcc_overlap` the S and
    O of the (entity, retrieved sentence) pair in the FCC."""

    text: str
    topic: list[str]  # topic tokens, e.g. ["[t:cardiomegaly:pos]"]
    findings: dict[str, str] = field(default_factory=dict)
    probability: dict[str, float] = field(default_factory=dict)
    user: bool = False
    entity: str | None = None  # in a radiologist's words ("opacity")
    entity_index: int | None = None
    position: str | None = None  # "right upper lobe"
    grp_index: int | None = None
    grp_sentence: str | None = None
    grp_similarity: float | None = None
    fcc_similarity: float | None = None
    fcc_overlap: float | None = None


@dataclass
class ViewAssignment:
    """One input image of a study: its place in the input (0-based), the view the model read it as ("frontal" /
    "lateral") and what decided that: "file" (DICOM ViewPosition), "model" (the view classifier) or "order"
    (a model without a view classifier takes the images as given, frontal first)."""

    index: int
    view: str
    source: str
    p_lateral: float | None = None  # the view classifier's P(lateral) of this film (None: a model without one)

    @property
    def how(self) -> str:
        """What decided the view, in words: "from the files' DICOM ViewPosition", "by the view classifier", ..."""
        return {"file": "from the files' DICOM ViewPosition", "model": "by the view classifier",
                "order": "in the order given"}[self.source]


@dataclass
class Prediction:
    """The model's full output for one study.

    Shapes: `lrp_maps` [75, h, w], `grp_maps` [N, h, w] (h = w = 7 at 224 px input), the frontal film's;
    `lateral_lrp_maps` / `lateral_grp_maps` the same on the lateral film (a two-view model reading a study with
    one; else empty): a map is one distribution over both films, each part its film's share.
    `fcc_similarity` and `fcc_overlap` [75, N] (S and O of the FCC loss, rows = entities, cols = sentences).
    `films`: which input image the model read as which view, and how that was decided (`ViewAssignment`).
    """

    report: str
    diseases: list[DiseaseState]
    neighbours: list[Neighbour]  # best first; neighbours[0] gave the GRPs
    grp_sentences: list[str]  # sentences of neighbours[0]'s report (empty when its text is unavailable)
    entities: list[EntityPrompt]
    lrp_maps: np.ndarray
    grp_maps: np.ndarray
    fcc_similarity: np.ndarray
    fcc_overlap: np.ndarray
    ablation: dict[str, bool] = field(default_factory=dict)  # e.g. {"grp": False, "lrp": True}
    # A sentence-plan decoder's sentences with their evidence; empty for a decoder without topics.
    # `missed_findings`: positive findings no sentence states (the plan's missed topics).
    sentences: list[ReportSentence] = field(default_factory=list)
    missed_findings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per-stage latency
    lateral_lrp_maps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    lateral_grp_maps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    films: list[ViewAssignment] = field(default_factory=list)
    # Input check (input_check.py; None when the model has none): the view, where it came from ("file" = the
    # DICOM ViewPosition, "model" = the classifier), P(lateral), and the distance to the training frontal images.
    view: str | None = None
    view_source: str | None = None
    p_lateral: float | None = None
    ood_score: float | None = None
    in_distribution: bool | None = None

    @property
    def warning(self) -> str | None:
        """The sentence a reader must see before the report, or None when the input looks like what the model reads."""
        if self.in_distribution is False:
            return ("This does not look like a chest radiograph like the ones the model was trained on "
                    f"(distance {self.ood_score:.1f} to the training images): the report below is not meaningful.")
        if self.view == "lateral":
            where = "the file says so" if self.view_source == "file" else "judged from the pixels"
            return f"This looks like a lateral view ({where}): the model reads frontal views; its report may be wrong."
        lateral = next((f for f in self.films if f.view == "lateral"), None)
        if lateral is not None and lateral.p_lateral is not None and lateral.p_lateral < 0.5:
            return (f"File {lateral.index + 1} is read as the lateral ({lateral.how}), but it looks frontal "
                    f"(P(lateral) {lateral.p_lateral:.2f}): a study is one frontal and one lateral; the report may be "
                    "wrong.")
        return None

    def to_json(self, with_maps: bool = False) -> dict:
        out = asdict(self)
        out["warning"] = self.warning
        for key in ("lrp_maps", "grp_maps", "lateral_lrp_maps", "lateral_grp_maps", "fcc_similarity", "fcc_overlap"):
            if with_maps or key.startswith("fcc"):
                out[key] = np.round(np.asarray(out[key], dtype=np.float32), 4).tolist()
            else:
                out[key] = list(np.shape(out[key]))
        return out
