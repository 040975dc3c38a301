"""The text and table panels of a prediction: image line, input warning, disease / entity / neighbour tables, the
word- and finding-level comparison with the ground truth and its per-case protocol."""

from __future__ import annotations

import difflib
import html
from collections.abc import Sequence
from dataclasses import dataclass

from revtaf.data import XrayImage
from revtaf.labels.constants import STATES
from revtaf.metrics.evidence import side_mass
from revtaf.model.disease_prompts import NEVER_POSITIVE
from revtaf.model.prediction import Prediction, ReportSentence, ViewAssignment
from revtaf_app.errors import AppInputError


GROUPS = ("finding", "device", "normal descriptor")

CASE_PROTOCOL = {
    "BLEU_4": "pycocoevalcap BLEU-4, this case alone (sentence level), R2Gen IU-cleaned text, whitespace tokens",
    "ROUGE_L": "pycocoevalcap ROUGE-L (LCS F, beta 1.2), R2Gen IU-cleaned text",
    "METEOR": "METEOR 1.5 jar (-l en -norm), R2Gen IU-cleaned text",
    "CE": "CheXpert-14 example-based P/R/F1 of this case, positive = state 1 only, rule labeler",
}

def describe_image(image: XrayImage, original_size: tuple[int, int], pred: Prediction | None = None) -> str:
    """One markdown line: format, size, bit depth, view position (the file's tag, else the model's call)."""
    fmt = {"dicom": "DICOM", "png": "PNG", "jpeg": "JPEG"}.get(image.source_format, image.source_format.upper())
    if image.view_position:
        view = f"**{image.view_position}** (from the file)"
    elif pred is not None and pred.view is not None:
        view = f"**{pred.view}** (predicted from the pixels, P(lateral) {pred.p_lateral:.2f}; not stated in the file)"
    else:
        view = "**not stated in the file**"
    return f"**{fmt}**, {original_size[0]} × {original_size[1]} px, {image.bits}-bit · view position: {view}"


def describe_films(uploaded: list[ViewAssignment], pred: Prediction | None) -> str:
    """What the model read of an upload of two files (" · frontal: file 2, lateral: file 1, by the view
    classifier"), or of a dataset study with its lateral; empty for one film."""
    read = pred is not None and any(f.view == "lateral" for f in pred.films)
    if len(uploaded) == 2:
        views = sorted(uploaded, key=lambda v: v.view != "frontal")
        named = ", ".join(f"{v.view}: file {v.index + 1}" for v in views)
        return f" · {named} ({uploaded[0].how})" + ("" if read else "; this model reads the frontal only")
    return " · frontal and lateral films" if read else ""


def warning_html(pred: Prediction) -> str:
    """The input check's warning above the report (empty when there is none)."""
    return f'<div class="input-warning">⚠ {html.escape(pred.warning)}</div>' if pred.warning else ""

DISEASE_HEADERS = ["disease prompt", "state", "P blank", "P pos", "P neg", "P unc", "positive if P pos"]
ENTITY_HEADERS = ["#", "group", "finding", "exist prob", "present", "location", "entity id", "triplet sentence"]
NEIGHBOUR_HEADERS = ["rank", "study id", "distance", "labels (+ / ?)", "report"]


def disease_rows(pred: Prediction, states: dict[str, str] | None = None) -> list[list]:
    """One row per disease prompt, in the classifier's fixed order; `states` (a what-if's) replace its state. The
    last column says when the classifier calls it positive: "≥ t" (its decision threshold on P(positive);
    "never" for one that no P(positive) reaches) or "argmax" (the likeliest state)."""
    states = states or {}
    return [[d.name, states.get(d.name, d.state)] + [round(float(d.probs.get(s, 0.0)), 3) for s in STATES]
            + [_called_at(d.threshold)] for d in pred.diseases]


def _called_at(threshold: float | None) -> str:
    if threshold is None:
        return "argmax"
    return "never" if threshold >= NEVER_POSITIVE else f"≥ {threshold:.2f}"


def states_from_rows(pred: Prediction, rows) -> dict[str, str]:
    """The what-if a reader typed into the disease table: {finding: state} where the state column differs from
    the model's. AppInputError naming the cell for a state that is not one of the four."""
    model = {d.name: d.state for d in pred.diseases}
    out = {}
    for row in rows:
        name, state = str(row[0]), str(row[1]).strip().lower()
        if name not in model:
            raise AppInputError(f"the table's findings are fixed; {name!r} is not one of them")
        if state not in STATES:
            raise AppInputError(f"{name}: {row[1]!r} is not a state; type one of {', '.join(STATES)}")
        if state != model[name]:
            out[name] = state
    return out


def placeholder_note(report: str) -> str:
    """A note for a report that holds "xxxx" (IU X-Ray's de-identification mark, in 44 % of the training reports
    where the anonymiser removed a word: the model learned to write the mark, which is no finding), else ""."""
    if "xxxx" not in report.lower():
        return ""
    return ("“xxxx” is IU X-Ray's de-identification mark: where its anonymiser removed a word from the training "
            "reports, the model learned to write the mark. It stands for no finding.")


def disease_summary(pred: Prediction, written: Sequence[int] | None = None) -> str:
    """Markdown: which prompts the classifier set to positive / uncertain / negative; given the labeler's states
    of the generated report (`written` [18], LABEL_NAMES_18 order), also the positive prompts the report does not
    state: the decoder follows few of them (README, honest reading), and a reader should not have to find out."""
    parts = []
    for state in ("positive", "uncertain", "negative"):
        names = [d.name for d in pred.diseases if d.state == state]
        if names:
            parts.append(f"**{state}:** {', '.join(names)}")
    summary = " · ".join(parts) if parts else "All 18 prompts are blank (not mentioned)."
    if written is not None:
        # Prediction.diseases come in LABEL_NAMES_18 order, the labeler's order
        unwritten = [d.name for d, w in zip(pred.diseases, written)
                     if d.state == "positive" and STATES[int(w)] != "positive"]
        if unwritten:
            summary += f"\n\n⚠ **Positive here but not stated in the report:** {', '.join(unwritten)}"
    return summary


def entity_rows(pred: Prediction, group: str | None = None) -> list[list]:
    """The 75 LRPs, grouped (findings, devices, normal descriptors), most probable first in each group."""
    if group and group != "all" and group not in GROUPS:
        raise AppInputError(f"unknown entity group {group!r}; choose all, {', '.join(GROUPS)}")
    order = {g: k for k, g in enumerate(GROUPS)}
    rows = [e for e in pred.entities if not group or group == "all" or e.group == group]
    rows.sort(key=lambda e: (order.get(e.group, len(GROUPS)), -e.exist_prob))
    return [[e.index, e.group, e.label or e.entity, round(float(e.exist_prob), 3), "✓" if e.exists else "",
             e.position_label or e.position, e.entity, e.sentence] for e in rows]


def _labels_text(labels: dict[str, str], states: tuple[str, ...] = ("positive", "uncertain", "negative")) -> str:
    """'Cardiomegaly +, Edema ?, Effusion −' style summary of the given states."""
    mark = {"positive": "+", "negative": "−", "uncertain": "?"}
    return ", ".join(f"{name} {mark[s]}" for name, s in labels.items() if s in states) or "—"


def neighbour_rows(pred: Prediction) -> list[list]:
    return [[k + 1, n.study_id, round(float(n.distance), 4), _labels_text(n.labels, ("positive", "uncertain")),
             shorten(n.report or "(text not available)", 90)] for k, n in enumerate(pred.neighbours)]


def retrieved_summary(pred: Prediction) -> tuple[str, str]:
    """(report text, markdown facts) of the nearest neighbour, the study whose sentences became the GRPs."""
    if not pred.neighbours:
        return "", "No study was retrieved."
    n = pred.neighbours[0]
    facts = (f"**Study** `{n.study_id}` · **Poincaré distance** {n.distance:.4f}  \n"
             f"**Labels** (+ positive, ? uncertain): {_labels_text(n.labels, ('positive', 'uncertain'))}")
    return n.report or "(Report text not available: neither the data root nor the Open-i archive has it.)", facts


def shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"

def word_diff_html(reference: str, hypothesis: str) -> str:
    """Word-level diff (difflib) of two cleaned reports as HTML: red struck = only in the reference, green =
    only in the hypothesis."""
    a, b = reference.split(), hypothesis.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append('<del style="background:#fde2e1;color:#9b1c1c;text-decoration:line-through">'
                       f"{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append('<ins style="background:#dcf5e3;color:#14532d;text-decoration:none">'
                       f"{html.escape(' '.join(b[j1:j2]))}</ins>")
    ratio = difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
    legend = ('<div style="font-size:0.85em;opacity:0.8;margin-bottom:6px">'
              '<del style="background:#fde2e1;color:#9b1c1c">ground truth only</del> · '
              '<ins style="background:#dcf5e3;color:#14532d;text-decoration:none">generated only</ins> · '
              f"word match ratio {ratio:.2f} (cleaned text)</div>")
    return f'{legend}<div style="line-height:1.7">{" ".join(out)}</div>'


FINDING_HEADERS = ["finding", "GT", "generated", "verdict", "retrieved", "verdict (retrieved)"]
METRIC_HEADERS = ["metric", "generated vs GT", "retrieved vs GT", "protocol"]


@dataclass
class Comparison:
    diff_html: str
    findings: list[list]
    metrics: list[list]


# ---- the report as sentences, their evidence, and a what-if's difference
_MARK = {"positive": "+", "negative": "−", "uncertain": "?"}


def sentence_label(sentence: ReportSentence) -> str | None:
    """The highlight of a sentence: its findings, state and the classifier's probability ("Cardiomegaly + .93";
    ✎ when a what-if set it); None for a sentence that states no finding."""
    if not sentence.findings:
        return None
    parts = [f"{name} {_MARK[state]} {sentence.probability.get(name, 0):.2f}"
             for name, state in sentence.findings.items()]
    return ("✎ " if sentence.user else "") + ", ".join(parts)


def sentence_segments(pred: Prediction) -> list[tuple[str, str | None]]:
    """The report as (sentence, label) segments for a highlighted text, one per sentence; the whole report as
    one segment for a decoder without a plan."""
    if not pred.sentences:
        return [(pred.report, None)]
    return [(s.text + " ", sentence_label(s)) for s in pred.sentences]


def sentence_evidence(pred: Prediction, index: int) -> str:
    """Markdown: why sentence `index` was written: its topic and probability, the entity whose map is shown, the
    retrieved sentence that says most alike, and the pair's FCC S and O."""
    if not 0 <= index < len(pred.sentences):
        raise AppInputError(f"no sentence {index + 1} in this report ({len(pred.sentences)} sentences)")
    s = pred.sentences[index]
    lines = [f"**Sentence {index + 1}:** “{html.escape(s.text)}”"]
    if s.findings:
        who = "set by you (what-if)" if s.user else "the classifier's call"
        lines.append("**Topic:** " + ", ".join(
            f"{name} {s.findings[name]} (P {s.probability.get(name, 0):.2f})" for name in s.findings) + f" · {who}")
    else:
        lines.append("**Topic:** " + " ".join(s.topic) + " (no finding stated)")
    if s.entity is not None:
        e = pred.entities[s.entity_index]
        lines.append(f"**Entity (LRP map shown):** {s.entity}" + (f", {s.position}" if s.position else "")
                     + f" · the entity model: p {e.exist_prob:.2f} ({'present' if e.exists else 'absent'}), "
                     f"{e.position_label or e.position} · {map_side(pred.lrp_maps[s.entity_index])}")
    else:
        lines.append("**Entity:** the sentence names none (no map).")
    if s.grp_sentence is not None:
        lines.append(f"**Closest retrieved sentence:** “{html.escape(s.grp_sentence)}” (ROUGE-L {s.grp_similarity:.2f})")
        if s.fcc_similarity is not None:
            lines.append(f"**FCC of the pair:** S {s.fcc_similarity:.3f} (text similarity), "
                         f"O {s.fcc_overlap:.3f} (map overlap)")
    else:
        lines.append("**Closest retrieved sentence:** none says anything alike.")
    return "  \n".join(lines)


def map_side(heat) -> str:
    """Where a map's mass lies, in the patient's terms ("map: 64% on the patient's right"), as `side_pointing`
    measures it (revtaf.metrics.evidence.side_mass: the overlay's min-max-normalised map)."""
    right, left = side_mass(heat)
    if right + left <= 0:
        return "map: empty"
    side, share = ("right", right) if right >= left else ("left", left)
    return f"map: {share / (right + left):.0%} on the patient's {side}"


def sentence_diff(before: Prediction, after: Prediction) -> list[tuple[str, str | None]]:
    """The what-if's report against the model's, sentence by sentence: kept (no label), removed, added."""
    a = [s.text for s in before.sentences] or [before.report]
    b = [s.text for s in after.sentences] or [after.report]
    out: list[tuple[str, str | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [(t + " ", None) for t in a[i1:i2]]
            continue
        out += [(t + " ", "removed") for t in a[i1:i2]] + [(t + " ", "added") for t in b[j1:j2]]
    return out


def overrides_summary(states: dict[str, str]) -> str:
    """Markdown of the what-if's changes ("Cardiomegaly → positive")."""
    if not states:
        return "No finding changed: the report is the model's."
    return "**Your findings:** " + " · ".join(f"{name} → {state}" for name, state in states.items())
