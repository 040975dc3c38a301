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
    from revtaf.metrics import score_files

    result = score_files(args.refs, args.hyps, args.dataset, args.out)
    keys = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
    print("  ".join(f"{k} {result[k]:.4f}" if result[k] is not None else f"{k} n/a" for k in keys))
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
    from train.bench import bench

    bench(args.preset)
    return 0


def build_parser() -> argparse.ArgumentParser:
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

    p = sub.add_parser("bench", help="per-stage CPU latency of one study")
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    p.set_defaults(func=cmd_bench)
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
