"""Sentence topics: what each sentence of a report states, and the plan a report is written to (ours, not in
REVTAF; docs/method.md §13.6).

A sentence's topic is read by the rule labeler on the sentence alone: one token per label it states, in label
order ("[t:pleural_effusion:neg] [t:pneumothorax:neg]" for "no pleural effusion or pneumothorax"), the positive
token for a positive or uncertain mention. A sentence that states no label gets one of three topics of its
own: `clear` (the whole study is normal: "no acute cardiopulmonary abnormality"), `lungs_clear` ("the lungs are
clear") and `other` (everything else: "the xxxx are intact").

`TopicPlan` turns a study's 18 states into the rules of a report written to topics: every positive finding
gets a sentence; a finding is stated once; a negative topic only for a negative state; no all-clear sentence
beside a positive finding; the report cannot end before every positive finding has had its sentence.
`TopicPlan.accepts` checks a written sentence against its topic with the same labeler, so "the report states
what the states say, once" is a property of decoding, not of luck.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from revtaf.labels.chexpert import LABEL_NAMES_18, RuleLabeler
from revtaf.labels.constants import BLANK, CHEXPERT_14, NEGATIVE, POSITIVE, UNCERTAIN
from revtaf.labels.triplets import sentence_mentions

NO_FINDING = CHEXPERT_14.index("No Finding")
# Labels a sentence can be about: the 18 but No Finding (a study-level conclusion, stated by `clear`).
TOPIC_LABELS = tuple(i for i in range(len(LABEL_NAMES_18)) if i != NO_FINDING)
# Findings a "the lungs are clear" sentence contradicts.
LUNG_LABELS = frozenset(LABEL_NAMES_18.index(n) for n in (
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other"))
SUPPORT_DEVICES = CHEXPERT_14.index("Support Devices")
# The findings that make a study abnormal (CheXpert: devices do not).
PATHOLOGIES = tuple(i for i in range(NO_FINDING) if i != SUPPORT_DEVICES)
PLAIN_TOPICS = ("clear", "lungs_clear", "other")

# "no acute (cardiopulmonary) abnormality", "normal chest", "no active disease": the study is normal. A bony or
# "other" qualifier makes it a statement about a part ("no acute bony abnormality", "no other abnormality").
_ALL_CLEAR = re.compile(
    r"\b(?:no (?:evidence of )?(?:acute|active)(?: radiographic)?(?: (?:cardiopulmonary|cardiac or pulmonary|"
    r"pulmonary|chest|intrathoracic|thoracic|cardiothoracic|cardiopulmonary or pleural))?"
    r" (?:abnormality|abnormalities|disease|process|findings?|pathology|changes?)"
    r"|normal chest|negative chest|(?:chest|exam|examination|study) (?:is )?(?:normal|negative))\b")
_LUNGS_CLEAR = re.compile(
    r"\b(?:(?:the )?lungs? (?:are |is |appear |remain )?(?:grossly |now |well expanded and )?clear|clear lungs?|"
    r"lungs? (?:are |is |appear )?(?:normal|unremarkable))\b")


# Words that state each label positive, for the plan's last try at a required finding (model/sentence_plan.py):
# that sentence must hold one of them; the decoder writes the words around it. A test reads each as
# "there is {phrase} ." with the labeler: that label positive, nothing else.
STATEMENT_PHRASES = {LABEL_NAMES_18.index(name): phrases for name, phrases in (
    ("Enlarged Cardiomediastinum", ("widened mediastinum", "mediastinal widening", "enlarged mediastinum")),
    ("Cardiomegaly", ("cardiomegaly", "enlarged heart", "cardiac enlargement")),
    ("Lung Opacity", ("opacity", "opacities", "airspace disease", "infiltrate", "opacification")),
    ("Lung Lesion", ("nodule", "nodules", "mass", "lesion")),
    ("Edema", ("edema", "vascular congestion")),
    ("Consolidation", ("consolidation",)),
    ("Pneumonia", ("pneumonia", "infection")),
    ("Atelectasis", ("atelectasis", "atelectatic")),
    ("Pneumothorax", ("pneumothorax",)),
    ("Pleural Effusion", ("effusion", "effusions", "pleural fluid")),
    ("Pleural Other", ("pleural thickening", "pleural scarring", "pleural capping")),
    ("Fracture", ("fracture", "fractures")),
    ("Support Devices", ("pacemaker", "catheter", "tube", "sternotomy wires", "clips", "device")),
    ("Degenerative Changes", ("degenerative", "spondylosis", "osteophytes")),
    ("Granuloma", ("granuloma", "granulomas")),
    ("Aortic Tortuosity/Atherosclerosis", ("tortuous aorta", "atherosclerotic", "aortic calcification")),
    ("Low Lung Volumes", ("low lung volumes", "hypoinflation")),
)}
# Words that are not a mention alone but make one: "calcified nodule" is read as a granuloma.
_TRIGGERS = {LABEL_NAMES_18.index("Granuloma"): ("calcified", "calcific")}


def mention_words(label: int) -> tuple[str, ...]:
    """The words of a label's statement phrases that mention it alone ("nodule" for Lung Lesion), and the
    triggers above: banned from a required finding's last try when the plan does not allow this label."""
    words = {w for p in STATEMENT_PHRASES.get(label, ()) for w in p.split()}
    alone = sorted(w for w in words if label in sentence_topic(f"there is {w} .").positives)
    return tuple(alone) + _TRIGGERS.get(label, ())


# The labeler's one-word negation and hedge cues (chexpert.py: NEGATION_PRE/POST, UNCERTAIN_PRE/POST and their
# parts): never written in that try, so the phrase it holds reads positive.
HEDGE_WORDS = (
    "no", "not", "without", "negative", "free", "clear", "cleared", "absence", "absent", "resolved", "resolution",
    "removal", "removed", "rather", "nor", "neither", "nothing", "excluded", "exclude", "never", "gone", "limits",
    "normal", "longer", "may", "might", "could", "cannot", "possible", "possibly", "possibility", "probable",
    "probably", "likely", "presumably", "presumed", "perhaps", "suggest", "suggests", "suggested", "suggesting",
    "suggestive", "suspicious", "suspect", "suspected", "suspicion", "questionable", "question", "questioned",
    "concern", "concerning", "worrisome", "versus", "vs", "borderline", "equivocal", "indeterminate", "differential",
    "consider", "considered", "uncertain", "apparent", "favor", "favored", "correlate", "correlation", "history",
    "rule", "evaluate", "evaluation", "assess", "assessment", "or", "consideration",
)
# Clause breaks ("but", "however", ...) start a new clause that could say anything: banned in that try too.
CLAUSE_WORDS = ("but", "however", "although", "though", "which", "whereas", "except", "otherwise", "while", "yet")


def topic_token(label: int | str, positive: bool | None = None) -> str:
    """"[t:cardiomegaly:pos]" for a label index and state, or "[t:clear]" for a plain topic name."""
    if isinstance(label, str):
        if label not in PLAIN_TOPICS:
            raise ValueError(f"unknown plain topic {label!r}; expected one of {PLAIN_TOPICS}")
        return f"[t:{label}]"
    name = LABEL_NAMES_18[label].lower().replace("/", "_").replace(" ", "_")
    return f"[t:{name}:{'pos' if positive else 'neg'}]"


TOPIC_TOKENS = tuple([topic_token(i, p) for i in TOPIC_LABELS for p in (True, False)]
                     + [topic_token(t) for t in PLAIN_TOPICS])
TOKEN_ORDER = {t: i for i, t in enumerate(TOPIC_TOKENS)}  # a sentence's label tokens come in this order
_LABEL_OF = {topic_token(i, p): (i, p) for i in TOPIC_LABELS for p in (True, False)}


def is_all_clear(sentence: str) -> bool:
    return bool(_ALL_CLEAR.search(" ".join(sentence.lower().split())))


def is_lungs_clear(sentence: str) -> bool:
    s = " ".join(sentence.lower().split())
    return bool(_LUNGS_CLEAR.search(s)) and "otherwise" not in s


# An organ called normal in words the labeler reads as no label's negative ("the thoracic aorta is normal" says
# nothing of tortuosity to it, and one of IU's 2,069 training reports says it): beside that label positive, the
# report contradicts itself. v8 wrote "the thoracic aorta is tortuous" and "the thoracic aorta is normal" in 13
# of the 67 test reports that state tortuosity.
_ORGAN_NORMAL = {
    LABEL_NAMES_18.index("Aortic Tortuosity/Atherosclerosis"): re.compile(
        r"\b(?:aorta|aortic (?:arch|knob|contours?|silhouette))(?: is| are| appears?| remains?)?(?: grossly)?"
        r" (?:normal|within normal limits|unremarkable)\b|\bnormal (?:thoracic )?(?:aorta|aortic)\b"),
}


def organs_called_normal(sentence: str) -> frozenset[int]:
    """The labels whose organ `sentence` calls normal (`_ORGAN_NORMAL`); none after an "otherwise"."""
    s = " ".join(sentence.lower().split())
    return frozenset() if "otherwise" in s else frozenset(i for i, p in _ORGAN_NORMAL.items() if p.search(s))


@dataclass(frozen=True)
class Topic:
    """What one sentence states: {label index: positive?} and, when it states no label, a plain topic."""

    labels: tuple[tuple[int, bool], ...] = ()
    plain: str | None = None

    @property
    def tokens(self) -> list[str]:
        return [topic_token(i, p) for i, p in self.labels] if self.labels else [topic_token(self.plain)]

    @property
    def positives(self) -> frozenset[int]:
        return frozenset(i for i, p in self.labels if p)


_LABELER = RuleLabeler()


def sentence_topic(sentence: str) -> Topic:
    """The topic of one sentence (cleaned text, with or without its period)."""
    states = _LABELER.sentence_states(sentence)
    labels = tuple((i, int(states[i]) in (POSITIVE, UNCERTAIN)) for i in TOPIC_LABELS if states[i] != BLANK)
    if labels:
        return Topic(labels)
    return Topic(plain="clear" if is_all_clear(sentence) else "lungs_clear" if is_lungs_clear(sentence) else "other")


def split_report(report: str) -> list[str]:
    """A cleaned report's sentences, each ending in " ." (the cleaner turns every period into a sentence end)."""
    return [f"{s.strip()} ." for s in report.split(".") if s.strip()]


def tag_report(report: str) -> list[tuple[str, Topic]]:
    """[(sentence, its topic)] of a cleaned report."""
    return [(s, sentence_topic(s)) for s in split_report(report)]


def report_consistency(report: str, findings: Sequence[int] = tuple(range(NO_FINDING))) -> dict:
    """How a report reads sentence by sentence, over `findings` (default: the 13 CheXpert findings):
    {"repeated": labels stated in two or more sentences, "clear_beside_positive": an all-clear sentence
    ("no acute abnormality", or "the lungs are clear" beside a lung finding) in a report that states a finding
    positive, "normal_beside_positive": an organ called normal beside its finding stated positive (the aorta:
    `organs_called_normal`), "positive": the labels stated positive or uncertain}."""
    stated: dict[int, int] = {}
    positive, clear, lungs_clear = set(), False, False
    called_normal, organ_positive = set(), set()
    for sentence in split_report(report):
        states = _LABELER.sentence_states(sentence)
        for i in findings:
            if states[i] != BLANK:
                stated[i] = stated.get(i, 0) + 1
            if states[i] in (POSITIVE, UNCERTAIN):
                positive.add(i)
        organ_positive |= {i for i in _ORGAN_NORMAL if states[i] in (POSITIVE, UNCERTAIN)}
        called_normal |= organs_called_normal(sentence)
        clear |= is_all_clear(sentence)
        lungs_clear |= is_lungs_clear(sentence)
    pathologies = positive - {SUPPORT_DEVICES}
    return {"repeated": sorted(i for i, n in stated.items() if n > 1),
            "clear_beside_positive": bool(pathologies and (clear or (lungs_clear and pathologies & LUNG_LABELS))),
            "normal_beside_positive": bool(called_normal & organ_positive),
            "positive": sorted(positive)}


@dataclass
class TopicPlan:
    """The rules a report of one study is written to, from its 18 states (0 blank, 1 positive, 2 negative,
    3 uncertain). `used` grows as sentences are written.

    - a positive state requires a sentence with its positive topic; an uncertain one allows it;
    - a negative state allows its negative topic; a blank one allows nothing of its label;
    - each label is stated once; `clear` only when no pathology is positive or uncertain, `lungs_clear` only
      when no lung finding is; `other` at most `max_other` times.
    """

    states: np.ndarray
    max_other: int = 2
    used: set[int] = field(default_factory=set)
    plain_used: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states).astype(np.int64)
        if self.states.shape != (len(LABEL_NAMES_18),):
            raise ValueError(f"states must have {len(LABEL_NAMES_18)} entries, got {self.states.shape}")
        positive = {i for i in TOPIC_LABELS if self.states[i] in (POSITIVE, UNCERTAIN)}
        self.pathologies = positive - {SUPPORT_DEVICES}
        self.required = frozenset(i for i in TOPIC_LABELS if self.states[i] == POSITIVE)

    @property
    def missing(self) -> frozenset[int]:
        """Positive labels without their sentence yet."""
        return self.required - self.used

    def allowed_tokens(self, chosen: Sequence[str] = ()) -> list[str]:
        """Topic tokens that may come next: after `chosen` (tokens already before this sentence) only label tokens
        later in label order, and no plain topic."""
        after = max((TOKEN_ORDER[t] for t in chosen), default=-1)
        out = []
        for i in TOPIC_LABELS:
            if i in self.used:
                continue
            s = self.states[i]
            if s in (POSITIVE, UNCERTAIN):
                out.append(topic_token(i, True))
            elif s == NEGATIVE:
                out.append(topic_token(i, False))
        out = [t for t in out if TOKEN_ORDER[t] > after]
        if not chosen:
            if not self.pathologies and self.plain_used.get("clear", 0) == 0:
                out.append(topic_token("clear"))
            if not self.pathologies & LUNG_LABELS and self.plain_used.get("lungs_clear", 0) == 0:
                out.append(topic_token("lungs_clear"))
            if self.plain_used.get("other", 0) < self.max_other:
                out.append(topic_token("other"))
        return out

    def required_tokens(self) -> list[str]:
        return [topic_token(i, True) for i in sorted(self.missing)]

    def can_end(self) -> bool:
        return not self.missing

    def accepts(self, topic: Topic, sentence: str) -> bool:
        """Whether `sentence` states exactly its topic (the labeler per sentence) and breaks no rule. An `other`
        sentence must mention an entity (the triplet reader): the small decoder's fragments ("the right upper lobe
        .", "there are present in the thoracic spine .") mention none; of the training reports' `other` sentences
        a quarter do not either, mostly headers ("pa and lateral views of the chest were obtained")."""
        if topic.plain == "other" and not sentence_mentions(sentence):
            return False
        return sentence_topic(sentence) == topic and self.admits(topic, sentence)

    def admits(self, topic: Topic, sentence: str) -> bool:
        """Whether a sentence that states `topic` breaks no rule: each label it states unused and allowed by its
        state (positive: a positive or uncertain state; negative: a negative one), no all-clear beside a positive,
        no organ called normal beside its positive finding (`organs_called_normal`)."""
        for i, positive in topic.labels:
            if i in self.used or self.states[i] not in ((POSITIVE, UNCERTAIN) if positive else (NEGATIVE,)):
                return False
        if self.pathologies and is_all_clear(sentence):
            return False
        if any(self.states[i] in (POSITIVE, UNCERTAIN) for i in organs_called_normal(sentence)):
            return False
        return not (self.pathologies & LUNG_LABELS and is_lungs_clear(sentence))

    def commit(self, topic: Topic) -> None:
        self.used.update(i for i, _ in topic.labels)
        if topic.plain:
            self.plain_used[topic.plain] = self.plain_used.get(topic.plain, 0) + 1


def topic_from_tokens(tokens: Sequence[str]) -> Topic:
    """The Topic that a run of topic tokens names."""
    labels = tuple(_LABEL_OF[t] for t in tokens if t in _LABEL_OF)
    return Topic(labels) if labels else Topic(plain=tokens[-1][3:-1])
