"""The `revtaf` command line: one entry point over the library and the training drivers.

Each subcommand imports what it needs when it runs, so `revtaf --help` stays instant and a missing optional
dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _write_json(obj, out: str | None) -> None:
    text = json.dumps(obj, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    else:
        print(text)


def cmd_score(args) -> int:
    from revtaf.metrics import NLG_METRICS, score_files

    result = score_files(args.refs, args.hyps, args.dataset, args.out)
    print("  ".join(f"{k} {result[k]:.4f}" if result[k] is not None else f"{k} n/a" for k in NLG_METRICS))
    ce = result["CE"]["example"]
    print(f"CE (example-based) P {ce['precision']:.4f}  R {ce['recall']:.4f}  F1 {ce['f1']:.4f}")
    return 0


def cmd_label(args) -> int:
    from revtaf.labels import RuleLabeler, labels_to_dict

    reports = json.loads(Path(args.reports).read_text())
    if not isinstance(reports, dict) or not all(isinstance(v, str) for v in reports.values()):
        raise SystemExit(f"{args.reports}: expected a JSON object {{id: report text}}")
    ids = list(reports)
    rows = RuleLabeler()([reports[i] for i in ids])
    _write_json({i: labels_to_dict(row) for i, row in zip(ids, rows)}, args.out)
    return 0


def cmd_label_check(args) -> int:
    from revtaf.labels import format_table, label_check

    result = label_check(args.data, args.split)
    print(format_table(result))
    if args.out:
        _write_json(result, args.out)
    return 0


def cmd_bench(args) -> int:
    if args.robustness and args.soak is not None:
        from revtaf_bench.robustness import soak_bench

        result = soak_bench(args.checkpoint, args.data_root, args.soak, clients=min(args.clients, 4))
        if args.out:
            _write_json(result, args.out)
        return 0 if result["errors"] == 0 and result["server_alive"] else 1
    if args.robustness:
        from revtaf_bench.robustness import bench as robustness_bench

        result = robustness_bench(args.checkpoint, args.data_root, args.clients, args.requests)
        if args.out:
            _write_json(result, args.out)
        return 0
    if args.train_speed:
        from revtaf_train.speed import train_speed

        if not args.data_root:
            raise SystemExit("--train-speed needs --data-root (an IU X-Ray folder: annotation.json + images/)")
        result = train_speed(args.preset, args.data_root, args.device, args.seconds, args.batch_size,
                             args.max_steps, print_line=not args.json, plugins=tuple(args.plugins))
        if args.json:
            print(json.dumps(result))
        return 0
    if args.generation:
        from revtaf.paths import resolve_model
        from revtaf_bench.model_latency import generation_bench

        if not args.data_root:
            raise SystemExit("--generation needs --data-root (an IU X-Ray folder: its test images are the input)")
        result = generation_bench(resolve_model(args.checkpoint), args.data_root, runs=args.runs,
                                  print_table=not args.json)
        if args.json:
            print(json.dumps(result))
        return 0
    if args.retrieval is not None:
        from revtaf_bench.model_latency import RETRIEVAL_SIZES, retrieval_bench

        result = retrieval_bench(args.retrieval or RETRIEVAL_SIZES, print_table=not args.json)
        if args.json:
            print(json.dumps(result["sizes"]))
        return 0
    from revtaf_bench.model_latency import bench

    result = bench(args.preset, args.runs, print_table=not args.json, plugins=args.plugins)
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_train(args) -> int:
    from revtaf_train.pipeline import RunOptions, train_main

    opts = RunOptions(
        data=Path(args.data), out=Path(args.out), preset=args.preset, dataset=args.dataset,
        max_studies=args.max_studies, epochs=args.epochs, steps=args.steps, seed=args.seed,
        export=Path(args.export) if args.export else None, until=args.until, select_key=args.select_key,
        val_studies=args.val_studies, plugins=tuple(args.plugins), views=args.views,
        entity_from=Path(args.entity_from) if args.entity_from else None,
    )
    summaries = train_main(opts)
    for split in ("val", "test"):
        line = summaries.get("evaluate", {}).get(split)
        if line:
            print(f"{split}: {line}")
    return 0


def cmd_evaluate(args) -> int:
    from revtaf_train.evaluate import evaluate_checkpoint, headline

    metrics = evaluate_checkpoint(
        args.checkpoint, args.data, args.split, args.out, baseline=args.baseline, ablate=args.ablate,
        max_studies=args.max_studies, seed=args.seed, batch_size=args.batch_size, min_length=args.min_length,
        num_beams=args.num_beams, oracle_prompt=args.oracle_prompt, argmax=args.argmax, int8=args.int8,
        free=args.free, frontal_only=args.frontal_only,
    )
    print(headline(metrics))
    return 0


def cmd_fit_input_check(args) -> int:
    from revtaf_train.input_check import fit_input_check

    print(json.dumps(fit_input_check(args.checkpoint, args.data, args.batch_size), indent=2))
    return 0


def cmd_compare(args) -> int:
    from revtaf_train.evaluate import compare_predictions

    print(json.dumps(compare_predictions(args.a, args.b, args.resamples, args.seed, args.data), indent=2))
    return 0


def cmd_calibrate(args) -> int:
    from revtaf_train.evaluate import calibrate_checkpoint

    thresholds = calibrate_checkpoint(args.checkpoint, args.data, args.split, batch_size=args.batch_size)
    print(json.dumps({"positive_thresholds": thresholds}))
    return 0


def cmd_generate(args) -> int:
    from revtaf.data import read_image
    from revtaf.data.reports import ReportLookup
    from revtaf.model.revtaf import REVTAF
    from revtaf.paths import resolve_model
    from revtaf.switches import ablation_set

    model = REVTAF.from_pretrained(resolve_model(args.checkpoint))
    prediction = model.predict(read_image(args.image), ablate=ablation_set(args.ablate),
                               report_lookup=ReportLookup(args.data))
    if args.json:
        print(json.dumps(prediction.to_json(with_maps=args.maps), indent=2))
    else:
        print(prediction.report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from revtaf.switches import ABLATIONS, ALIASES  # pure Python: --help stays instant

    ablation_names = (*ABLATIONS, *ALIASES)
    parser = argparse.ArgumentParser(prog="revtaf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="NLG + clinical-efficacy metrics of hypotheses against references")
    p.add_argument("--refs", required=True, help='JSON {"id": "reference report"}')
    p.add_argument("--hyps", required=True, help='JSON {"id": "generated report"}')
    p.add_argument("--dataset", choices=("iu", "mimic"), default="iu", help="which cleaning protocol")
    p.add_argument("--out", help="write the full result here (JSON)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("label", help="CheXpert-style labels (14 observations + 4 auxiliary) of reports")
    p.add_argument("--reports", required=True, help='JSON {"id": "report text"}')
    p.add_argument("--out", help="output JSON (default: stdout)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("label-check", help="agreement of the rule labeler with IU X-Ray's manual MeSH terms")
    p.add_argument("--data", required=True, help="IU X-Ray data root (holds annotation.json)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", help="also write the table as JSON")
    p.set_defaults(func=cmd_label_check)

    p = sub.add_parser("bench", help="per-stage CPU latency of one study, fp32 and int8 decoder side by side "
                       "(--robustness: the demo under hostile "
                       "inputs, load, patient-data and weights-integrity checks)")
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--robustness", action="store_true",
                   help="run python -m app and measure hostile inputs, load, data leaks and integrity checks")
    p.add_argument("--checkpoint", help="--robustness: model directory (default: bundled, else random cpu preset)")
    p.add_argument("--data-root", help="--robustness: IU X-Ray root for good images (default: REVTAF_DATA, else "
                   "synthetic); --train-speed: the images to train on")
    p.add_argument("--clients", type=int, default=8, help="--robustness: concurrent sessions of the load test")
    p.add_argument("--requests", type=int, default=4, help="--robustness: requests per session")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="--robustness: instead of the checks, keep mixed traffic (good and bad files, up to 4 "
                   "clients) going for MINUTES and print the `soak:` line (requests, errors, p50/p95 over time, RSS)")
    p.add_argument("--out", help="--robustness: also write every figure as JSON")
    p.add_argument("--retrieval", type=int, nargs="*", metavar="N",
                   help="time the LRE's top-k search on a synthetic bank of N rows (default: 2955 and 270790)")
    p.add_argument("--generation", action="store_true",
                   help="report generation of a trained sentence-plan model (--checkpoint, default bundled) on "
                        "--data-root's test images: the plan loop, free topics and transformers' generate")
    p.add_argument("--train-speed", action="store_true",
                   help="time training steps of --preset (random init) on the images of --data-root: images/s and "
                   "step time, on --device (the check scripts/gpu_check.sh runs)")
    p.add_argument("--device", default="auto", help="--train-speed: cpu, cuda or auto (default)")
    p.add_argument("--seconds", type=float, default=60.0, help="--train-speed: how long to time (default 60)")
    p.add_argument("--batch-size", type=int, help="--train-speed: batch size (default: the preset's)")
    p.add_argument("--max-steps", type=int, help="--train-speed: stop after this many timed steps")
    p.add_argument("--runs", type=int, default=3, help="latency: timed runs per path (median; after a warm-up)")
    p.add_argument("--with", dest="plugins", action="append", default=[], metavar="PLUGIN",
                   help="latency: the preset with a sibling method on: tisr or uar (all of it), or one module: tisr.enabled, "
                   "uar.cra, uar.lsu, uar.tir (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="print the figures as one JSON object instead of the table (--retrieval: one per size)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="every training stage, cached and resumable (also under torchrun)")
    p.add_argument("--data", required=True, help="data root (annotation.json + images/)")
    p.add_argument("--out", required=True, help="run directory; re-running continues it")
    p.add_argument("--preset", choices=("cpu", "cpu_scratch", "paper"), default="cpu")
    p.add_argument("--dataset", choices=("auto", "iu", "mimic"), default="auto")
    p.add_argument("--export", help="copy the final model directory here (e.g. assets/NAME)")
    p.add_argument("--max-studies", type=int, help="use only the first N studies of each split (smoke runs)")
    p.add_argument("--epochs", type=int, help="REVTAF epochs (overrides the preset)")
    p.add_argument("--steps", type=int, help="cap every stage at N iterations per epoch (smoke runs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--until", help="stop after this stage")
    p.add_argument("--select-key", help='val metric picking the best epoch; "A+B" sums (default: the preset\'s)')
    p.add_argument("--with", dest="plugins", action="append", default=[], metavar="PLUGIN",
                   help="switch a sibling method on over the preset: tisr or uar (all of it), or one module: tisr.enabled, "
                   "uar.cra, uar.lsu, uar.tir, uar.two_stage (repeatable; docs/plugins.md)")
    p.add_argument("--val-studies", type=int, help="per-epoch validation on the first N val studies; 0 = all")
    p.add_argument("--views", type=int, choices=(1, 2), default=1,
                   help="films per study the model reads: 1 = the frontal (REVTAF), 2 = frontal and lateral")
    p.add_argument("--entity-from", metavar="MODEL_DIR",
                   help="take the entity model of this REVTAF model directory as it is instead of training one")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics.json + predictions.jsonl of a model, baseline or ablation")
    p.add_argument("--checkpoint", help="model directory (default: the bundled assets/ model)")
    p.add_argument("--data", required=True, help="data root (annotation.json + images/)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--baseline", choices=("constant", "random", "retrieval"))
    p.add_argument("--ablate", action="append", choices=ablation_names, default=[],
                   help="switch a part off (repeatable): FVTAF's grp / lrp branches, both (fusion), or the "
                        "pseudo words / mask of a model carrying TISR / TIR")
    p.add_argument("--max-studies", type=int, help="only the first N studies of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-length", type=int,
                   help="beam-search minimum length, the 19 prompt tokens included (default: the checkpoint's)")
    p.add_argument("--num-beams", type=int, help="beam width (default: the checkpoint's)")
    p.add_argument("--oracle-prompt", action="store_true",
                   help="prompt the decoder with the reference report's labels (measures the decoder alone)")
    p.add_argument("--argmax", action="store_true",
                   help="argmax disease states, ignoring the checkpoint's val-chosen thresholds (the paper)")
    p.add_argument("--int8", action="store_true",
                   help="the decoder in dynamic int8 (CPU; approximate): compare with the fp32 run to see what it changes")
    p.add_argument("--free", action="store_true",
                   help="a sentence-plan decoder proposes its topics freely: the plan switched off (ablation)")
    p.add_argument("--frontal-only", action="store_true",
                   help="a two-view model reads each study without its lateral (the frontal-only row)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="choose per-disease positive thresholds on val and store them in the model")
    p.add_argument("--checkpoint", required=True, help="model directory, rewritten with the thresholds in config.json")
    p.add_argument("--data", required=True, help="data root (annotation.json + images/)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("compare", help="CE F1 of two evaluate outputs: difference and paired-bootstrap 95 %% interval")
    p.add_argument("a", help="an evaluate --out directory (or its predictions.jsonl)")
    p.add_argument("b", help="the other one, on the same studies (e.g. --baseline constant)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="the data root: also compare the classifiers' AUROC against its MeSH terms")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("fit-input-check", help="fit the view classifier and out-of-distribution score of a model")
    p.add_argument("--checkpoint", required=True, help="model directory; input_check.safetensors is written into it")
    p.add_argument("--data", required=True, help="data root with view labels (IU X-Ray)")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_fit_input_check)

    p = sub.add_parser("generate", help="the Prediction of one study (PNG, JPEG or DICOM)")
    p.add_argument("image")
    p.add_argument("--checkpoint", help="model directory (default: the bundled assets/ model)")
    p.add_argument("--data", help="data root, for the retrieved report's text (else the Open-i archive)")
    p.add_argument("--ablate", action="append", choices=ablation_names, default=[])
    p.add_argument("--json", action="store_true", help="print the full Prediction as JSON")
    p.add_argument("--maps", action="store_true", help="with --json: include the attention maps' values")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"revtaf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
