"""Report -> MedKLIP-style (entity, position, exist) triplets, the targets of the offline entity model.

Only TRAINING reports are read this way (docs/method.md §13.2); val/test images get their triplets from the entity
model's predictions. For each of the 75 MedKLIP entities (docs/method.md §10.1):
- exist: 1 present, 0 absent (negated), -1 not mentioned. Mentions are classified by the same negation and
  uncertainty machinery as the CheXpert labeler; uncertain mentions count as present (a hedged finding is
  still a finding the image should show).
- position: one of the 51 MedKLIP anatomies (§10.2), from the anatomy phrase nearest to the mention in the
  same sentence ("right lower lobe" -> lower_right_lobe), else `unspecified`.
An LRP is the text `triplet_sentence(entity, position, exist)`; MedKLIP's anatomy book is `anatomy_sentence`.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from revtaf.labels.chexpert import Sentence, merge_states, sentences
from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75, POSITIVE, UNCERTAIN, UNSPECIFIED_POSITION

PRESENT, ABSENT, UNMENTIONED = 1, 0, -1

# Entity keyword patterns: the MedKLIP word with its inflections and close synonyms.
_ENTITY_PATTERNS: dict[str, tuple[str, ...]] = {
    "normal": (r"normal", r"normally"),
    "clear": (r"clear", r"clearing"),
    "sharp": (r"sharp",),
    "sharply": (r"sharply",),
    "unremarkable": (r"unremarkable",),
    "intact": (r"intact",),
    "stable": (r"stable", r"unchanged"),
    "free": (r"free",),
    "effusion": (r"effusions?",),
    "opacity": (r"opacit(?:y|ies)", r"opacification", r"opacified"),
    "pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax"),
    "edema": (r"edema", r"oedema"),
    "atelectasis": (r"atelectas(?:is|es)", r"atelectatic"),
    "tube": (r"tubes?", r"tubing"),
    "consolidation": (r"consolidations?", r"consolidative", r"consolidated"),
    "process": (r"process(?:es)?",),
    "abnormality": (r"abnormalit(?:y|ies)", r"abnormal"),
    "enlarge": (r"enlarged?", r"enlargement", r"enlarging"),
    "tip": (r"tips?",),
    "low": (r"low", r"lower lung volumes?"),
    "pneumonia": (r"pneumonias?", r"pneumonitis", r"bronchopneumonia"),
    "line": (r"lines?",),
    "congestion": (r"congestion", r"congested", r"congestive"),
    "catheter": (r"catheters?",),
    "cardiomegaly": (r"cardiomegaly",),
    "fracture": (r"fractures?", r"fractured"),
    "air": (r"air", r"airspace"),
    "tortuous": (r"tortuous", r"tortuosity"),
    "lead": (r"leads?",),
    "disease": (r"diseases?",),
    "calcification": (r"calcifications?", r"calcified", r"calcific"),
    "prominence": (r"prominence", r"prominent"),
    "device": (r"devices?",),
    "engorgement": (r"engorgement", r"engorged"),
    "picc": (r"picc",),
    "clip": (r"clips?",),
    "elevation": (r"elevation", r"elevated"),
    "expand": (r"expand(?:ed|s)?", r"expansion"),
    "nodule": (r"nodules?", r"nodular"),
    "wire": (r"wires?",),
    "fluid": (r"fluid",),
    "degenerative": (r"degenerative", r"degeneration"),
    "pacemaker": (r"pacemakers?", r"pacer"),
    "thicken": (r"thickening", r"thickened", r"thicken"),
    "marking": (r"markings?",),
    "scar": (r"scars?", r"scarring", r"scarred"),
    "hyperinflate": (r"hyperinflat(?:ed|ion)", r"hyperexpan(?:ded|sion)", r"hyperaerat(?:ed|ion)",
                     r"overinflat(?:ed|ion)"),
    "blunt": (r"blunt(?:ed|ing)?",),
    "loss": (r"loss",),
    "widen": (r"widen(?:ed|ing)?",),
    "collapse": (r"collapsed?",),
    "density": (r"densit(?:y|ies)", r"dense"),
    "emphysema": (r"emphysema", r"emphysematous"),
    "aerate": (r"aerat(?:ed|ion|e)",),
    "mass": (r"mass(?:es)?",),
    "crowd": (r"crowd(?:ed|ing)",),
    "infiltrate": (r"infiltrat(?:e|es|ion|ive)",),
    "obscure": (r"obscur(?:e|ed|es|ing|ation)",),
    "deformity": (r"deformit(?:y|ies)", r"deformed"),
    "hernia": (r"hernias?", r"herniation"),
    "drainage": (r"drain(?:s|age)?",),
    "distention": (r"disten(?:tion|sion|ded)",),
    "shift": (r"shift(?:ed)?",),
    "stent": (r"stents?",),
    "pressure": (r"pressure",),
    "lesion": (r"lesions?",),
    "finding": (r"findings?",),
    "borderline": (r"borderline",),
    "hardware": (r"hardware",),
    "dilation": (r"dilat(?:ion|ation|ed)",),
    "chf": (r"chf", r"congestive heart failure"),
    "redistribution": (r"redistribution",),
    "aspiration": (r"aspiration",),
    # MedKLIP's buckets. [OURS] tail_abnorm_obs: abnormal findings outside the named 73; excluded_obs: fibrosis,
    # the one class of MedKLIP's exclusion list that has no entity of its own (docs/method.md §10.1).
    "tail_abnorm_obs": (r"granulomas?", r"granulomatous", r"cysts?", r"cystic", r"bullae?", r"blebs?",
                        r"bronchiectasis", r"osteopenia", r"osteopenic", r"demineralization", r"scoliosis",
                        r"kyphosis", r"spondylosis", r"osteophytes?", r"atherosclero(?:sis|tic)", r"ectatic",
                        r"ectasia", r"eventration", r"lucency", r"lucencies", r"cavitation", r"cavitary",
                        r"lymphadenopathy", r"adenopathy", r"hypoinflat(?:ed|ion)", r"unfold(?:ed|ing)",
                        r"pneumoperitoneum", r"tuberculosis"),
    "excluded_obs": (r"fibrosis", r"fibrotic"),
}
assert tuple(_ENTITY_PATTERNS) == ENTITIES_75


def _mention_regex() -> re.Pattern:
    """All entity keywords in one pass. The lookahead makes every word start a candidate, so mentions of
    different entities may overlap; at one start the first listed entity wins, hence "chf" ("congestive heart
    failure") is tried before "congestion" ("congestive")."""
    order = sorted(range(len(ENTITIES_75)), key=lambda e: ENTITIES_75[e] != "chf")
    groups = "|".join(f"(?P<e{e}>{'|'.join(_ENTITY_PATTERNS[ENTITIES_75[e]])})" for e in order)
    return re.compile(rf"\b(?=(?:{groups})\b)")


_MENTION = _mention_regex()

_DEVICES = {"tube", "tip", "line", "catheter", "lead", "device", "picc", "clip", "wire", "pacemaker", "drainage",
            "stent", "hardware"}
_NORMAL_DESCRIPTORS = {"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free", "expand",
                       "aerate"}
# Kind of each entity, in ENTITIES_75 order: "finding", "device" or "normal descriptor".
ENTITY_GROUPS: tuple[str, ...] = tuple(
    "device" if e in _DEVICES else "normal descriptor" if e in _NORMAL_DESCRIPTORS else "finding" for e in ENTITIES_75
)

# A radiologist's words for MedKLIP's entity ids (the ids are stems and internal names such as
# "tail_abnorm_obs"); ids not listed read as they are.
_ENTITY_WORDS = {
    "clear": "clear (lungs)", "sharp": "sharp (margins)", "sharply": "sharply defined", "free": "free of disease",
    "enlarge": "enlargement", "tip": "tube / line tip", "low": "low lung volumes", "line": "line (catheter)",
    "air": "air (free / trapped)", "tortuous": "tortuous aorta", "lead": "pacer lead", "process": "airspace process",
    "prominence": "prominence", "engorgement": "vascular engorgement", "picc": "PICC line", "clip": "surgical clips",
    "elevation": "elevation (hemidiaphragm)", "expand": "expansion", "wire": "sternotomy wires",
    "degenerative": "degenerative changes", "thicken": "thickening", "marking": "interstitial markings",
    "hyperinflate": "hyperinflation", "blunt": "costophrenic blunting", "loss": "volume loss", "widen": "widening",
    "aerate": "aeration", "crowd": "crowding", "infiltrate": "infiltrate", "obscure": "obscuration",
    "drainage": "drain", "distention": "distention", "shift": "mediastinal shift", "pressure": "pressure",
    "finding": "other finding", "borderline": "borderline", "hardware": "orthopaedic hardware", "dilation": "dilation",
    "chf": "congestive heart failure", "redistribution": "vascular redistribution", "aspiration": "aspiration",
    "tail_abnorm_obs": "other abnormality (rare)", "excluded_obs": "excluded observation",
}
ENTITY_LABELS: tuple[str, ...] = tuple(_ENTITY_WORDS.get(e, e) for e in ENTITIES_75)
_POSITION_WORDS = {
    "left_hilar": "left hilum", "right_hilar": "right hilum", "hilar_unspec": "hila", "left_pleural": "left pleura",
    "right_pleural": "right pleura", "pleural_unspec": "pleura", "heart_size": "heart size",
    "diaphragm_unspec": "diaphragm", "lower_left_lobe": "left lower lobe", "upper_left_lobe": "left upper lobe",
    "lower_right_lobe": "right lower lobe", "middle_right_lobe": "right middle lobe",
    "upper_right_lobe": "right upper lobe", "left_apical_lung": "left apex", "right_apical_lung": "right apex",
    "left_lung_unspec": "left lung", "right_lung_unspec": "right lung", "left_costophrenic": "left costophrenic angle",
    "right_costophrenic": "right costophrenic angle", "costophrenic_unspec": "costophrenic angles",
    "mediastinal": "mediastinum", "svc": "superior vena cava", "interstitium": "interstitium",
    "parenchymal": "lung parenchyma", "cavoatrial_junction": "cavoatrial junction", "unspecified": "location not stated",
}
POSITION_LABELS: tuple[str, ...] = tuple(_POSITION_WORDS.get(p, p.replace("_", " ")) for p in ANATOMIES_51)


def _anatomy_table() -> list[tuple[str, str]]:
    """(phrase pattern, MedKLIP position) pairs, most specific first: a regex alternation takes the first match."""
    table = []
    for side in ("left", "right"):
        s = rf"{side}(?: sided)?"
        table += [
            (rf"{s}(?: lung)? lower lobe", f"lower_{side}_lobe"),
            (rf"{s}(?: lung)? upper lobe", f"upper_{side}_lobe"),
            (rf"{s}(?: lung)? (?:base|basilar|basal|lower lung(?: zone)?|lower zone|infrahilar)", f"{side}_lower_lung"),
            (rf"{s}(?: lung)? (?:mid ?lung|mid lung zone|middle lung)", f"{side}_mid_lung"),
            (rf"{s}(?: lung)? (?:upper lung(?: zone)?|upper zone|suprahilar)", f"{side}_upper_lung"),
            (rf"{s}(?: lung)? (?:apex|apical|apices)", f"{side}_apical_lung"),
            (rf"{s} (?:perihilar|hilar|hilum)", f"{side}_hilar"),
            (rf"{s} (?:pleural|pleura|hemithorax|effusion|pneumothorax)", f"{side}_pleural"),
            (rf"{s} (?:lateral |posterior )?costophrenic", f"{side}_costophrenic"),
            (rf"{s} (?:hemi)?diaphragm", f"{side}_diaphragm"),
            (rf"{s} lung", f"{side}_lung_unspec"),
        ]
    table += [
        (r"(?:right )?middle lobe", "middle_right_lobe"),
        (r"lingula|lingular", "upper_left_lobe"),  # the lingula belongs to the left upper lobe
        (r"retrocardiac", "retrocardiac"),
        (r"(?:bilateral |both )?(?:lung )?bases|bibasilar|bibasal|basilar|lower lungs", "lung_bases"),
        (r"apices|biapical|apical", "lung_apices"),
        (r"perihilar|hilar|hila|hilum", "hilar_unspec"),
        (r"pleural|pleura", "pleural_unspec"),
        (r"costophrenic", "costophrenic_unspec"),
        (r"(?:hemi)?diaphragms?", "diaphragm_unspec"),
        (r"cardiophrenic", "cardiophrenic_sulcus"),
        (r"(?:heart|cardiac) borders?", "heart_border"),
        (r"heart|cardiac|cardiomegaly", "heart_size"),
        (r"cardiomediastinal|mediastinum|mediastinal|paratracheal", "mediastinal"),
        (r"spine|spinal|vertebrae?|vertebral|thoracolumbar|[tl]\d{1,2}", "spine"),
        (r"clavicles?|clavicular", "clavicle"),
        (r"ribs?", "rib"),
        (r"stomach|gastric", "stomach"),
        (r"right atrium|right atrial", "right_atrium"),
        (r"right ventricle|right ventricular", "right_ventricle"),
        (r"aorta|aortic", "aorta"),
        (r"cavoatrial junction|caval atrial junction", "cavoatrial_junction"),
        (r"svc|superior vena cava|vena cava", "svc"),
        (r"trachea|tracheal|carina", "trachea"),
        (r"interstitial|interstitium", "interstitium"),
        (r"parenchyma|parenchymal", "parenchymal"),
        (r"cardiopulmonary", "cardiopulmonary"),
        (r"lung volumes?", "lung_volumes"),
        (r"pulmonary|lungs?", "pulmonary"),
        (r"shoulders?|humerus|humeral|scapula|sternum|sternal|sternotomy|soft tissues?|abdomen|neck|breasts?|"
         r"axilla|axillary|chest wall|osseous|bony|bones?|skeletal", "other"),
    ]
    return table


_ANATOMY_TABLE = _anatomy_table()
_ANATOMY = re.compile(r"\b(?:" + "|".join(f"(?P<a{i}>{p})" for i, (p, _) in enumerate(_ANATOMY_TABLE)) + r")\b")
_ANATOMY_INDEX = [ANATOMIES_51.index(name) for _, name in _ANATOMY_TABLE]


def _anatomies(text: str) -> list[tuple[int, int, int]]:
    """(start, end, position index) of every anatomy phrase in a sentence."""
    return [(m.start(), m.end(), _ANATOMY_INDEX[int(m.lastgroup[1:])]) for m in _ANATOMY.finditer(text)]


def _nearest(span: tuple[int, int], anatomies: list[tuple[int, int, int]]) -> int:
    """Position of the anatomy phrase closest to `span` (not inside it), else UNSPECIFIED_POSITION."""
    best, best_gap = UNSPECIFIED_POSITION, None
    for a, b, pos in anatomies:
        if a < span[1] and span[0] < b:
            continue  # the mention itself ("cardiomegaly"), not a location
        gap = span[0] - b if b <= span[0] else a - span[1]
        if best_gap is None or gap < best_gap:
            best, best_gap = pos, gap
    return best


@lru_cache(maxsize=1 << 16)
def sentence_mentions(text: str) -> tuple[tuple[int, int, int], ...]:
    """(entity, state, position) of every entity mention in one sentence (cached: sentences repeat a lot)."""
    sentence, anatomies = Sentence(text), None
    out = []
    for m in _MENTION.finditer(text):
        span = m.span(m.lastgroup)
        anatomies = _anatomies(text) if anatomies is None else anatomies
        out.append((int(m.lastgroup[1:]), sentence.state(*span), _nearest(span, anatomies)))
    return tuple(out)


def extract_triplets(report: str) -> tuple[np.ndarray, np.ndarray]:
    """One training report -> (exist int8 [75] in {1, 0, -1}, position int64 [75] in 0..50)."""
    states = [[] for _ in ENTITIES_75]  # per entity: (state, position) of each of its mentions
    for text in sentences(report):
        for e, state, pos in sentence_mentions(text):
            states[e].append((state, pos))
    exist = np.full(len(ENTITIES_75), UNMENTIONED, dtype=np.int8)
    position = np.full(len(ENTITIES_75), UNSPECIFIED_POSITION, dtype=np.int64)
    for e, found in enumerate(states):
        if not found:
            continue
        state = merge_states(s for s, _ in found)
        exist[e] = PRESENT if state in (POSITIVE, UNCERTAIN) else ABSENT
        located = [p for s, p in found if s == state and p != UNSPECIFIED_POSITION]
        if located:
            position[e] = located[0]
    return exist, position


def extract_triplets_batch(reports: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """n reports -> (exist int8 [n, 75], position int64 [n, 75])."""
    if isinstance(reports, str):
        raise TypeError("expected a list of reports, got a single str; wrap it in a list")
    exist = np.full((len(reports), len(ENTITIES_75)), UNMENTIONED, dtype=np.int8)
    position = np.full((len(reports), len(ENTITIES_75)), UNSPECIFIED_POSITION, dtype=np.int64)
    for i, report in enumerate(reports):
        exist[i], position[i] = extract_triplets(report)
    return exist, position


def _check_index(value, size: int, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise IndexError(f"{name} must be in 0..{size - 1}, got {value}")
    return int(value)


def triplet_sentence(entity_idx: int, position_idx: int, exists: bool,
                     template: str = "{entity} {position} {exist}") -> str:
    """The LRP text of one triplet, e.g. (9, 15, True) -> 'opacity lower right lobe present'."""
    entity = ENTITIES_75[_check_index(entity_idx, len(ENTITIES_75), "entity_idx")]
    position = ANATOMIES_51[_check_index(position_idx, len(ANATOMIES_51), "position_idx")].replace("_", " ")
    return template.format(entity=entity, position=position, exist="present" if exists else "absent")


def anatomy_sentence(position_idx: int) -> str:
    """MedKLIP's anatomy-book text, underscores kept: 'It is located at lower_right_lobe'."""
    return "It is located at " + ANATOMIES_51[_check_index(position_idx, len(ANATOMIES_51), "position_idx")]
