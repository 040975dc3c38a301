"""The whole `revtaf train` pipeline end to end on a handful of IU X-Ray studies (CI smoke run), then
`revtaf evaluate` (model and baselines) and `revtaf generate` on its export, then a re-run that must skip
every stage."""

from __future__ import annotations

import json

import pytest

from revtaf_cli.main import main
from revtaf_train.pipeline import STAGES

N = 24  # the classifier's memory needs a bank larger than k_memory; the pipeline shrinks k for tiny banks


@pytest.fixture(scope="module")
def run(iu_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    argv = ["train", "--preset", "cpu", "--data", str(iu_root), "--out", str(out / "run"),
            "--max-studies", str(N), "--epochs", "1", "--steps", "2", "--export", str(out / "export")]
    assert main(argv) == 0
    return out, argv


def test_every_stage_ran_and_left_its_outputs(run):
    out, _ = run
    r = out / "run"
    for stage in STAGES:
        assert (r / stage / "DONE.json").is_file(), stage
    meta = json.loads((r / "run.json").read_text())
    assert meta["fingerprint"]["split_sizes"] == {"train": N, "val": N, "test": N}
    assert len(meta["fingerprint"]["annotation_sha256"]) == 64 and meta["seed"] == meta["train"]["seed"]
    events = [json.loads(x) for x in (r / "log.jsonl").read_text().splitlines()]
    revtaf = json.loads((r / "revtaf" / "DONE.json").read_text())
    assert 1 <= revtaf["steps_per_epoch"] <= 2 and revtaf["epochs"] == 1
    assert sum(e["event"] == "step" for e in events) == revtaf["steps_per_epoch"]
    assert {"loss", "loss_lm", "loss_cls", "loss_rank", "loss_fcc"} <= set(next(e for e in events if e["event"] == "step"))
    assert any(e["event"] == "epoch" and "val_CE_f1" in e for e in events)
    assert (r / "plots" / "losses.png").is_file() and (r / "plots" / "val.png").is_file()
    for split in ("val", "test"):
        metrics = json.loads((r / "evaluate" / split / "metrics.json").read_text())
        assert metrics["n"] == (8 if split == "val" else N) and "protocol" in metrics and 0 <= metrics["CE"]["example"]["f1"] <= 1
        rows = (r / "evaluate" / split / "predictions.jsonl").read_text().splitlines()
        assert len(rows) == metrics["n"]
        adherence = metrics["adherence"]
        assert adherence["n_positive"] + adherence["n_non_positive"] == 14 * metrics["n"]
        assert 0 <= adherence["non_positive"] <= 1
        assert {"map_overlap", "grp_map_overlap", "side_pointing", "side_pointing_n"} <= set(metrics["grounding"])
    thresholds = json.loads((r / "calibrate" / "DONE.json").read_text())["positive_thresholds"]
    assert len(thresholds) == 18 and json.loads((r / "bank" / "model" / "config.json").read_text())[
        "positive_thresholds"] == thresholds
    # the export carries weights, config, tokenizer, bank ids and the run card -- and no report text
    export = out / "export"
    assert {"config.json", "model.safetensors", "bank.json", "run.json"} <= {p.name for p in export.iterdir()}
    from revtaf.integrity import verify_manifest

    assert "run.json" in verify_manifest(export, required=("config.json", "model.safetensors", "run.json"))
    card = json.loads((export / "run.json").read_text())
    assert card["fingerprint"] == meta["fingerprint"]


def test_export_holds_no_report_text(run, iu_root):
    out, _ = run
    from revtaf.data import load_annotation

    blob = b"".join(p.read_bytes() for p in (out / "export").rglob("*") if p.is_file())
    for study in load_annotation(iu_root, "iu")["train"][:N]:
        sentence = study.report.split(".")[0].strip()
        if len(sentence) > 30:  # long enough to be specific to the report
            assert sentence.encode() not in blob, study.id


def test_rerun_skips_every_stage(run):
    out, argv = run
    log = out / "run" / "log.jsonl"
    before = len(log.read_text().splitlines())
    assert main(argv) == 0
    new = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert [e["stage"] for e in new if e["event"] == "stage_skip"] == list(STAGES)
    assert not any(e["event"] in ("stage_start", "step") for e in new)


def test_evaluate_model_baselines_and_ablation(run, iu_root, capsys):
    out, _ = run
    ckpt = out / "export"
    results = {}
    for name, extra in (("model", []), ("constant", ["--baseline", "constant"]), ("random", ["--baseline", "random"]),
                        ("retrieval", ["--baseline", "retrieval"]), ("no_grp", ["--ablate", "grp"]),
                        ("no_fusion", ["--ablate", "fusion"])):
        dest = out / "eval" / name
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(iu_root), "--split", "test",
                     "--out", str(dest), "--max-studies", "6", *extra]) == 0
        results[name] = json.loads((dest / "metrics.json").read_text())
        rows = [json.loads(x) for x in (dest / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all({"id", "generated", "reference", "retrieved_id", "labels"} <= set(r) for r in rows)
    assert results["constant"]["distinct_reports"] == 1
    assert results["no_fusion"]["generator"]["ablate"] == ["grp", "lrp"]
    retrieved = [json.loads(x) for x in (out / "eval" / "retrieval" / "predictions.jsonl").read_text().splitlines()]
    train_ids = set(json.loads((ckpt / "bank.json").read_text())["ids"])
    assert all(r["retrieved_id"] in train_ids for r in retrieved)
    assert "CE-F1" in capsys.readouterr().out


def test_evaluate_min_length_override(run, iu_root, capsys):
    out, _ = run
    args = ["evaluate", "--checkpoint", str(out / "export"), "--data", str(iu_root), "--split", "val",
            "--max-studies", "3", "--out"]
    assert main([*args, str(out / "eval" / "min31"), "--min-length", "31"]) == 0
    generation = json.loads((out / "eval" / "min31" / "metrics.json").read_text())["generator"]["generation"]
    assert generation["min_length"] == 31
    # the smoke model's own setting is untouched on disk
    assert json.loads((out / "export" / "config.json").read_text())["generation"]["min_length"] == 24
    assert main([*args, str(out / "eval" / "bad"), "--min-length", "-1"]) == 2
    assert "min_length must be >= 0" in capsys.readouterr().err


def test_generate_prints_prediction_json(run, iu_root, capsys):
    out, _ = run
    from revtaf.data import image_file, load_annotation

    study = load_annotation(iu_root, "iu")["test"][0]
    assert main(["generate", str(image_file(iu_root, study)), "--checkpoint", str(out / "export"),
                 "--data", str(iu_root), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert isinstance(pred["report"], str) and len(pred["diseases"]) == 18 and len(pred["entities"]) == 75
    assert pred["neighbours"][0]["report"]  # the retrieved training report's text, from the data root


def test_selection_flags_reach_the_run_config(iu_root, tmp_path):
    argv = ["train", "--data", str(iu_root), "--out", str(tmp_path / "r"), "--max-studies", str(N), "--steps", "2",
            "--until", "labels", "--select-key", "BLEU_4+CE_f1", "--val-studies", "0"]
    assert main(argv) == 0
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["train"]["select_key"] == "BLEU_4+CE_f1" and meta["train"]["select_min_distinct"] == 2
    assert meta["pipeline"]["val_max_studies"] is None  # 0 = all of val, also over the smoke runs' 8


def test_bad_inputs_are_clear_errors(run, tmp_path, iu_root, capsys):
    out, _ = run
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--data", str(iu_root), "--out", str(tmp_path)]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no annotation.json" in capsys.readouterr().err
    base = ["train", "--data", str(iu_root), "--out", str(tmp_path / "s"), "--max-studies", str(N)]
    assert main([*base, "--select-key", "BLEU_4+CIDer"]) == 2
    assert "unknown metric 'CIDer'" in capsys.readouterr().err
    assert main([*base, "--val-studies", "-1"]) == 2
    assert "--val-studies must be >= 0" in capsys.readouterr().err
