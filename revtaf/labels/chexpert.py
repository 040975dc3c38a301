"""CheXpert-style rule labeler: mention extraction, negation and uncertainty -> 18 labels x 4 states.

The 14 CheXpert observations (docs/method.md §10.3) plus 4 auxiliary classes, the most frequent non-CheXpert
findings of the IU X-Ray training reports (docs/method.md §13.2; counts in docs/labeler.md). States follow the
annotation convention: 0 blank, 1 positive, 2 negative, 3 uncertain.

How a report is read:
1. `sentences` lowercases, splits on sentence punctuation (or the ' . ' of cleaned text) and keeps only
   [a-z0-9] tokens, so raw and cleaned reports read the same. IU's de-identification token `xxxx` stays a
   plain word: it is never a cue, so "no XXXX of pleural effusion" is negated by "no" and "XXXX opacity" is a
   positive opacity.
2. Each observation has mention patterns; a mention is classified by `Sentence.state`, in CheXpert's order:
   strong uncertainty ("cannot exclude") > negation before the mention ("no", "without", "free of", ...) within
   the clause > negation after it ("is not seen", "has resolved") > other uncertainty ("may", "possible",
   "versus", ...) > positive. Clauses end at "but", "however", "although", "which", ...; negation scope also
   ends at a new assertion ("there is", "is seen", "with").
3. Some patterns carry a fixed state: "heart size is normal" is a negative cardiomegaly mention, "heart size
   is upper limits of normal" an uncertain one.
4. Per report: positive if any mention is positive, else uncertain if any is uncertain, else negative if any
   is negative, else blank. "No Finding" is positive only when no pathology (all classes but Support Devices
   and the auxiliary ones) is positive or uncertain, else blank, as in CheXpert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from revtaf.labels.constants import BLANK, CHEXPERT_14, NEGATIVE, POSITIVE, STATES, UNCERTAIN

# ---------------------------------------------------------------------------------------------------------
# Text -> sentences

_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[?!;:\n]")
_TOKEN = re.compile(r"[a-z0-9]+")
# Cleaned text (clean_report_iu) deletes '/', gluing "and/or" into one word.
_GLUED = {"andor": "and or"}


def sentences(text: str) -> list[str]:
    """Sentences of a raw or cleaned report as space-joined lowercase tokens, e.g. 'no pleural effusion'."""
    if not isinstance(text, str):
        raise TypeError(f"report must be a str, got {type(text).__name__}")
    out = []
    for chunk in _SENTENCE_END.split(text.lower()):
        tokens = [_GLUED.get(t, t) for t in _TOKEN.findall(chunk)]
        if tokens:
            out.append(" ".join(tokens))
    return out


# ---------------------------------------------------------------------------------------------------------
# Cues. All patterns run on space-joined tokens, so `\b` and single spaces are the only separators.


def _words(*phrases: str) -> re.Pattern:
    """One pattern matching any of `phrases` (regex fragments) as whole words."""
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b")


# Uncertainty that wins over negation: "cannot exclude pneumonia", "pneumonia is not excluded".
UNCERTAIN_STRONG = _words(
    r"can ?not (?:be )?(?:entirely |completely |definitely |totally |confidently )?"
    r"(?:exclude|excluded|rule out|ruled out)",
    r"could not (?:be )?(?:exclude|excluded|rule out|ruled out)",
    r"not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)",
    r"(?:difficult|impossible|unable) to (?:exclude|rule out|assess for)",
)
# Phrases that hold cue words but are no cues: "no change in the effusion" asserts the effusion, an
# "age indeterminate fracture" is a fracture.
PSEUDO_CUES = _words(
    r"no (?:significant |appreciable |interval |definite |substantial )*(?:change|increase|worsening|progression)",
    r"not (?:significantly |substantially )?(?:changed|increased|only)",
    r"without (?:significant |interval )*change",
    r"no longer seen to be", r"age indeterminate", r"indeterminate age",
)
NEGATION_PRE = _words(
    r"no", r"not", r"without", r"negative for", r"free of", r"clear of", r"clear", r"clearing of", r"absence of",
    r"absent",
    r"resolved", r"resolution of", r"removal of", r"rather than", r"nor", r"neither", r"nothing",
    r"ruled out", r"excluded", r"never", r"negative",
)
# A negation's scope ends where a new assertion starts: "no effusion is seen there is mild atelectasis".
NEGATION_BREAK = _words(
    r"there (?:is|are|has been|have been|was|were)", r"(?:is|are|was|were) (?:seen|noted|present|identified)",
    r"with", r"and (?:a |an )?(?:mild|moderate|severe|small|large|new)", r"(?:is|are) (?:again|also)",
    r"and (?:the|there|heart|lungs?)",
    r"(?:is|are) (?:mildly |moderately |severely |markedly |slightly )?(?:enlarged|increased|prominent)",
    r"(?<!not )(?:demonstrates?|shows?)", r"(?:is|are) (?:stable|unchanged)",
)
NEGATION_POST = _words(
    r"(?:(?:is|are|was|were|has been|have been) )?(?:not|no longer) (?:well |clearly |definitely |convincingly )?"
    r"(?:seen|identified|present|visualized|appreciated|evident|demonstrated|visible|noted|detected|apparent|"
    r"shown|depicted|identifiable|included)",
    r"(?:which )?(?:(?:has|have) )?(?:since )?(?:completely |nearly |largely )?(?:resolved|cleared)",
    r"(?:is|are) (?:now )?(?:absent|gone|negative|excluded)",
    r"(?:has|have) been removed",
    r"(?:(?:appears?|is|are|remains?) )?within (?:the )?(?:normal limits|limits of normal)",
)
# Words allowed between a mention and a post-negation: a list ("effusion or pneumothorax is not seen"),
# never a second predicate ("heart is enlarged effusion is not seen").
_POST_GAP = re.compile(r"^(?: (?!is\b|are\b|was\b|were\b|there\b|has\b|have\b)[a-z0-9]+){0,10} $")
UNCERTAIN_PRE = _words(
    r"may", r"might", r"could", r"possible", r"possibly", r"possibility", r"probable", r"probably", r"likely",
    r"presumably", r"presumed", r"perhaps", r"suggest", r"suggests", r"suggested", r"suggesting", r"suggestive",
    r"suspicious", r"suspect", r"suspected", r"suspicion", r"questionable", r"question of", r"concern",
    r"concerning", r"worrisome", r"versus", r"vs", r"borderline", r"equivocal", r"indeterminate", r"differential",
    r"consider", r"considered", r"and or", r"cannot be determined", r"uncertain", r"apparent", r"favor",
    r"favored", r"question", r"questioned", r"correlat(?:e|ed|ion)", r"clinical setting",
    r"history of", r"(?:to )?rule out", r"(?:evaluate|evaluation|assess|assessment) (?:for|of)",
    r"not (?:definitely|clearly|entirely) (?:excluded|exclude)",
)
UNCERTAIN_POST = _words(
    r"(?:is|are|was|were) (?:also )?(?:possible|possibly|likely|probable|suspected|questionable|questioned|"
    r"suggested|favored|considered|a consideration|borderline|not (?:definitely|clearly) (?:excluded|seen))",
    r"(?:may|might|could) (?:be|also be) (?:present|seen|noted|developing|included)",
    r"(?:may|might|could) not be (?:well )?(?:demonstrated|seen|visible|detected|apparent|identified)",
    r"versus", r"vs", r"or not", r"borderline", r"not (?:definitely|clearly) seen",
    r"(?:is|are) (?:also )?(?:in the differential|(?:another |a )?consideration)",
)
_UNCERTAIN_POST_GAP = 4
# Clause boundaries: no cue reaches across them.
CLAUSE_BREAK = _words(
    r"but", r"however", r"although", r"though", r"which", r"whereas", r"except", r"otherwise", r"aside from",
    r"apart from", r"besides", r"while", r"yet",
)


def _spans(pattern: re.Pattern, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in others)


def _within(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b in spans if lo <= a and b <= hi]


class Sentence:
    """One sentence with its cues located once, so every observation's mentions reuse them."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def pseudo(self) -> list[tuple[int, int]]:
        return _spans(PSEUDO_CUES, self.text)

    def _cues(self, pattern: re.Pattern) -> list[tuple[int, int]]:
        return [s for s in _spans(pattern, self.text) if not _overlaps(s, self.pseudo)]

    @cached_property
    def neg_post(self):
        return self._cues(NEGATION_POST)

    @cached_property
    def breaks(self):
        # "which has resolved" is a post-negation, not a clause boundary.
        return [s for s in _spans(CLAUSE_BREAK, self.text) if not _overlaps(s, self.neg_post)]

    @cached_property
    def strong(self):
        return self._cues(UNCERTAIN_STRONG)

    @cached_property
    def neg_pre(self):
        # "X not seen on the prior exam, healed rib fracture": the "not" of a longer post-negation negates X only.
        return [s for s in self._cues(NEGATION_PRE) if not _overlaps(s, self.strong)
                and not any(a <= s[0] and s[1] <= b and b - a > s[1] - s[0] for a, b in self.neg_post)]

    @cached_property
    def neg_break(self):
        return _spans(NEGATION_BREAK, self.text)

    @cached_property
    def unc_pre(self):
        return [s for s in self._cues(UNCERTAIN_PRE) if not _overlaps(s, self.strong)]

    @cached_property
    def unc_post(self):
        return self._cues(UNCERTAIN_POST)

    def clause(self, start: int, end: int) -> tuple[int, int]:
        """Character bounds of the clause holding text[start:end]."""
        lo = max((b for a, b in self.breaks if b <= start), default=0)
        hi = min((a for a, b in self.breaks if a >= end), default=len(self.text))
        return lo, hi

    def state(self, start: int, end: int) -> int:
        """POSITIVE, NEGATIVE or UNCERTAIN for the mention text[start:end]."""
        # Only cues of the mention's own clause count, before or after it (a cue inside the mention is none).
        lo, hi = self.clause(start, end)
        if _within(self.strong, lo, start) or _within(self.strong, end, hi):
            return UNCERTAIN
        for a, b in _within(self.neg_pre, lo, start):
            if not _within(self.neg_break, b, start):
                return NEGATIVE
        if any(_POST_GAP.match(self.text[end:a]) for a, _ in _within(self.neg_post, end, hi)):
            return NEGATIVE
        if _within(self.unc_pre, lo, start):
            return UNCERTAIN
        if any(len(self.text[end:a].split()) <= _UNCERTAIN_POST_GAP for a, _ in _within(self.unc_post, end, hi)):
            return UNCERTAIN
        return POSITIVE


# Report-level precedence: positive > uncertain > negative > blank.
_RANK = (0, 3, 1, 2)  # state -> rank
_BY_RANK = (BLANK, NEGATIVE, UNCERTAIN, POSITIVE)


def merge_states(states) -> int:
    """One state from many mention states: positive > uncertain > negative > blank."""
    return _BY_RANK[max((_RANK[s] for s in states), default=0)]


# ---------------------------------------------------------------------------------------------------------
# Observations


@dataclass(frozen=True)
class Observation:
    """Mention patterns of one label. `mentions` go through negation/uncertainty; a named group `m` marks the
    mention itself when the pattern also matches context ("heart is mildly <m>enlarged</m>"). `positive`,
    `negative` and `uncertain` patterns assert that state directly ("heart size is normal"). `exclude` vetoes a
    mention that overlaps it ("pericardial effusion" is no pleural effusion)."""

    name: str
    mentions: tuple[str, ...]
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @cached_property
    def _compiled(self):
        # Plain patterns share one regex; each pattern with its own `m` group needs a regex of its own.
        plain = [p for p in self.mentions if "(?P<m>" not in p]
        mentions = [_words(*plain)] if plain else []
        mentions += [_words(p) for p in self.mentions if "(?P<m>" in p]
        asserted = [(state, _words(*ps)) for state, ps in
                    ((POSITIVE, self.positive), (NEGATIVE, self.negative), (UNCERTAIN, self.uncertain)) if ps]
        return mentions, asserted, _words(*self.exclude) if self.exclude else None

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of this observation's mentions in a sentence, vetoed ones removed."""
        mentions, _, exclude = self._compiled
        vetoed = _spans(exclude, text) if exclude else []
        spans = set()
        for pattern in mentions:
            for m in pattern.finditer(text):
                span = m.span("m") if "m" in pattern.groupindex else m.span()
                if not _overlaps(span, vetoed):
                    spans.add(span)
        return sorted(spans)

    def states(self, sentence: Sentence):
        """States of every mention of this observation in `sentence`."""
        _, asserted, _ = self._compiled
        for span in self.mention_spans(sentence.text):
            yield sentence.state(*span)
        for state, pattern in asserted:
            if pattern.search(sentence.text):
                yield state


# Subjects described by size: "heart size is normal", "cardiac silhouette is mildly enlarged".
_HEART = (r"(?:heart|heart size|cardiac (?:silhouette|shadow|contours?|size|borders?)|cardiac and mediastinal "
          r"(?:silhouette|contours?|silhouettes)|cardiomediastinal (?:silhouette|contours?|shadow))")
_MEDIASTINUM = (r"(?:cardiomediastinal (?:silhouettes?|contours?|shadow|size|structures)|cardio mediastinal silhouette|"
                r"mediastinum|mediastinal (?:silhouettes?|contours?|shadow|width|structures)|cardiomediastinum)")
_VESSELS = r"(?:vascular|vasculature|vascularity|vessels)"
_GAP = r"(?: [a-z0-9]+){0,%d}? "
_NORMAL = r"(?:normal|within normal limits|unremarkable|wnl|normal in size|not enlarged)"
_BIG = r"(?:enlarged|enlargement|large|increased|increase|prominent|prominence|widened|widening)"
_UPPER_NORMAL = (r"(?:upper limits? (?:of )?normal|upper normal|top normal|top of normal|high normal|"
                 r"upper range of normal)")


def _size(subject: str, big: str, window: int = 6) -> tuple[str, ...]:
    """'<subject> ... <m>big</m>' and '<m>big</m> (of the) <subject>' mention patterns."""
    return (subject + _GAP % window + rf"(?P<m>{big})", rf"(?P<m>{big})(?: of| in)?(?: the)?(?: [a-z]+)?? " + subject)


# CheXpert-style definitions of the first 13 observations; "No Finding" is derived, not matched.
OBSERVATIONS = (
    Observation(
        "Enlarged Cardiomediastinum",
        mentions=_size(_MEDIASTINUM, r"(?:enlarged|enlargement|widened|widening|wide|prominent|prominence)")
        + (r"mediastinal (?:widening|enlargement|prominence|mass|lymphadenopathy|adenopathy)",),
        negative=(_MEDIASTINUM + _GAP % 7 + _NORMAL, r"normal" + _GAP % 4 + _MEDIASTINUM),
    ),
    Observation(
        "Cardiomegaly",
        mentions=(r"cardiomegaly", r"cardiac enlargement", r"enlarged cardiac", r"enlarged heart",
                  r"(?:left|right|biventricular) (?:ventricular|atrial) (?:enlargement|hypertrophy)")
        + _size(_HEART, _BIG, 5),
        negative=(_HEART + _GAP % 7 + _NORMAL, rf"normal (?:size |sized )?{_HEART}", r"heart normal"),
        # MeSH grades cardiomegaly mild/moderate/severe/borderline: "borderline" is a grade here, not a hedge.
        positive=(r"borderline (?:cardiomegaly|enlarged|enlargement|heart size|cardiac)",
                  _HEART + _GAP % 3 + r"borderline (?:enlarged|in size|enlargement)"),
        uncertain=(_HEART + _GAP % 5 + _UPPER_NORMAL,),
        exclude=(r"upper limits? of normal", r"enlarged (?:hilar|lymph|pulmonary)"),
    ),
    Observation(
        "Lung Opacity",
        mentions=(r"opacit(?:y|ies)", r"opacification", r"opacified",
                  r"air ?space (?:disease|opacit(?:y|ies)|process|filling)",
                  r"infiltrat(?:e|es|ion|ive|ions)", r"densit(?:y|ies)", r"haziness", r"hazy", r"ground glass",
                  r"interstitial (?:markings?|prominence|opacit(?:y|ies)|pattern|changes?|disease|lung disease|"
                  r"thickening)",
                  r"reticular(?:nodular)?", r"reticulonodular", r"alveolar (?:disease|process|filling)"),
        exclude=(r"(?:calcified|calcific|bone|bony|soft tissue|osseous|sclerotic) densit(?:y|ies)",
                 r"densit(?:y|ies) (?:of|in|within|over) the (?:spine|vertebra|rib|bone)"),
    ),
    Observation(
        "Lung Lesion",
        mentions=(r"nodules?", r"masses", r"mass", r"(?:lung|pulmonary|cavitary|cavitating|"
                  r"parenchymal|lobe) lesions?", r"lesions?", r"tumou?r", r"neoplasms?", r"carcinoma", r"malignancy",
                  r"metastas(?:is|es)", r"metastatic disease", r"cavitation", r"cavitary"),
        exclude=(r"mass effect", r"(?:lytic|sclerotic|blastic|bony|bone|osseous|skin|breast) (?:lesions?|mass)",
                 r"lesions? (?:of|in) the (?:spine|bone|rib)"),
    ),
    Observation(
        "Edema",
        mentions=(r"edema", r"oedema", r"heart failure", r"chf", r"(?:vascular|venous|pulmonary) congestion",
                  r"congestive", r"congestion", r"kerley", r"cephalization",
                  r"vascular (?:engorgement|redistribution|prominence)", r"(?:pulmonary )?venous hypertension",
                  rf"{_VESSELS}(?: is| are| appears?)?(?: \w+)?? (?P<m>prominent|engorged|increased)",
                  rf"(?:prominen(?:t|ce)|engorge(?:d|ment)|increased)(?: of)?(?: the)?(?: central)?(?: pulmonary)? "
                  rf"{_VESSELS}"),
        exclude=(r"(?:soft tissue|subcutaneous) edema",),
    ),
    Observation(
        "Consolidation",
        mentions=(r"consolidations?", r"consolidative", r"consolidated", r"consolidating"),
    ),
    Observation(
        "Pneumonia",
        mentions=(r"pneumonias?", r"pneumonitis", r"bronchopneumonia", r"infectious (?:process|infiltrate)",
                  r"infections?", r"infected", r"infectious"),
        exclude=(r"(?:granulomatous|tuberculosis|tuberculous|tb) (?:infection|infectious|disease|process|pneumonia)",),
    ),
    Observation(
        "Atelectasis",
        mentions=(r"atelectas(?:is|es)", r"atelectatic", r"(?:lobar|lung|lobe|segmental) collapse",
                  r"collapsed? (?:lung|lobe)", r"collapse of the(?: [a-z]+){0,4}? (?:lung|lobes?)"),
    ),
    Observation(
        "Pneumothorax",
        mentions=(r"pneumothora(?:x|ces)", r"hydropneumothorax", r"hemopneumothorax"),
    ),
    Observation(
        "Pleural Effusion",
        mentions=(r"effusions?", r"pleural fluid", r"hydrothorax", r"hydropneumothorax", r"hemothorax",
                  r"hemopneumothorax", r"fluid (?:in|within) the (?:\w+ )?fissure"),
        exclude=(r"pericardial effusions?", r"joint effusions?"),
    ),
    Observation(
        "Pleural Other",
        mentions=(r"pleural (?:thickening|scarring|scar|plaques?|calcifications?|fibrosis|reaction)",
                  r"pleural parenchymal (?:scarring|scar|thickening)", r"fibrothorax", r"(?:apical )?pleural capping",
                  r"thickening of the pleura", r"pleural based (?:scarring|thickening)"),
    ),
    Observation(
        "Fracture",
        mentions=(r"fractures?", r"fractured", r"fx"),
        exclude=(r"(?:catheter|wire|lead|hardware) fractures?",),
    ),
    Observation(
        "Support Devices",
        mentions=(r"tubes?", r"(?:picc|central|venous|arterial|port|iv|swan ganz|dialysis|ij|subclavian) "
                  r"(?:line|lines|catheter)", r"catheters?", r"pacemakers?", r"pacer", r"aicd", r"icd",
                  r"defibrillator", r"(?:pacer|pacemaker|cardiac|transvenous) leads?", r"leads", r"sternotomy wires?",
                  r"wires?", r"(?:surgical|vascular) clips?", r"clips", r"stents?", r"port a cath", r"portacath",
                  r"mediport", r"port", r"valve (?:replacement|prosthesis)",
                  r"prosthetic valve", r"hardware", r"drains?", r"devices?", r"generator", r"electrodes?", r"picc",
                  r"(?:spinal|cervical) fusion", r"prosthesis", r"arthroplasty", r"sutures?", r"staples?", r"coils?",
                  r"cabg", r"plates?", r"screws?", r"rods?", r"implants?"),
        exclude=(r"rib plates?", r"(?:breast|nipple) implants?"),
    ),
)
assert tuple(o.name for o in OBSERVATIONS) == CHEXPERT_14[:13]

# The 4 auxiliary classes: the most frequent non-CheXpert findings of the IU training reports, counted with
# these very patterns (docs/labeler.md has the counts and the runners-up).
_AORTA = r"(?:aorta|aortic(?: arch| knob| contour)?)"
_AORTA_CHANGE = (r"(?:tortuous|tortuosity|ectatic|ectasia|unfolded|unfolding|calcified|calcifications?|calcific|"
                 r"atherosclerotic)")
AUXILIARY = (
    Observation(
        "Degenerative Changes",
        mentions=(r"degenerative", r"degeneration", r"spondylosis", r"spondylitic", r"spondylotic", r"osteophytes?",
                  r"osteophytic", r"osteoarthritis", r"arthritic", r"arthritis", r"dish", r"spurring"),
    ),
    Observation(
        "Granuloma",
        mentions=(r"granulomas?", r"granulomata", r"granulomatous", r"calcified (?:nodules?|densit(?:y|ies))",
                  r"calcific densit(?:y|ies)"),
    ),
    Observation(
        "Aortic Tortuosity/Atherosclerosis",
        mentions=(r"atherosclero(?:sis|tic)", _AORTA + _GAP % 6 + rf"(?P<m>{_AORTA_CHANGE})",
                  rf"(?P<m>{_AORTA_CHANGE})(?: [a-z0-9]+){{0,5}}? {_AORTA}"),
    ),
    Observation(
        "Low Lung Volumes",
        mentions=(r"low (?:lung )?volumes?", r"hypoinflat(?:ed|ion)", r"hypoventilat(?:ed|ion)",
                  r"(?:poor|shallow|suboptimal) inspirat(?:ion|ory effort)",
                  r"(?:decreased|diminished|reduced) lung volumes?",
                  r"lung volumes(?: [a-z]+){0,2}? (?P<m>low|decreased|diminished|reduced)"),
        negative=(r"(?:normal|adequate|good) lung volumes?",
                  r"lung volumes(?: [a-z]+){0,2}? (?:normal|adequate|preserved)"),
    ),
)

LABEL_NAMES_18 = CHEXPERT_14 + tuple(o.name for o in AUXILIARY)
NO_FINDING = CHEXPERT_14.index("No Finding")
SUPPORT_DEVICES = CHEXPERT_14.index("Support Devices")
_MATCHED = OBSERVATIONS + AUXILIARY
_MATCHED_INDEX = [LABEL_NAMES_18.index(o.name) for o in _MATCHED]
# CheXpert: "No Finding" only when no pathology is positive or uncertain (devices and auxiliaries don't count).
_PATHOLOGIES = [i for i in range(NO_FINDING) if i != SUPPORT_DEVICES]


@lru_cache(maxsize=1 << 16)
def _sentence_ranks(text: str) -> tuple[int, ...]:
    """Precedence rank of each matched observation in one sentence (cached: report sentences repeat a lot)."""
    sentence = Sentence(text)
    return tuple(_RANK[merge_states(obs.states(sentence))] for obs in _MATCHED)


class RuleLabeler:
    """Reports -> int8 [n, 18] states (0 blank, 1 positive, 2 negative, 3 uncertain), order LABEL_NAMES_18."""

    names = LABEL_NAMES_18

    def label_report(self, text: str) -> np.ndarray:
        """One report (raw or cleaned) -> int8 [18]."""
        row = np.zeros(len(LABEL_NAMES_18), dtype=np.int8)
        ranks = [_sentence_ranks(sent) for sent in sentences(text)]
        if ranks:
            row[_MATCHED_INDEX] = np.take(_BY_RANK, np.max(ranks, axis=0))
        if not np.isin(row[_PATHOLOGIES], (POSITIVE, UNCERTAIN)).any():
            row[NO_FINDING] = POSITIVE
        return row

    def sentence_states(self, sentence: str) -> np.ndarray:
        """One sentence -> int8 [18]: what it states of each label, BLANK where it says nothing (no No Finding
        rule: a sentence that states no finding does not say the study is normal)."""
        row = np.zeros(len(LABEL_NAMES_18), dtype=np.int8)
        for sent in sentences(sentence):
            row[_MATCHED_INDEX] = np.maximum(row[_MATCHED_INDEX], _sentence_ranks(sent))
        row[_MATCHED_INDEX] = np.take(_BY_RANK, row[_MATCHED_INDEX])
        return row

    def finding_sentences(self, text: str) -> list[bool]:
        """For each "."-ended piece of a cleaned report, whether it states a finding: a positive or uncertain
        CheXpert observation other than No Finding (devices included), e.g. "the heart is enlarged"."""
        pieces = text.split(".")
        if pieces and not pieces[-1].strip():
            pieces = pieces[:-1]
        return [bool(np.isin(self.label_report(piece)[:NO_FINDING], (POSITIVE, UNCERTAIN)).any()) for piece in pieces]

    def __call__(self, reports: list[str]) -> np.ndarray:
        """list of n reports -> int8 [n, 18]."""
        if isinstance(reports, str):
            raise TypeError("expected a list of reports, got a single str; wrap it in a list")
        out = np.zeros((len(reports), len(LABEL_NAMES_18)), dtype=np.int8)
        for i, text in enumerate(reports):
            out[i] = self.label_report(text)
        return out


def labels_to_dict(row) -> dict[str, str]:
    """int [18] -> {label name: state name}, e.g. {'Cardiomegaly': 'positive', ...}."""
    row = np.asarray(row)
    if row.shape != (len(LABEL_NAMES_18),):
        raise ValueError(f"expected a label row of shape ({len(LABEL_NAMES_18)},), got {row.shape}")
    if row.min() < 0 or row.max() >= len(STATES):
        raise ValueError(f"label states must be in 0..{len(STATES) - 1}, got {row.tolist()}")
    return {name: STATES[int(s)] for name, s in zip(LABEL_NAMES_18, row)}
