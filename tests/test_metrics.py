"""Evaluation protocol: sanity figures on the real IU X-Ray test split, METEOR process robustness, CE averaging.

METEOR needs Java. One jar process is shared by the tests that need it; its start-up (paraphrase table)
takes 10-40 s on a busy CPU. Without Java those tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import revtaf.metrics.nlg as nlg
from revtaf.data.clean import clean_report
from revtaf.labels.constants import CHEXPERT_14
from revtaf.metrics import (
    Meteor,
    MeteorError,
    MeteorUnavailable,
    case_scores,
    ce_scores,
    finding_diff,
    nlg_scores,
    score,
    score_files,
)

CONSTANT = "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear ."
# README "Evaluation protocol": the constant report against the 590 cleaned IU test references.
SANITY = {"BLEU_1": 0.2316, "BLEU_4": 0.0777, "METEOR": 0.1203, "ROUGE_L": 0.3112, "CIDEr": 0.3434}


def require_java() -> None:
    if nlg.java_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("`java` is not on PATH in CI: METEOR 1.5 cannot be checked")
    pytest.skip("`java` is not on PATH")


@pytest.fixture(scope="module")
def iu_test(iu_root) -> list[dict]:
    test = json.loads((iu_root / "annotation.json").read_text())["test"]
    assert len(test) == 590
    return test


@pytest.fixture(scope="module")
def iu_refs(iu_test) -> dict[str, str]:
    return {e["id"]: clean_report(e["report"], "iu") for e in iu_test}


@pytest.fixture(scope="module")
def meteor():
    """The process-wide METEOR process of case_scores, shared by every test here (one jar start-up)."""
    require_java()
    m = nlg.shared_meteor()
    yield m
    m.close()


@pytest.fixture
def no_java(monkeypatch):
    monkeypatch.setattr(nlg, "java_available", lambda: False)


# ---------------------------------------------------------------------------------------------- NLG


def test_constant_report_gives_protocol_figures_and_meteor_none_without_java(iu_refs, no_java):
    with pytest.warns(UserWarning, match="java"):
        s = nlg_scores(iu_refs, {k: CONSTANT for k in iu_refs})
    assert s["METEOR"] is None
    for key in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr"):
        assert round(s[key], 4) == SANITY[key], key
    assert s["BLEU_1"] > s["BLEU_2"] > s["BLEU_3"] > s["BLEU_4"]
    assert "no PTB tokenizer" in s["protocol"]


def test_constant_report_meteor(iu_refs, meteor):
    s = nlg_scores(iu_refs, {k: CONSTANT for k in iu_refs}, meteor=meteor)
    assert round(s["METEOR"], 4) == SANITY["METEOR"]
    assert round(s["BLEU_4"], 4) == SANITY["BLEU_4"]


def test_nlg_scores_terminates_its_meteor_process(monkeypatch):
    require_java()
    started = []

    class ImpatientMeteor(Meteor):
        def __init__(self):
            super().__init__(timeout=0.001)  # the jar needs seconds before its first answer
            started.append(self)

    monkeypatch.setattr(nlg, "Meteor", ImpatientMeteor)
    with pytest.raises(MeteorError, match="no answer"):
        nlg_scores({"a": CONSTANT}, {"a": CONSTANT})
    assert len(started) == 1 and not started[0].alive
    with pytest.raises(MeteorError, match="closed"):
        started[0].score(["a b"], ["a b"])


@pytest.mark.filterwarnings("ignore:METEOR not computed")
def test_postprocessing_detaches_periods_and_keeps_figures(iu_refs, no_java):
    assert nlg.postprocess_hypothesis("the heart is normal. lungs - clear.") == "the heart is normal . lungs-clear ."
    refs = dict(list(iu_refs.items())[:40])
    spaced = nlg_scores(refs, {k: CONSTANT for k in refs})
    glued = nlg_scores(refs, {k: CONSTANT.replace(" .", ".") for k in refs})
    assert spaced == glued
    # Without whitespace normalisation pycocoevalcap's ROUGE-L would count the double spaces as tokens.
    assert spaced["ROUGE_L"] == nlg_scores(refs, {k: "  " + CONSTANT.replace(" ", "   ") for k in refs})["ROUGE_L"]


@pytest.mark.filterwarnings("ignore:METEOR not computed")
def test_identical_hypotheses_score_one(iu_refs, no_java):
    refs = dict(list(iu_refs.items())[:40])
    s = nlg_scores(refs, dict(refs))
    for n in range(1, 5):
        assert s[f"BLEU_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert s["ROUGE_L"] == 1.0
    c = case_scores(CONSTANT, CONSTANT)
    assert c["BLEU_4"] == pytest.approx(1.0, abs=1e-6) and c["ROUGE_L"] == 1.0 and c["METEOR"] is None


def test_case_scores_match_a_one_pair_corpus(iu_refs, meteor):
    ref = next(iter(iu_refs.values()))
    one = case_scores(ref, CONSTANT, meteor=True)
    corpus = nlg_scores({"a": ref}, {"a": CONSTANT}, meteor=meteor)
    assert one == {"BLEU_4": corpus["BLEU_4"], "ROUGE_L": corpus["ROUGE_L"], "METEOR": corpus["METEOR"]}
    assert 0 < one["METEOR"] < 1
    assert case_scores(CONSTANT, CONSTANT, meteor=True)["METEOR"] == 1.0
    assert nlg.shared_meteor() is meteor  # persistent: no new Java process per case


def test_meteor_survives_newlines_and_pipes(meteor):
    refs = ["the heart | is normal\nin size", "lungs ||| are clear\r\n."]
    hyps = ["heart is normal |||\nsize", "lungs\nclear ||"]
    clean = (["the heart is normal in size", "lungs are clear ."], ["heart is normal size", "lungs clear"])
    assert meteor.score(refs, hyps) == meteor.score(*clean)
    assert meteor.score(["a b c"], [""])[0] == 0.0
    assert meteor.score(["the lungs are clear"], ["the lungs are clear"])[0] == 1.0  # still in sync


def test_no_java(no_java):
    with pytest.raises(MeteorUnavailable, match="java"):
        Meteor()
    with pytest.warns(UserWarning, match="java"):
        assert case_scores(CONSTANT, CONSTANT, meteor=True)["METEOR"] is None


@pytest.mark.parametrize(
    "refs, hyps, error, match",
    [
        (
            {"a": "x", "b": "y", "c": "z"},
            {"a": "x", "d": "w"},
            ValueError,
            r"2 reference ids have no hypothesis \('b', 'c'\); 1 hypothesis ids have no reference \('d'\)",
        ),
        ({"a": "x"}, {"a": "  "}, ValueError, r"hypotheses\['a'\] is empty"),
        ({}, {}, ValueError, "no references"),
        (["x"], {"a": "x"}, TypeError, "references must be a dict"),
        ({"a": 3}, {"a": "x"}, TypeError, r"references\['a'\] must be a string"),
    ],
)
def test_nlg_input_errors(refs, hyps, error, match):
    with pytest.raises(error, match=match):
        nlg_scores(refs, hyps)


# ----------------------------------------------------------------------------------------------- CE


def _labels(positives: list[list[int]], n_cols: int = 18) -> np.ndarray:
    out = np.full((len(positives), n_cols), 2, dtype=np.int8)  # negative everywhere ...
    for row, cols in zip(out, positives):
        row[cols] = 1  # ... except the listed positives
    return out


def test_ce_example_micro_macro_by_hand():
    # Columns: 0 Enlarged Cardiomediastinum, 1 Cardiomegaly, 2 Lung Opacity, 4 Edema, 5 Consolidation, 13 No Finding.
    ref = _labels([[0, 1], [13], [], [1, 4, 5]])
    hyp = _labels([[0, 2], [13], [], [1]])
    hyp[2, 3] = 3  # uncertain is not positive
    hyp[:, 15] = 1  # columns beyond the 14 observations are ignored
    s = ce_scores(ref, hyp)
    # Per report (tp, fp, fn): (1,1,1) (1,0,0) (0,0,0) (1,0,2); the empty report scores 0 (0/0 = 0).
    assert s["example"] == pytest.approx({"precision": 2.5 / 4, "recall": (0.5 + 1 + 1 / 3) / 4, "f1": 0.5})
    assert s["micro"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 6, "f1": 3 / 5})
    # Per class P/R/F1: c0 1/1/1, c1 1/.5/(2/3), c2 0/0/0, c4 and c5 0/0/0, c13 1/1/1, the 8 others 0/0 -> 0.
    assert s["macro"] == pytest.approx({"precision": 3 / 14, "recall": 2.5 / 14, "f1": (8 / 3) / 14})
    assert list(s["per_class"]) == list(CHEXPERT_14)
    assert s["per_class"]["Cardiomegaly"] == pytest.approx({"precision": 1, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_class"]["Lung Opacity"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_ce_all_blank_is_zero_and_perfect_is_one():
    blank = np.zeros((3, 14), dtype=np.int64)
    s = ce_scores(blank, blank)
    assert all(s[k] == {"precision": 0.0, "recall": 0.0, "f1": 0.0} for k in ("example", "micro", "macro"))
    pos = _labels([[13], [1, 9], [0]], n_cols=14)
    s = ce_scores(pos, pos)
    assert s["example"] == s["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert s["macro"]["f1"] == pytest.approx(4 / 14)  # 4 classes present, 10 at 0/0 -> 0


@pytest.mark.parametrize(
    "ref, hyp, error, match",
    [
        (np.zeros((2, 13), int), np.zeros((2, 13), int), ValueError, "shape"),
        (np.zeros((2, 14), int), np.zeros((3, 14), int), ValueError, "2 reports but hyp_labels has 3"),
        (np.zeros((2, 14)), np.zeros((2, 14), int), TypeError, "integer"),
        (np.full((2, 14), 4), np.zeros((2, 14), int), ValueError, "outside 0..3"),
        (np.zeros((0, 14), int), np.zeros((0, 14), int), ValueError, "no reports"),
    ],
)
def test_ce_input_errors(ref, hyp, error, match):
    with pytest.raises(error, match=match):
        ce_scores(ref, hyp)


def test_finding_diff():
    ref = np.zeros(18, dtype=np.int8)
    hyp = np.zeros(18, dtype=np.int8)
    ref[[1, 4, 9]] = 1, 1, 2
    hyp[[1, 2, 9, 13]] = 1, 1, 3, 2
    assert finding_diff(ref, hyp) == [
        ("Cardiomegaly", "positive", "positive", "agreement"),
        ("Lung Opacity", "blank", "positive", "false finding"),
        ("Edema", "positive", "blank", "missed finding"),
        ("Pleural Effusion", "negative", "uncertain", "agreement"),
        ("No Finding", "blank", "negative", "agreement"),
    ]


# ---------------------------------------------------------------------------------------- score()


def test_cleaning_is_idempotent_on_tokens(iu_test):
    # score() cleans hypotheses too; already-clean text must keep its tokens (bytes may differ).
    for e in iu_test:
        for dataset in ("iu", "mimic"):
            once = clean_report(e["report"], dataset)
            assert clean_report(once, dataset).split() == once.split()


class KeywordLabeler:
    """Stand-in labeler for tests: Cardiomegaly if 'enlarged' is said, else No Finding."""

    protocol = "keyword test labeler"

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, reports: list[str]) -> np.ndarray:
        self.seen += reports
        labels = np.zeros((len(reports), 18), dtype=np.int8)
        for row, text in zip(labels, reports):
            row[1 if "enlarged" in text else 13] = 1
        return labels


REFS = {"s1": "The heart is enlarged. Lungs are clear.", "s2": "Normal heart size. No effusion."}
HYPS = {"s1": "the heart is normal in size . lungs are clear .", "s2": "the heart is enlarged . no effusion ."}


@pytest.mark.filterwarnings("ignore:METEOR not computed")
def test_score_cleans_labels_and_names_its_protocol(no_java):
    labeler = KeywordLabeler()
    with pytest.warns(UserWarning, match="java"):
        s = score(REFS, HYPS, dataset="iu", labeler=labeler)
    cleaned_refs = [clean_report(REFS[k], "iu") for k in REFS]
    assert labeler.seen[:2] == cleaned_refs  # the labeler sees cleaned text
    assert s["CE"]["example"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}  # both cases swapped
    assert s["CE"]["per_class"]["Cardiomegaly"]["support"] == 1
    expected = nlg_scores(dict(zip(REFS, cleaned_refs)), HYPS)
    assert {k: s[k] for k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")} == {
        k: expected[k] for k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")
    }
    assert s["METEOR"] is None
    assert set(s["protocol"]) == {"nlg", "ce", "cleaning", "labeler"}
    assert s["protocol"]["labeler"] == "keyword test labeler" and "R2Gen IU" in s["protocol"]["cleaning"]
    with pytest.raises(ValueError, match="unknown dataset"):
        score(REFS, HYPS, dataset="chexpert", labeler=labeler)


def test_score_with_the_rule_labeler_on_the_iu_test_split(iu_test, no_java):
    from revtaf.labels.chexpert import RuleLabeler

    refs = {e["id"]: e["report"] for e in iu_test}  # raw: score() cleans them
    with pytest.warns(UserWarning, match="java"):
        s = score(refs, {k: CONSTANT for k in refs})  # default labeler
    for key in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr"):
        assert round(s[key], 4) == SANITY[key], key
    assert s["protocol"]["labeler"] == "revtaf.labels.chexpert.RuleLabeler"
    # The constant normal report is labelled "No Finding" only, so example and micro precision are both the
    # share of references labelled "No Finding", and no other class has a true positive.
    labeler = RuleLabeler()
    hyp = labeler([clean_report(CONSTANT, "iu")])[0, :14]
    assert (hyp[:13] != 1).all() and hyp[13] == 1
    ref_no_finding = labeler([clean_report(r, "iu") for r in refs.values()])[:, 13] == 1
    assert s["CE"]["example"]["precision"] == pytest.approx(ref_no_finding.mean())
    assert s["CE"]["micro"]["precision"] == pytest.approx(ref_no_finding.mean())
    assert s["CE"]["per_class"]["No Finding"]["recall"] == 1.0
    assert all(v["precision"] == 0.0 for k, v in s["CE"]["per_class"].items() if k != "No Finding")


def test_score_files(tmp_path, no_java):
    refs, hyps, out = tmp_path / "refs.json", tmp_path / "hyps.json", tmp_path / "out" / "scores.json"
    refs.write_text(json.dumps(REFS))
    hyps.write_text(json.dumps(HYPS))
    with pytest.warns(UserWarning, match="java"):
        s = score_files(refs, hyps, "iu", out, labeler=KeywordLabeler())
    assert json.loads(out.read_text()) == s

    hyps.write_text(json.dumps({"s1": "x", "s3": "y"}))
    with pytest.raises(ValueError, match=r"1 reference ids have no hypothesis \('s2'\).*'s3'"):
        score_files(refs, hyps, "iu", labeler=KeywordLabeler())
    hyps.write_text('{"s1": "x", ')
    with pytest.raises(ValueError, match="hyps.json is not valid JSON"):
        score_files(refs, hyps, "iu", labeler=KeywordLabeler())
    hyps.write_text(json.dumps(["x", "y"]))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        score_files(refs, hyps, "iu", labeler=KeywordLabeler())
    hyps.write_text(json.dumps({"s1": "x", "s2": ""}))
    with pytest.raises(ValueError, match=r"empty report for 1 id\(s\), e.g. \['s2'\]"):
        score_files(refs, hyps, "iu", labeler=KeywordLabeler())
    hyps.write_text(json.dumps({"s1": "x", "s2": None}))
    with pytest.raises(ValueError, match="must be report strings"):
        score_files(refs, hyps, "iu", labeler=KeywordLabeler())


def test_example_f1_and_paired_bootstrap():
    from revtaf.metrics.ce import example_f1, paired_bootstrap

    ref = np.array([[1] + [2] * 13, [2] * 13 + [1]])
    assert example_f1(ref, ref).tolist() == [1.0, 1.0]
    assert example_f1(ref, np.full((2, 14), 2)).tolist() == [0.0, 0.0]
    better = paired_bootstrap(np.ones(50), np.zeros(50))
    assert better["difference"] == 1.0 and better["ci95"] == [1.0, 1.0]
    noise = paired_bootstrap(np.r_[np.ones(25), np.zeros(25)], np.r_[np.zeros(25), np.ones(25)])
    assert noise["ci95"][0] < 0 < noise["ci95"][1]
