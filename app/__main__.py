"""`python -m app`: start the demo on http://127.0.0.1:7860.

Model: --checkpoint DIR (or REVTAF_CHECKPOINT), else --hf-repo ID --hf-revision SHA (downloaded once, pinned),
else the bundled default in assets/. Dataset browser: --data-root DIR (or REVTAF_DATA), optional.
Spaces sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; they are the defaults of --host / --port.
Queue: REVTAF_CONCURRENCY model runs at a time (default 2), at most REVTAF_QUEUE_SIZE waiting (default 16).
Torch threads per run: --threads, else OMP_NUM_THREADS, else CPU cores / REVTAF_CONCURRENCY.
"""

from __future__ import annotations

import argparse
import logging
import os

from revtaf.integrity import IntegrityError
from revtaf.paths import DATA_ENV, resolve_data_root

CHECKPOINT_ENV = "REVTAF_CHECKPOINT"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="REVTAF Gradio demo")
    p.add_argument("--checkpoint", default=os.environ.get(CHECKPOINT_ENV),
                   help=f"local model directory (REVTAF.from_pretrained); env {CHECKPOINT_ENV}")
    p.add_argument("--hf-repo", default=os.environ.get("REVTAF_HF_REPO"), help="Hugging Face model repo id")
    p.add_argument("--hf-revision", default=os.environ.get("REVTAF_HF_REVISION"),
                   help="commit sha (or tag) of --hf-repo to pin")
    p.add_argument("--data-root", default=None,
                   help=f"IU X-Ray folder with annotation.json and images/ (case browser); env {DATA_ENV}")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--fp32", action="store_true", default=os.environ.get("REVTAF_INT8") == "0",
                   help="serve the decoder in fp32 (env REVTAF_INT8=0). Default: dynamic int8, which writes ~2x faster "
                   "on a CPU; a report whose int8 decoding leaves a positive finding unstated is written again in "
                   "fp32 (README: the bundled model's test split has the same CE-F1 and adherence either way)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per model run (default: OMP_NUM_THREADS, else CPU cores / concurrent runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from revtaf.paths import resolve_model
    from revtaf_app import service, ui

    torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or ui.default_threads())

    try:
        path = resolve_model(args.checkpoint, args.hf_repo, args.hf_revision)
        data_root = resolve_data_root(args.data_root)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    logging.getLogger("revtaf.app").info("loading model from %s", path)
    try:
        model = service.load_model(path, int8=not args.fp32)
    except IntegrityError as exc:  # damaged or tampered weights: refuse to start, naming the files
        raise SystemExit(f"error: {exc}") from None
    svc = service.Service(model, data_root)
    demo, launch_kwargs = ui.build(svc)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs)


if __name__ == "__main__":
    main()
