"""What the demo's events do, without Gradio: load the model once, open a case (upload or dataset study), run a
prediction per ablation and compare it with the ground truth; the dataset browser with its errors-first order.

`app/ui.py` wires these and the panel modules (uploads, render, panels, review) to components, so everything is
testable without a browser.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from revtaf.data import XrayImage, clean_report, image_file, load_annotation, read_image
from revtaf.data.reports import OPENI_ATTRIBUTION, ReportLookup
from revtaf.labels import LABEL_NAMES_18, RuleLabeler
from revtaf.labels.constants import STATES
from revtaf.metrics import case_scores, ce_scores, finding_diff
from revtaf.metrics.nlg import java_available
from revtaf.model.inference import check_states
from revtaf.model.prediction import Prediction
from revtaf.switches import ABLATIONS, BY_NAME
from revtaf_app.case import Case
from revtaf_app.errors import AppInputError
from revtaf_app.panels import CASE_PROTOCOL, Comparison, shorten, word_diff_html
from revtaf_app.render import grp_sentence, model_box, overlay
from revtaf_app.review import model_identity
from revtaf_app.uploads import Display, upload_key, working_copy


IU_ATTRIBUTION = OPENI_ATTRIBUTION

CASE_ORDERS = ("dataset", "errors")

def load_model(path: str | os.PathLike, int8: bool = False):
    """REVTAF.from_pretrained(path), in eval mode (import deferred: torch is heavy). A public demo never serves
    unverified weights: the directory's SHA-256 manifest is required (revtaf.integrity.IntegrityError).
    `int8`: the decoder in dynamic int8 (REVTAF.quantize_int8): what `python -m app` serves by default."""
    from revtaf.model.revtaf import REVTAF

    model = REVTAF.from_pretrained(path, require_manifest=True)
    return model.quantize_int8() if int8 else model

def ablation_tag(grp_off: bool, lrp_off: bool, plugins_off: Sequence[str] | None = ()) -> str:
    """The page's switches -> the cache tag of what is off ('full', 'grp', 'lrp+tisr', ...)."""
    off = {"grp": grp_off, "lrp": lrp_off, **{name: True for name in plugins_off or ()}}
    unknown = set(off) - set(ABLATIONS)
    if unknown:
        raise AppInputError(f"unknown switch {sorted(unknown)}: choose from {list(ABLATIONS)}")
    return "+".join(name for name in ABLATIONS if off.get(name)) or "full"  # the registry's order


def ablation_label(tag: str) -> str:
    """'full model', 'retrieval (GRP) off', 'GRP and TISR off', ..."""
    names = [] if tag == "full" else tag.split("+")
    if not names:
        return "full model"
    if len(names) == 1:
        return f"{BY_NAME[names[0]].label} off"
    short = [BY_NAME[n].short for n in names]
    return f"{', '.join(short[:-1])} and {short[-1]} off"


class Service:
    """The model, the optional dataset and the labeler, shared by all sessions (all read-only after init)."""

    def __init__(self, model, data_root: str | os.PathLike | None = None, labeler=None):
        self.model = model
        self.labeler = labeler or RuleLabeler()
        self.data_root = Path(data_root) if data_root else None
        self.studies = load_annotation(self.data_root, "iu") if self.data_root else {}
        self._by_id = {s.id: s for split in self.studies.values() for s in split}
        # Retrieved reports come from the data root, else from the Open-i archive shipped with torchxrayvision,
        # so a Space without the dataset still shows what the model retrieved.
        self.reports = ReportLookup(self.data_root)
        self._case_labels: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, list[dict]] = {}  # error_order per split
        self._order_lock = threading.Lock()
        # METEOR is a Java jar that takes seconds (tens on a busy CPU) to load: warm it up in the background
        # and leave it out of comparisons made before it is ready, rather than block a user's request.
        self.meteor = java_available()
        self.meteor_problem = "Java is not available" if not self.meteor else None
        self.meteor_ready = threading.Event()
        warmups = [threading.Thread(target=self.reports.covers, args=(["CXR1_1_IM-0001"],), daemon=True)]  # parse once
        if self.meteor:
            warmups.append(threading.Thread(target=self._warm_meteor, daemon=True))
        for thread in warmups:
            thread.start()
        # A daemon thread still in native code while the interpreter tears down aborts the process ("terminate
        # called without an active exception", seen when a script or a test exits within seconds of start-up):
        # give them a bounded wait at exit instead.
        atexit.register(lambda: [thread.join(timeout=30) for thread in warmups])

    def _warm_meteor(self) -> None:
        try:
            case_scores("the heart is normal", "the heart is normal", meteor=True)
        except Exception as exc:  # a broken Java install: METEOR is reported as missing, as without Java
            self.meteor_problem = f"the METEOR jar failed ({type(exc).__name__})"
            self.meteor = False
        finally:
            self.meteor_ready.set()

    # ---- dataset

    @property
    def has_data(self) -> bool:
        return bool(self._by_id)

    def report_lookup(self, study_id: str) -> str | None:
        return self.reports(study_id)

    def _split_labels(self, split: str) -> np.ndarray:
        """Rule-labeler states [n, 18] of a split's ground-truth reports, computed on first use."""
        with self._lock:
            if split not in self._case_labels:
                self._case_labels[split] = self.labeler([clean_report(s.report, "iu") for s in self.studies[split]])
            return self._case_labels[split]

    def case_ids(self, split: str, finding: str | None = None, order: str = "dataset",
                 errors_only: bool = False, progress=None) -> list[str]:
        """Study ids of `split`, optionally only those whose ground truth the labeler marks positive for `finding`.

        order "errors": cases whose report misses a finding first, then those with a false finding, then the
        rest (`error_order`, which runs the model over the split once); `errors_only` keeps the first two groups.
        """
        if split not in self.studies:
            choices = ", ".join(self.studies) or "(no dataset loaded)"
            raise AppInputError(f"no split {split!r} in the loaded data; choose one of {choices}")
        if order not in CASE_ORDERS:
            raise AppInputError(f"unknown order {order!r}; choose one of {', '.join(CASE_ORDERS)}")
        studies = self.studies[split]
        keep = np.ones(len(studies), dtype=bool)
        if finding and finding != "any":
            if finding not in LABEL_NAMES_18:
                raise AppInputError(f"unknown finding {finding!r}")
            keep &= self._split_labels(split)[:, LABEL_NAMES_18.index(finding)] == 1
        if order == "dataset" and not errors_only:
            return [s.id for s, k in zip(studies, keep) if k]
        errors = self.error_order(split, progress)
        rank = [0 if e["missed"] else 1 if e["false"] else 2 for e in errors]
        picked = [i for i in range(len(studies)) if keep[i] and (rank[i] < 2 or not errors_only)]
        if order == "errors":
            picked.sort(key=lambda i: (rank[i], -len(errors[i]["missed"]), -len(errors[i]["false"]), i))
        return [studies[i].id for i in picked]

    def error_order(self, split: str, progress=None, batch_size: int = 16) -> list[dict]:
        """[{"id", "missed", "false"}] for every study of `split`, in dataset order: the pathologies (CheXpert-14
        + 4 without No Finding) that the generated report misses or adds against the ground truth, by the rule
        labeler (the finding diff of the comparison panel). The model runs over the whole split once (minutes on
        two cores; `progress(done, total)` after each batch); the result is cached for this model and split."""
        with self._order_lock:
            if split in self._errors:
                return self._errors[split]
            studies, out = self.studies[split], []
            truth = self._split_labels(split)
            pathology = [i for i, name in enumerate(LABEL_NAMES_18) if name != "No Finding"]
            for start in range(0, len(studies), batch_size):
                chunk = studies[start:start + batch_size]
                # the same working copy the page analyses, so the order agrees with what a loaded case shows
                preds = self.model.predict_batch([self._films(st) for st in chunk], exclude_ids=[st.id for st in chunk])
                written = self.labeler([clean_report(p.report, "iu") for p in preds])
                for st, gt, gen in zip(chunk, truth[start:start + batch_size], written):
                    out.append({"id": st.id,
                                "missed": [LABEL_NAMES_18[i] for i in pathology if gt[i] == 1 and gen[i] != 1],
                                "false": [LABEL_NAMES_18[i] for i in pathology if gen[i] == 1 and gt[i] != 1]})
                if progress is not None:
                    progress(len(out), len(studies))
            self._errors[split] = out
            return out

    def next_case(self, split: str, finding: str | None, current: str | None, order: str = "dataset",
                  errors_only: bool = False) -> str:
        """The case after `current` in the filtered list (wrapping), or the first one."""
        ids = self.case_ids(split, finding, order, errors_only)
        if not ids:
            raise AppInputError("No case in this split matches the filter.")
        if current in ids:
            return ids[(ids.index(current) + 1) % len(ids)]
        return ids[0]

    @property
    def plugin_switches(self) -> list[tuple[str, str]]:
        """(label, name) of the plug-in parts this model can switch off at inference: none for a plain REVTAF."""
        return [(BY_NAME[name].label, name) for name in ABLATIONS
                if name in self.model.ablations and BY_NAME[name].needs is not None]

    @property
    def plugin_note(self) -> str:
        """The sibling methods' parts the model carries and what each does at inference, for the page."""
        parts = [f"{name} ({what})" for name, what in self.model.plugins.items()]
        return "Plug-ins: " + ("; ".join(parts) if parts else "none") + "."

    @property
    def identity(self) -> dict:
        """The model's identity, saved with every review."""
        return model_identity(self.model)

    def review_progress(self, ids: list[str], store: dict) -> str:
        """"N of M reviewed" for the listed cases: a case counts once reviewed with this model (any ablation)."""
        sha = self.identity["model_sha256"]
        done = {r.get("study_id") for r in (store or {}).values() if r.get("model_sha256") == sha}
        return f"**{sum(i in done for i in ids)} of {len(ids)}** listed cases reviewed with this model."

    # ---- model

    def _ablate(self, ablation: str) -> frozenset[str]:
        ablate = frozenset() if ablation == "full" else frozenset(ablation.split("+"))
        if not ablate <= self.model.ablations:
            raise AppInputError(f"unknown ablation {ablation!r}: this model can switch off "
                                f"{sorted(self.model.ablations)}")
        return ablate

    def what_if(self, case: Case, states: dict[str, str]) -> Prediction:
        """The case's report rewritten to the user's findings {finding: positive | negative | uncertain | blank}
        (the others stay the classifier's), under the case's current ablation."""
        if not states:
            raise AppInputError("Set at least one finding to a state, then rewrite the report.")
        try:
            check_states(states)
        except ValueError as exc:
            raise AppInputError(str(exc)) from None
        # the case's encoding is reused: a what-if runs the decoder alone
        return self.model.write(case.encodings[case.ablation], self.reports, states=dict(states))[0]

    @property
    def views(self) -> int:
        """Films per study the model reads (1: the frontal; 2: frontal and lateral)."""
        return self.model.cfg.visual.views

    def open_upload(self, data: bytes | list[bytes], ablation: str = "full") -> Case:
        """Read uploaded bytes (one film, or a study's two in any order) and analyse them. Raises an
        ImageReadError subclass on a bad file, AppInputError on a study that is not one frontal and one lateral."""
        files = data if isinstance(data, list) else [data]
        if not 1 <= len(files) <= 2:
            raise AppInputError(f"Upload one chest X-ray, or a study's two films (frontal and lateral); got "
                                f"{len(files)} files.")
        originals = [read_image(d) for d in files]
        films = [working_copy(im) for im in originals]
        try:  # the model assigns the views as it reads the films (REVTAF.encode): each is encoded once
            encoding = self.model.encode([films], self._ablate(ablation))
        except ValueError as exc:
            raise AppInputError(str(exc)) from None
        views = encoding.films[0]
        frontal = next(v.index for v in views if v.view == "frontal")
        lateral = next((films[v.index] for v in views if v.view == "lateral"), None)
        case = Case(key=upload_key(b"".join(files)), image=films[frontal], original_size=originals[frontal].size,
                    display=Display(invert=None), lateral=lateral if self.views > 1 else None, uploaded=views)
        return self._keep(case, ablation, encoding)

    def open_study(self, study_id: str, ablation: str = "full") -> Case:
        """Read a dataset study's frontal image (and its lateral, for a two-view model) and analyse it, with its
        findings as ground truth."""
        study = self._by_id.get((study_id or "").strip())
        if study is None:
            raise AppInputError(f"Unknown study id {study_id!r}." if self.has_data else "No dataset is loaded.")
        image = read_image(image_file(self.data_root, study))
        case = Case(key=f"iu-{study.id}", image=working_copy(image), original_size=image.size, study_id=study.id,
                    ground_truth=study.report, lateral=self._lateral(study))
        return self.run(case, ablation)

    def _lateral(self, study) -> XrayImage | None:
        """A dataset study's lateral film (working copy), when the model reads one and the study has one."""
        path = image_file(self.data_root, study, "lateral") if self.views > 1 else None
        return None if path is None else working_copy(read_image(path))

    def _films(self, study) -> list[XrayImage]:
        """A dataset study's films as a loaded case has them (Case.films): the frontal, then any lateral."""
        lateral = self._lateral(study)
        return [working_copy(read_image(image_file(self.data_root, study)))] + ([lateral] if lateral is not None else [])

    def run(self, case: Case, ablation: str) -> Case:
        """Make `ablation` the case's current prediction, running the model only if it is not cached."""
        if ablation not in case.predictions:
            # a dataset study never retrieves itself (it may be in the training bank)
            return self._keep(case, ablation, self.model.encode([case.films], self._ablate(ablation), [case.study_id]))
        case.ablation = ablation
        return case

    def _keep(self, case: Case, ablation: str, encoding) -> Case:
        """The case with `encoding` (its reading under `ablation`) and the report written from it, made current."""
        case.encodings[ablation] = encoding
        case.predictions[ablation] = self.model.write(encoding, self.reports)[0]
        case.ablation = ablation
        return case

    def overlay_gallery(self, case: Case, k: int = 4, opacity: float = 0.6,
                        cmap: str = "inferno") -> list[tuple[np.ndarray, str]]:
        """(overlay, caption) of the k most probable present entities and the first k retrieved sentences."""
        pred, gray = case.prediction, case.gray()
        box = model_box(*gray.shape)
        out = []
        if len(pred.lrp_maps):
            ranked = sorted(pred.entities, key=lambda e: (not e.exists, -e.exist_prob))[:k]
            out += [(overlay(gray, pred.lrp_maps[e.index], opacity, cmap, box),
                     f"LRP {e.label or e.entity} (p={e.exist_prob:.2f}, {e.position_label or e.position})") for e in ranked]
        out += [(overlay(gray, pred.grp_maps[j], opacity, cmap, box),
                 f"GRP sentence {j + 1}: {shorten(grp_sentence(pred, j), 60)}")
                for j in range(min(k, len(pred.grp_maps)))]
        return out

    def written_states(self, pred: Prediction) -> np.ndarray:
        """The labeler's states [18] of the generated report (what `disease_summary` checks the prompt against)."""
        return self.labeler([clean_report(pred.report, "iu")])[0]

    # ---- comparison

    def compare(self, ground_truth: str, pred: Prediction) -> Comparison:
        """Ground truth vs generated (and vs the retrieved report): word diff, finding diff, case metrics."""
        if not ground_truth or not ground_truth.strip():
            raise AppInputError("Paste a ground-truth report (or load a dataset case) to compare against.")
        gt, gen = clean_report(ground_truth, "iu"), clean_report(pred.report, "iu")
        retrieved = pred.neighbours[0].report if pred.neighbours and pred.neighbours[0].report else None
        ret = clean_report(retrieved, "iu") if retrieved else None
        texts = [gt, gen] + ([ret] if ret else [])
        labels = self.labeler(texts)

        # finding_diff leaves out observations blank on both sides: those agree
        gen_verdict = {name: v for name, _, _, v in finding_diff(labels[0], labels[1], LABEL_NAMES_18)}
        ret_verdict = {name: v for name, _, _, v in finding_diff(labels[0], labels[2], LABEL_NAMES_18)} if ret else {}
        findings = []
        for k, name in enumerate(LABEL_NAMES_18):
            if name not in gen_verdict and name not in ret_verdict:
                continue
            states = [STATES[int(labels[j][k])] for j in range(len(texts))]
            findings.append([name, states[0], states[1], gen_verdict.get(name, "agreement"),
                             states[2] if ret else "—", ret_verdict.get(name, "agreement") if ret else "—"])
        # disagreements first, so the interesting rows are on top
        findings.sort(key=lambda row: (row[3] == "agreement" and row[5] in ("agreement", "—")))

        metrics = self._case_metrics(gt, gen, ret, labels)
        return Comparison(word_diff_html(gt, gen), findings, metrics)

    def _case_metrics(self, gt: str, gen: str, ret: str | None, labels: np.ndarray) -> list[list]:
        meteor = self.meteor and self.meteor_ready.is_set()
        scores = [case_scores(gt, gen, meteor=meteor)]
        ces = [ce_scores(labels[:1], labels[1:2])["example"]]
        if ret:
            scores.append(case_scores(gt, ret, meteor=meteor))
            ces.append(ce_scores(labels[:1], labels[2:3])["example"])

        def fmt(v):
            return "—" if v is None else f"{v:.4f}"

        if not self.meteor:
            meteor_protocol = f"missing: {self.meteor_problem} (no other METEOR is substituted)"
        elif not meteor:
            meteor_protocol = "not yet: the METEOR 1.5 jar is still starting; press Compare again in a moment"
        else:
            meteor_protocol = CASE_PROTOCOL["METEOR"]
        rows = []
        for key, label in (("BLEU_4", "BLEU-4"), ("ROUGE_L", "ROUGE-L"), ("METEOR", "METEOR")):
            values = [fmt(s[key]) for s in scores] + ["—"] * (2 - len(scores))
            rows.append([label, *values, meteor_protocol if key == "METEOR" else CASE_PROTOCOL[key]])
        for key, label in (("precision", "CE precision"), ("recall", "CE recall"), ("f1", "CE F1")):
            values = [fmt(c[key]) for c in ces] + ["—"] * (2 - len(ces))
            rows.append([label, *values, CASE_PROTOCOL["CE"]])
        return rows
