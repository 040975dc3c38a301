"""`revtaf evaluate`: the model, a trivial baseline or an ablation on one split, scored with the project protocol.

Outputs in `--out`: `metrics.json` (NLG + CE with the protocol strings, plus the number of distinct generated
reports and CE on the abnormal studies alone) and `predictions.jsonl`, one line per study:
`{"id", "generated", "reference", "retrieved_id", "labels", "reference_labels", "states"}` where `labels` /
`reference_labels` are the labeler's non-blank CheXpert states of the generated / reference text (what CE
compares) and `states` the model's 18 predicted disease states (None for baselines).

Baselines, scored with the same code on the same split:
- `constant`: the constant report of the README's evaluation protocol for every study;
- `random`: a training report drawn uniformly at random per study (seeded);
- `retrieval`: the report of the LRE's top-1 training study (its text read from the data root).
Ablations (`--ablate grp|lrp|fusion|tisr|tir`, combinable; tisr and tir for a model carrying those plug-ins)
switch parts of the model off at inference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from revtaf.labels.constants import CHEXPERT_14, STATES
from revtaf.metrics import NLG_METRICS
from revtaf.switches import ablation_set

CONSTANT_REPORT = "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear ."
BASELINES = ("constant", "random", "retrieval")
NO_FINDING = CHEXPERT_14.index("No Finding")


def _states_dict(row: Sequence[int], names: Sequence[str] = CHEXPERT_14) -> dict[str, str]:
    """Non-blank states only: {"Cardiomegaly": "positive", ...}."""
    return {n: STATES[int(s)] for n, s in zip(names, row) if int(s) != 0}


def constant_reports(n: int) -> list[str]:
    return [CONSTANT_REPORT] * n


def random_reports(n: int, train_reports: Sequence[str], seed: int = 0) -> tuple[list[str], list[int]]:
    """One uniformly drawn training report per study (seeded); returns (texts, drawn training indices)."""
    if not train_reports:
        raise ValueError("the random baseline needs at least one training report")
    idx = np.random.default_rng(seed).integers(0, len(train_reports), size=n).tolist()
    return [train_reports[i] for i in idx], idx


def abnormal_mask(ref_labels: np.ndarray) -> np.ndarray:
    """Studies whose reference has a positive CheXpert finding other than "No Finding": [n] bool."""
    pos = np.asarray(ref_labels)[:, : len(CHEXPERT_14)] == 1
    pos[:, NO_FINDING] = False
    return pos.any(1)


def score_rows(rows: list[dict], dataset: str, labeler=None, meteor=None) -> dict:
    """The protocol scores of rows {"id", "generated", "reference"}; adds `labels`/`reference_labels` to rows.

    Extras beside `revtaf.metrics.score`: `n`, `distinct_reports` (after cleaning), and `CE_abnormal`
    (CE restricted to the studies whose reference has a positive finding other than No Finding).
    """
    from revtaf.data import clean_report
    from revtaf.metrics import ce_scores, score
    from revtaf.metrics.nlg import java_available, shared_meteor

    if not rows:
        raise ValueError("nothing to score: no predictions")
    if meteor is None and java_available():  # one jar per process: its start-up takes tens of seconds
        meteor = shared_meteor()
    if labeler is None:
        from revtaf.labels.chexpert import RuleLabeler

        labeler = RuleLabeler()
    refs = {r["id"]: r["reference"] for r in rows}
    hyps = {r["id"]: r["generated"] for r in rows}
    metrics = score(refs, hyps, dataset, labeler=labeler, meteor=meteor)
    clean_refs = [clean_report(r["reference"], dataset) for r in rows]
    clean_hyps = [clean_report(r["generated"], dataset) for r in rows]
    labels = np.asarray(labeler(clean_refs + clean_hyps))
    ref_labels, hyp_labels = labels[: len(rows)], labels[len(rows) :]
    for row, rl, hl in zip(rows, ref_labels, hyp_labels):
        row["reference_labels"] = _states_dict(rl[: len(CHEXPERT_14)])
        row["labels"] = _states_dict(hl[: len(CHEXPERT_14)])
    abnormal = abnormal_mask(ref_labels)
    metrics["n"] = len(rows)
    metrics["distinct_reports"] = len(set(clean_hyps))
    metrics["abnormal_studies"] = int(abnormal.sum())
    if abnormal.any():
        ce = ce_scores(ref_labels[abnormal], hyp_labels[abnormal])
        ce.pop("protocol", None)
        metrics["CE_abnormal"] = {k: ce[k] for k in ("example", "micro", "macro")}
    return metrics


def write_outputs(out: str | Path, metrics: dict, rows: list[dict]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with (out / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def headline(metrics: dict) -> str:
    """One line of the figures the README tables show."""
    keys = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
    nlg = "  ".join(f"{k} {metrics[k]:.4f}" if metrics.get(k) is not None else f"{k} n/a" for k in keys)
    ce = metrics["CE"]["example"]
    line = f"{nlg}  CE-P {ce['precision']:.4f} CE-R {ce['recall']:.4f} CE-F1 {ce['f1']:.4f}"
    line += f"  distinct {metrics['distinct_reports']}/{metrics['n']}"
    if "CE_abnormal" in metrics:
        line += f"  CE-F1(abnormal, n={metrics['abnormal_studies']}) {metrics['CE_abnormal']['example']['f1']:.4f}"
    if "adherence" in metrics:
        a = metrics["adherence"]
        line += f"  adherence +{_fmt(a['positive'])} (n={a['n_positive']}) -{_fmt(a['non_positive'])}"
    if "adherence_findings" in metrics:
        a = metrics["adherence_findings"]
        line += f"  adherence13 +{_fmt(a['positive'])} (n={a['n_positive']}) -{_fmt(a['non_positive'])}"
    if "consistency" in metrics:
        c = metrics["consistency"]
        line += (f"  clear_beside_positive {c['clear_beside_positive']}"
                 f"  normal_beside_positive {c.get('normal_beside_positive', '-')}  repeated {c['repeated_finding']}"
                 f" ({_fmt(c['repeated_share'])})  plan_misses {c['plan_misses']}")
    g = metrics.get("grounding") or {}
    if g:
        line += (f"  map_overlap {_fmt(g.get('map_overlap'))} grp {_fmt(g.get('grp_map_overlap'))}"
                 f" border {_fmt(g.get('border_mass'))}"
                 f" side_pointing {_fmt(g.get('side_pointing'))} (n={g.get('side_pointing_n')})"
                 f" zone_pointing {_fmt(g.get('zone_pointing'))} (n={g.get('zone_pointing_n')})")
    return line


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------- the model


class _PairDataset:
    """Studies' frontal images under both transforms: the entity model's and the report model's; for a two-view
    model the report model's input is [2,3,H,W] (frontal, lateral or the frontal again) with "has_lateral"
    (False for every study when `frontal_only`: the study read without its lateral)."""

    def __init__(self, studies, root, views: int = 1, frontal_only: bool = False):
        from revtaf.data import XrayDataset, transforms

        self.entity = XrayDataset(studies, root, transforms.entity_transform())
        self.test = XrayDataset(studies, root, transforms.test_transform(), views=1 if frontal_only else views)
        self.views = views

    def __len__(self) -> int:
        return len(self.entity)

    def __getitem__(self, i: int) -> dict:
        item = self.entity[i]
        test = self.test[i]
        item["test_image"] = test["image"]
        if self.views == 2:
            if test["image"].ndim == 3:  # frontal only: its frontal in the lateral's place
                item["test_image"] = test["image"][None].expand(2, -1, -1, -1)
            item["has_lateral"] = test.get("has_lateral", False)
        return item


def generate_rows(model, studies, root, ablate: Sequence[str] = (), features: dict | None = None,
                  batch_size: int = 16, desc: str = "generate", oracle_states: np.ndarray | None = None,
                  generation=None, frontal_only: bool = False) -> tuple[list[dict], np.ndarray, dict]:
    """Generate reports for `studies` -> (rows {"id", "generated", "reference", "retrieved_id", "states"},
    P(positive) [n,18] of the classifier, evidence {"local_maps" [n,75,L], "exists" [n,75], "grp_maps": n
    arrays [N_i,L]} for the grounding measures).

    `features` = the pipeline's cached entity predictions for these studies ({"scores", "exists", "position"});
    without it the model's own (frozen) entity model predicts them from the image, as `predict` does.
    `oracle_states` [n,18] replaces the classifier's states in the prompt (the reference report's labels);
    `generation` the decoding settings (default: the model's); `frontal_only`: a two-view model reads each study
    without its lateral. The maps in `evidence` are the frontal film's. Rows of a sentence-plan decoder carry
    "sentences": [{"text", "topic"}] and "missed" (the required topics no beam wrote to).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from revtaf.labels.chexpert import LABEL_NAMES_18
    from revtaf.model.entity import predict_triplets
    from revtaf.model.inference import map_side

    model.eval()
    device = model.triplet_table.device
    views = model.cfg.visual.views
    loader = DataLoader(_PairDataset(studies, root, views, frontal_only), batch_size=batch_size)
    ablate = ablation_set(ablate)
    rows, p_pos = [], []
    evidence = {"local_maps": [], "exists": [], "grp_maps": []}
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, dynamic_ncols=True):
            idx = batch["index"]
            if features is not None:
                scores = torch.from_numpy(features["scores"][idx.numpy()]).to(device)
                exists = torch.from_numpy(features["exists"][idx.numpy()]).to(device)
                position = torch.from_numpy(features["position"][idx.numpy()].astype(np.int64)).to(device)
            else:
                out = model.entity_model(batch["image"].to(device))
                scores, exists, position = predict_triplets(out, model.cfg.absent_position)
            forced = None if oracle_states is None else torch.from_numpy(oracle_states[idx.numpy()]).long()
            has_lateral = batch["has_lateral"].to(device) if "has_lateral" in batch else None
            inf = model.infer(batch["test_image"].to(device), scores, position, exists, ablate, states=forced,
                              generation=generation, has_lateral=has_lateral)
            p_pos.append(inf.probs[..., 1].float().cpu().numpy())
            L = map_side(inf.fused, views) ** 2  # the frontal film's patches come first
            if inf.fused.local_maps is not None:
                evidence["local_maps"].append(inf.fused.local_maps[..., :L].half().cpu().numpy())
                evidence["exists"].append(exists.bool().cpu().numpy())
            if inf.fused.global_maps is not None:
                for b in range(len(idx)):
                    evidence["grp_maps"].append(inf.fused.global_maps[b, inf.grp_mask[b], :L].float().cpu().numpy())
            for b, i in enumerate(idx.tolist()):
                rows.append({
                    "id": studies[i].id,
                    "generated": inf.reports[b],
                    "reference": studies[i].report,
                    "retrieved_id": model.bank_ids[int(inf.neighbour_index[b, 0])],
                    "states": {n: STATES[int(s)] for n, s in zip(LABEL_NAMES_18, inf.states[b].tolist())},
                    "p_positive": {n: round(float(p), 5) for n, p in zip(LABEL_NAMES_18, inf.probs[b, :, 1].tolist())},
                })
                if inf.planned is not None:
                    rows[-1]["sentences"] = [{"text": x.text, "topic": x.topic.tokens}
                                             for x in inf.planned[b].sentences]
                    rows[-1]["missed"] = [t.tokens for t in inf.planned[b].missed]
    for key in ("local_maps", "exists"):
        evidence[key] = np.concatenate(evidence[key]) if evidence[key] else None
    return rows, np.concatenate(p_pos), evidence


def adherence(rows: list[dict], classes: int = len(CHEXPERT_14)) -> dict:
    """Prompt adherence of scored model rows (`states` = the prompt, `labels` = the labeler on the report), over
    the first `classes` CheXpert classes (13 = the findings, No Finding excluded)."""
    from revtaf.metrics.evidence import prompt_adherence

    return prompt_adherence(_state_matrix([r["states"] for r in rows]), _state_matrix([r["labels"] for r in rows]),
                            classes)


def consistency(rows: list[dict], dataset: str) -> dict:
    """How the generated reports read sentence by sentence (labels.topics.report_consistency, the 13 findings):
    reports with an all-clear sentence beside a positive finding, with an organ called normal beside its positive
    finding (the aorta), reports stating one finding in two sentences
    (and their share), and required topics no beam wrote to (`plan_misses`)."""
    from revtaf.data import clean_report
    from revtaf.labels.topics import report_consistency

    read = [report_consistency(clean_report(r["generated"], dataset)) for r in rows]
    repeated = sum(bool(x["repeated"]) for x in read)
    return {"clear_beside_positive": sum(x["clear_beside_positive"] for x in read),
            "normal_beside_positive": sum(x["normal_beside_positive"] for x in read), "repeated_finding": repeated,
            "repeated_share": repeated / len(rows) if rows else None,
            "plan_misses": sum(len(r.get("missed", [])) for r in rows)}


def _state_matrix(rows: Sequence[dict]) -> np.ndarray:
    """{name: state} dicts (a row's `states`, `labels` or `reference_labels`) -> int [n,14] CheXpert states."""
    return np.array([[STATES.index(r.get(name, STATES[0])) for name in CHEXPERT_14] for r in rows])


def grounding(evidence: dict, studies, dataset: str) -> dict:
    """map_overlap of the present entities' LRP maps, of the GRP sentence maps, and side pointing against the
    sides the reference reports state (their triplets, read for measuring only)."""
    from revtaf.data import clean_report
    from revtaf.labels.triplets import extract_triplets_batch
    from revtaf.metrics.evidence import border_mass, map_overlap, side_pointing, zone_pointing

    out = {}
    if evidence["local_maps"] is not None:
        maps = evidence["local_maps"].astype(np.float32)
        present = [m[e] for m, e in zip(maps, evidence["exists"])]
        out["map_overlap"] = map_overlap(present)["mean"]
        out["border_mass"] = border_mass(np.concatenate(present) if present else maps[:0, 0])["mean"]
        side = int(round(maps.shape[-1] ** 0.5))
        ref_exist, ref_position = extract_triplets_batch([clean_report(s.report, dataset) for s in studies])
        grid = maps.reshape(*maps.shape[:2], side, side)
        for name, measure in (("side_pointing", side_pointing), ("zone_pointing", zone_pointing)):
            pointing = measure(grid, ref_exist, ref_position)
            out[name], out[name + "_n"] = pointing["share"], pointing["n"]
    if evidence["grp_maps"]:
        out["grp_map_overlap"] = map_overlap(evidence["grp_maps"])["mean"]
    return out


# what validate_epoch returns that can pick the best epoch (TrainConfig.select_key, "+"-joined)
VAL_METRICS = (*NLG_METRICS, "CE_precision", "CE_recall", "CE_f1", "CE_f1_abnormal", "adherence_positive")


def validate_epoch(model, studies, root, features, labels: np.ndarray, dataset: str, batch_size: int = 16,
                   log=None, epoch: int | None = None) -> dict:
    """Per-epoch validation (docs/method.md §8.2): generate on val, score, update the base probabilities (§4.2).

    Returns flat metrics for the trainer (`CE_f1` selects the best epoch).
    """
    import torch

    from revtaf.model.disease_prompts import NUM_CHEXPERT, update_base_probs

    rows, p_pos, _ = generate_rows(model, studies, root, features=features, batch_size=batch_size,
                                   desc=f"validate epoch {epoch}")
    metrics = score_rows(rows, dataset)
    new = update_base_probs(torch.from_numpy(p_pos[:, :NUM_CHEXPERT]),
                            torch.from_numpy(labels[:, :NUM_CHEXPERT].astype(np.int64)), model.base_probs.cpu())
    model.base_probs.copy_(new.to(model.base_probs.device))
    ce = metrics["CE"]["example"]
    flat = {k: metrics[k] for k in NLG_METRICS}
    flat.update(CE_precision=ce["precision"], CE_recall=ce["recall"], CE_f1=ce["f1"],
                CE_f1_abnormal=metrics.get("CE_abnormal", {}).get("example", {}).get("f1"),
                distinct_reports=metrics["distinct_reports"], base_probs=[round(x, 4) for x in new.tolist()],
                # 0 when no val study got a positive prompt: nothing was written to follow one
                adherence_positive=adherence(rows)["positive"] or 0.0)
    if log is not None:
        log("validation_sample", epoch=epoch, rows=rows[:3])
    return flat


def evaluate_model(model, studies, root, out, dataset: str, ablate: Sequence[str] = (), features: dict | None = None,
                   batch_size: int = 16, checkpoint: str | None = None, oracle_prompt: bool = False,
                   generation=None, frontal_only: bool = False) -> dict:
    """Generate + score a split with the model; writes metrics.json and predictions.jsonl to `out`.

    metrics.json gains `adherence` (prompt adherence, evidence.prompt_adherence) and `grounding` (map_overlap,
    grp_map_overlap, side_pointing). `oracle_prompt`: the prompt states are the reference report's labels
    instead of the classifier's, which isolates the decoder.
    """
    oracle = None
    if oracle_prompt:
        from revtaf.data import clean_report
        from revtaf.labels.chexpert import RuleLabeler

        oracle = np.asarray(RuleLabeler()([clean_report(s.report, dataset) for s in studies]), dtype=np.int64)[:, :18]
    generation = generation or model.cfg.generation
    rows, _, evidence = generate_rows(model, studies, root, ablate, features, batch_size,
                                      desc=f"evaluate {Path(out).name}", oracle_states=oracle, generation=generation,
                                      frontal_only=frontal_only)
    metrics = score_rows(rows, dataset)
    metrics["adherence"] = adherence(rows)
    metrics["adherence_findings"] = adherence(rows, NO_FINDING)
    metrics["consistency"] = consistency(rows, dataset)
    metrics["grounding"] = grounding(evidence, studies, dataset)
    metrics["classifier_auroc_mesh"] = classifier_auroc(rows, studies)
    metrics["generator"] = {"model": checkpoint or "REVTAF", "ablate": sorted(ablation_set(ablate)),
                            "generation": asdict(generation), "split_size": len(studies),
                            "sentence_plan": model.cfg.decoder.sentence_plan and generation.plan,
                            "prompt": "oracle (reference labels)" if oracle_prompt else "classifier",
                            "positive_thresholds": model.cfg.positive_thresholds, "quantized": model.quantized,
                            "views": 1 if frontal_only else model.cfg.visual.views}
    write_outputs(out, metrics, rows)
    return metrics


def calibrate_checkpoint(checkpoint, data, split: str = "val", batch_size: int = 32,
                         max_studies: int | None = None) -> list[float | None]:
    """`revtaf calibrate`: per-disease P(positive) thresholds chosen on `split` (never test), written into the
    checkpoint's config (the manifest is rewritten with it)."""
    from revtaf.data import clean_report, detect_dataset, load_annotation
    from revtaf.integrity import read_manifest, write_manifest
    from revtaf.labels.chexpert import RuleLabeler
    from revtaf.model.disease_prompts import choose_thresholds
    from revtaf.model.revtaf import REVTAF

    if split == "test":
        raise ValueError("thresholds are chosen on val, never on test")
    data, ckpt = Path(data), Path(checkpoint)
    dataset = detect_dataset(data)
    studies = load_annotation(data, dataset)[split][:max_studies]
    if not studies:
        raise ValueError(f"split {split!r} of {data} is empty")
    model = REVTAF.from_pretrained(ckpt)
    labels = np.asarray(RuleLabeler()([clean_report(s.report, dataset) for s in studies]))[:, :18]
    classifier_only = replace(model.cfg.generation, max_new_tokens=1, min_length=0, num_beams=1)
    _, p_pos, _ = generate_rows(model, studies, data, batch_size=batch_size, desc=f"calibrate on {split}",
                                generation=classifier_only)
    thresholds = choose_thresholds(p_pos, labels == 1)  # P(positive) does not depend on the thresholds in force
    # Only config.json changes: the weights file stays byte for byte (a bundled model's history stays one blob).
    config = json.loads((ckpt / "config.json").read_text())
    config["positive_thresholds"] = thresholds
    (ckpt / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_manifest(ckpt, list(read_manifest(ckpt)))
    return thresholds


# The classes whose evidence the lateral film adds (issue 28's AUROC comparison), read against IU's MeSH terms
LATERAL_CLASSES = ("Pleural Effusion", "Atelectasis", "Lung Opacity", "Cardiomegaly")


def classifier_auroc(rows: list[dict], studies) -> dict:
    """The classifier's P(positive) against IU's manual MeSH terms (labels.mesh, independent of our labeler):
    AUROC per class of LATERAL_CLASSES, with its count of MeSH positives; {} when the studies carry no MeSH."""
    from revtaf.labels.mesh import mesh_classes
    from revtaf.metrics.ce import auroc

    if not any(s.mesh for s in studies):
        return {}
    truth = [mesh_classes(s.mesh) for s in studies]
    out = {}
    for name in LATERAL_CLASSES:
        positive = np.array([t[name] for t in truth])
        out[name] = {"auroc": auroc(positive, np.array([r["p_positive"][name] for r in rows])),
                     "positives": int(positive.sum())}
    return out


def compare_predictions(a: str | Path, b: str | Path, resamples: int = 2000, seed: int = 0,
                        data: str | Path | None = None) -> dict:
    """`revtaf compare`: CE F1 of two `revtaf evaluate` outputs on the same studies (e.g. the model and the
    constant report), their difference and its paired-bootstrap 95 % interval; also on the abnormal studies.
    With `data` (the data root, for its MeSH terms) and two model outputs: the classifiers' AUROC per class of
    LATERAL_CLASSES, a minus b, with its paired-bootstrap interval (e.g. two views against one)."""
    from revtaf.metrics.ce import example_f1, paired_bootstrap

    def load(path) -> dict[str, dict]:
        path = Path(path)
        path = path / "predictions.jsonl" if path.is_dir() else path
        return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}

    rows_a, rows_b = load(a), load(b)
    if set(rows_a) != set(rows_b):
        raise ValueError(f"{a} and {b} do not hold the same studies")
    ids = list(rows_a)
    ref = _state_matrix([rows_a[i]["reference_labels"] for i in ids])
    f1_a = example_f1(ref, _state_matrix([rows_a[i]["labels"] for i in ids]))
    f1_b = example_f1(ref, _state_matrix([rows_b[i]["labels"] for i in ids]))
    abnormal = abnormal_mask(ref)
    out = {"all": paired_bootstrap(f1_a, f1_b, resamples, seed)}
    if abnormal.any():
        out["abnormal"] = paired_bootstrap(f1_a[abnormal], f1_b[abnormal], resamples, seed)
    if data is not None and all("p_positive" in rows_a[i] and "p_positive" in rows_b[i] for i in ids):
        from revtaf.data import load_annotation
        from revtaf.labels.mesh import mesh_classes
        from revtaf.metrics.ce import auroc_difference

        by_id = {s.id: s for split in load_annotation(data).values() for s in split}
        truth = [mesh_classes(by_id[i].mesh) for i in ids]
        out["auroc_mesh"] = {
            name: auroc_difference(np.array([t[name] for t in truth]),
                                   np.array([rows_a[i]["p_positive"][name] for i in ids]),
                                   np.array([rows_b[i]["p_positive"][name] for i in ids]), resamples, seed)
            for name in LATERAL_CLASSES}
    return out


def retrieval_rows(model, studies, root, lookup, batch_size: int = 16) -> list[dict]:
    """The retrieval baseline: the report of the LRE's top-1 training study, read through `lookup`."""
    import torch
    from torch.utils.data import DataLoader

    from revtaf.data import XrayDataset, transforms
    from revtaf.model.entity import predict_triplets

    model.eval()
    device = model.triplet_table.device
    rows = []
    loader = DataLoader(XrayDataset(studies, root, transforms.entity_transform()), batch_size=batch_size)
    with torch.no_grad():
        for batch in loader:
            scores, _, _ = predict_triplets(model.entity_model(batch["image"].to(device)), model.cfg.absent_position)
            _, _, index = model.retrieve(scores, k=1)
            for i, row in zip(batch["index"].tolist(), index[:, 0].tolist()):
                sid = model.bank_ids[row]
                text = lookup(sid)
                if text is None:
                    raise FileNotFoundError(f"no report text for retrieved training study {sid}")
                rows.append({"id": studies[i].id, "generated": text, "reference": studies[i].report,
                             "retrieved_id": sid})
    return rows


def evaluate_checkpoint(checkpoint, data, split: str, out, baseline: str | None = None, ablate: Sequence[str] = (),
                        max_studies: int | None = None, seed: int = 0, batch_size: int = 16,
                        min_length: int | None = None, num_beams: int | None = None,
                        oracle_prompt: bool = False, argmax: bool = False, int8: bool = False,
                        free: bool = False, frontal_only: bool = False) -> dict:
    """`revtaf evaluate`: a model (or a baseline) on one split of a data root.

    `min_length` (prompt tokens included) and `num_beams` override the checkpoint's beam search, to choose
    generation settings on val; metrics.json records the settings used. `oracle_prompt`: prompt states from the
    reference labels; `argmax`: ignore the checkpoint's val-chosen thresholds (the paper's argmax states);
    `int8`: the decoder in dynamic int8 (REVTAF.quantize_int8), to measure what the approximation changes;
    `free`: a sentence-plan decoder chooses its topics freely (the plan switched off: the ablation);
    `frontal_only`: a two-view model reads each study without its lateral.
    """
    from revtaf.data import clean_report, detect_dataset, load_annotation, require_data_root
    from revtaf.data.reports import ReportLookup
    from revtaf.model.config import GenerationSettings
    from revtaf.paths import resolve_model

    data = require_data_root(data)
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}: choose from {BASELINES}")
    if baseline is not None and (ablate or oracle_prompt or argmax or int8 or free):
        raise ValueError("--ablate, --oracle-prompt, --argmax, --int8 and --free apply to the model, not to a baseline")
    overrides = {k: v for k, v in (("min_length", min_length), ("num_beams", num_beams)) if v is not None}
    if free:
        overrides["plan"] = False
    GenerationSettings(**overrides)  # bad values fail here, before any data is read
    dataset = detect_dataset(data)
    splits = load_annotation(data, dataset)
    studies = splits[split][:max_studies]
    if not studies:
        raise ValueError(f"split {split!r} of {data} is empty")

    model = None
    if baseline in (None, "retrieval"):
        from revtaf.model.revtaf import REVTAF

        ckpt = resolve_model(checkpoint)
        model = REVTAF.from_pretrained(ckpt)
        if argmax:
            model.cfg.positive_thresholds = None
        if int8:
            model.quantize_int8()
    if baseline is None:
        return evaluate_model(model, studies, data, out, dataset, ablate, batch_size=batch_size, checkpoint=str(ckpt),
                              oracle_prompt=oracle_prompt, generation=replace(model.cfg.generation, **overrides),
                              frontal_only=frontal_only)

    if baseline == "constant":
        rows = [{"id": s.id, "generated": t, "reference": s.report, "retrieved_id": None}
                for s, t in zip(studies, constant_reports(len(studies)))]
    elif baseline == "random":
        train = splits["train"]
        texts, idx = random_reports(len(studies), [clean_report(s.report, dataset) for s in train], seed)
        rows = [{"id": s.id, "generated": t, "reference": s.report, "retrieved_id": train[i].id}
                for s, t, i in zip(studies, texts, idx)]
    else:
        rows = retrieval_rows(model, studies, data, ReportLookup(data), batch_size)
    metrics = score_rows(rows, dataset)
    metrics["generator"] = {"baseline": baseline, "seed": seed if baseline == "random" else None,
                            "split_size": len(studies)}
    write_outputs(out, metrics, rows)
    return metrics
