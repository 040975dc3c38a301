"""From a batched inference to what a reader sees: the batch's tensors (`Inference`), one Prediction per study
(`prediction_row`), and the inputs a caller may give `REVTAF.predict` (a file or an image; a what-if's states)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
from PIL import Image
from pycocoevalcap.rouge.rouge import Rouge

from revtaf.data.clean import clean_report, split_sentences
from revtaf.data.imageio import XrayImage, read_image
from revtaf.labels import ENTITY_GROUPS, ENTITY_LABELS, LABEL_NAMES_18, POSITION_LABELS, labels_to_dict, triplet_sentence
from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75, NEGATIVE, POSITIVE, STATES, UNCERTAIN
from revtaf.labels.topics import NO_FINDING, PATHOLOGIES, sentence_topic
from revtaf.labels.triplets import sentence_mentions
from revtaf.model.fcc import FCCOutput
from revtaf.model.fvtaf import FVTAFOutput
from revtaf.model.prediction import DiseaseState, EntityPrompt, Neighbour, Prediction, ReportSentence
from revtaf.model.sentence_plan import PlannedReport, PlannedSentence

# What REVTAF.predict reads as an image: a PIL image, a decoded XrayImage, or a PNG/JPEG/DICOM file's path or bytes
ImageInput = Union[Image.Image, XrayImage, str, os.PathLike, bytes]


@dataclass
class Inference:
    """Batched inference results (tensors on the model's device).

    probs [B,18,4], states [B,18]; neighbour_dist / neighbour_index [B,k] (k = max(K, neighbours_shown),
    ascending); grp_mask [B,N] of the GRPs used (None when the GRP branch is off); fcc = S and O [B,75,N]
    (None unless both branches are on); timings_ms per stage for the whole batch.
    """

    reports: list[str]
    probs: torch.Tensor
    states: torch.Tensor
    neighbour_dist: torch.Tensor
    neighbour_index: torch.Tensor
    fused: FVTAFOutput
    grp_mask: torch.Tensor | None
    fcc: FCCOutput | None
    timings_ms: dict[str, float]
    pooled: torch.Tensor | None = None  # [B,C] pooled visual features (the input check reads them)
    planned: list[PlannedReport] | None = None  # each report's sentences and topics (a sentence-plan decoder)
    # What REVTAF.decode rewrites the reports from: the classifier's own states [B,18] (`states` are the prompt's),
    # TISR's pseudo words, the branches switched off.
    classified: torch.Tensor | None = None
    pseudo_words: torch.Tensor | None = None
    ablate: frozenset[str] = frozenset()
    has_lateral: torch.Tensor | None = None  # [B] bool: a two-view model's studies that have their lateral


@dataclass
class Encoding:
    """Studies read up to their reports (REVTAF.encode): the batch's Inference without reports, the entity model's
    triplets exist_prob / exists / position [B,75], each study's input check (None without one) and its films'
    views. REVTAF.write writes the reports from it, as often as asked (a what-if rewrites them without reading
    the images again)."""

    out: Inference
    exist_prob: torch.Tensor
    exists: torch.Tensor
    position: torch.Tensor
    checks: list
    films: list = field(default_factory=list)  # [B] lists of ViewAssignment


def prediction_row(model: torch.nn.Module, b: int, out: Inference, exist_prob: torch.Tensor, exists: torch.Tensor,
                   position: torch.Tensor, ablate: frozenset[str],
                   report_lookup: Callable[[str], str | None] | None, timings: dict[str, float],
                   overridden: frozenset[str] = frozenset()) -> Prediction:
    """Row b of a batched inference of `model` (a REVTAF) as plain data for the demo (exist_prob, exists, position [B,75] are the
    entity model's triplets; `overridden` the findings a what-if set)."""
    shown = model.cfg.neighbours_shown
    neighbours = []
    for dist, row in zip(out.neighbour_dist[b, :shown].tolist(), out.neighbour_index[b, :shown].tolist()):
        sid = model.bank_ids[row]
        neighbours.append(Neighbour(sid, float(dist), labels_to_dict(model.bank_labels[row].tolist()),
                                    report_lookup(sid) if report_lookup else None))
    thresholds = model.cfg.positive_thresholds or [None] * len(LABEL_NAMES_18)
    diseases = [
        DiseaseState(name, STATES[int(out.states[b, i])],
                     {s: float(out.probs[b, i, j]) for j, s in enumerate(STATES)},
                     "user" if name in overridden else "model", thresholds[i])
        for i, name in enumerate(LABEL_NAMES_18)
    ]
    entities = [
        EntityPrompt(m, name, ENTITY_GROUPS[m], float(exist_prob[b, m]), bool(exists[b, m]),
                     ANATOMIES_51[int(position[b, m])],
                     triplet_sentence(m, int(position[b, m]), bool(exists[b, m])),
                     ENTITY_LABELS[m], POSITION_LABELS[int(position[b, m])])
        for m, name in enumerate(ENTITIES_75)
    ]
    views = model.cfg.visual.views
    side = map_side(out.fused, views)
    lateral = views > 1 and (out.has_lateral is None or bool(out.has_lateral[b]))
    n_grp = int(out.grp_mask[b].sum()) if out.grp_mask is not None else 0
    grp_sentences = []
    if n_grp and neighbours and neighbours[0].report:
        # The bank's GRP rows are split_sentences(clean_report(text)) in this order; shown tidied.
        sentences = split_sentences(clean_report(neighbours[0].report, model.cfg.dataset))[:n_grp]
        grp_sentences = [" ".join(s.split()).rstrip(" .") for s in sentences]
    lrp_maps = _maps(out.fused.local_maps, b, len(ENTITIES_75), side)
    grp_maps = _maps(out.fused.global_maps, b, n_grp, side)
    lateral_lrp_maps = _maps(out.fused.local_maps, b, len(ENTITIES_75) if lateral else 0, side, 1)
    lateral_grp_maps = _maps(out.fused.global_maps, b, n_grp if lateral else 0, side, 1)
    if out.fcc is not None:
        similarity = out.fcc.similarity[b, :, :n_grp].float().cpu().numpy()
        overlap = out.fcc.overlap[b, :, :n_grp].float().cpu().numpy()
    else:
        similarity = overlap = np.zeros((len(lrp_maps), len(grp_maps)), dtype=np.float32)
    return Prediction(
        report=out.reports[b],
        diseases=diseases,
        neighbours=neighbours,
        grp_sentences=grp_sentences,
        entities=entities,
        lrp_maps=lrp_maps,
        grp_maps=grp_maps,
        lateral_lrp_maps=lateral_lrp_maps,
        lateral_grp_maps=lateral_grp_maps,
        fcc_similarity=similarity,
        fcc_overlap=overlap,
        ablation={name: name not in ablate for name in sorted(model.ablations)},
        sentences=[] if out.planned is None else sentences_with_evidence(
            out.planned[b].sentences, diseases, grp_sentences, similarity, overlap),
        missed_findings=[] if out.planned is None else [
            LABEL_NAMES_18[i] for t in out.planned[b].missed for i in sorted(t.positives)],
        timings_ms=dict(timings),
    )


def sentences_with_evidence(sentences: list[PlannedSentence], diseases: list[DiseaseState], grp_sentences: list[str],
                            similarity: np.ndarray, overlap: np.ndarray) -> list[ReportSentence]:
    """A report's planned sentences with their evidence (`sentence_evidence`); the retrieved sentences are read by
    the labeler once for all of them."""
    retrieved = [Retrieved(text, _content_words(text), {i for i, _ in sentence_topic(text).labels})
                 for text in grp_sentences]
    return [sentence_evidence(s, diseases, retrieved, similarity, overlap) for s in sentences]


def sentence_evidence(sentence: PlannedSentence, diseases: list[DiseaseState], retrieved: list[Retrieved],
                      similarity: np.ndarray, overlap: np.ndarray) -> ReportSentence:
    """A planned sentence with its evidence: the classifier's probability of each state it states; the entity it
    mentions (the triplet reader on the sentence: a mention in the topic's polarity first), whose LRP map shows
    where; the retrieved sentence that says most alike (`closest_retrieved`); and that entity-sentence pair's S and
    O in the FCC ([75,N] each)."""
    states = {d.name: d for d in diseases}
    findings = {LABEL_NAMES_18[i]: "positive" if p else "negative" for i, p in sentence.topic.labels}
    record = ReportSentence(
        sentence.text, sentence.topic.tokens, findings,
        {name: states[name].probs["uncertain" if state == "positive" and states[name].state == "uncertain" else state]
         for name, state in findings.items()},
        any(states[name].source == "user" for name in findings))
    if retrieved:
        j, score = closest_retrieved(sentence, retrieved)
        if j is not None:
            record.grp_index, record.grp_sentence, record.grp_similarity = j, retrieved[j].text, score
    mentions = sentence_mentions(sentence.text)  # (entity, state, position) in reading order
    if not mentions:
        return record
    positive = bool(sentence.topic.positives)
    e, _, where = next((m for m in mentions if (m[1] in (POSITIVE, UNCERTAIN)) == positive), mentions[0])
    record.entity, record.entity_index = ENTITY_LABELS[e], e
    record.position = POSITION_LABELS[where] if ANATOMIES_51[where] != "unspecified" else None
    # the FCC holds no row for an entity with the LRPs switched off, no column without GRPs: [0,N] or [75,0]
    if record.grp_index is not None and e < similarity.shape[0] and record.grp_index < similarity.shape[1]:
        record.fcc_similarity = float(similarity[e, record.grp_index])
        record.fcc_overlap = float(overlap[e, record.grp_index])
    return record


# Words that make two sentences look alike without saying anything alike ("there is xxxx ... of the").
_FILLER = frozenset("there is are a an the of in on at to with and xxxx".split())
MIN_ALIKE = 0.25  # below it, and about no common finding, no retrieved sentence is shown (one shared word)


@dataclass
class Retrieved:
    """A retrieved (GRP) sentence as `closest_retrieved` compares it: its text, content words and labels."""

    text: str
    words: str
    labels: set[int]


def _content_words(text: str) -> str:
    return " ".join(w for w in text.replace(".", " ").split() if w not in _FILLER)


def closest_retrieved(sentence: PlannedSentence, retrieved: list[Retrieved]) -> tuple[int | None, float]:
    """(index, ROUGE-L F) of the retrieved sentence that says most alike, or (None, 0) when none does: one about
    a finding the sentence states first (the labeler per sentence; "the heart is top normal in size" for "the
    heart is mildly enlarged"), then the most content words in common in order (ROUGE-L, pycocoevalcap's)."""
    labels, words, rouge = {i for i, _ in sentence.topic.labels}, _content_words(sentence.text), Rouge()
    scores = [rouge.calc_score([words], [r.words]) if r.words else 0.0 for r in retrieved]
    shared = [bool(labels & r.labels) for r in retrieved]
    best = max(range(len(retrieved)), key=lambda j: (shared[j], scores[j]))
    return (best, float(scores[best])) if shared[best] or scores[best] >= MIN_ALIKE else (None, 0.0)


def state_overrides(states: Mapping[str, str] | None, n: int, device) -> torch.Tensor | None:
    """{finding: state name} -> [n,18] state indices, -1 where the classifier's state stays; None for no override."""
    if not states:
        return None
    check_states(states)
    row = torch.full((len(LABEL_NAMES_18),), -1, dtype=torch.long)
    for name, state in states.items():
        row[LABEL_NAMES_18.index(name)] = STATES.index(state)
    # a finding the user calls positive or uncertain means the study is not normal (unless the user says otherwise)
    if "No Finding" not in states and any(row[i] in (POSITIVE, UNCERTAIN) for i in PATHOLOGIES):
        row[NO_FINDING] = NEGATIVE
    return row.expand(n, -1).to(device)


def check_states(states: Mapping[str, str]) -> None:
    """ValueError naming the first unknown finding or state of a what-if {finding: state}."""
    for name, state in states.items():
        if name not in LABEL_NAMES_18:
            raise ValueError(f"unknown finding {name!r}; expected one of {list(LABEL_NAMES_18)}")
        if state not in STATES:
            raise ValueError(f"unknown state {state!r} for {name}; expected one of {list(STATES)}")


def to_pil(image: Image.Image | XrayImage | str | os.PathLike | bytes) -> Image.Image:
    """A file path or bytes (PNG, JPEG, DICOM) are read as the app reads an upload (`revtaf.data.read_image`)."""
    if isinstance(image, (str, os.PathLike, bytes)):
        image = read_image(image)
    if isinstance(image, XrayImage):
        return image.to_pil()
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"expected a file path, bytes, a PIL image or an XrayImage, got {type(image).__name__}")


def map_side(fused: FVTAFOutput, views: int = 1) -> int:
    """The side of one film's square patch grid, of a memory of `views` films' patches."""
    per_view = fused.fc.shape[1] // views
    side = int(round(per_view ** 0.5))
    if side * side * views != fused.fc.shape[1]:
        raise ValueError(f"{fused.fc.shape[1]} patches do not form {views} square map(s)")
    return side


def _maps(maps: torch.Tensor | None, b: int, n: int, side: int, view: int = 0) -> np.ndarray:
    """Row b's first n attention maps [n,V·L] -> film `view`'s part [n,side,side] float32 (empty when the branch
    is off). A map is one distribution over every film's patches: each film's part holds that film's share."""
    if maps is None or n == 0:
        return np.zeros((0, side, side), dtype=np.float32)
    L = side * side
    return maps[b, :n, view * L:(view + 1) * L].float().reshape(n, side, side).cpu().numpy()
