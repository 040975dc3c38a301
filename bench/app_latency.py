"""`python -m revtaf_bench.app_latency`: wall time from upload to all panels filled, and of the page's other events.

The demo is launched on 127.0.0.1 and driven with gradio_client, so a figure includes everything a browser
waits for: upload, queue, image decoding, the model, overlays, tables, the comparison with the ground truth
(dataset case), output encoding and download. Median of `runs` runs on one study after one warm-up run.

Model: `checkpoint`, else the bundled default, else a random-init cpu preset (an upper bound: an untrained
decoder never stops early, and its random bank has no report texts, so no GRP sentences are drawn).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from revtaf_bench.harness import free_port, model_dir_or_random
from revtaf_app import panels
from revtaf_app import service as S


def _timed(fn, runs: int) -> tuple[float, float | None]:
    """Median wall time (ms) of `runs` calls after a warm-up call (first-call allocations, lazy imports), and
    the median model time (ms) the calls' Prediction JSON reports, if they return one."""
    fn()
    wall, model = [], []
    for _ in range(runs):
        t = time.perf_counter()
        outputs = fn()
        wall.append(1000 * (time.perf_counter() - t))
        model += [o["timings_ms"]["total"] for o in outputs if isinstance(o, dict) and "timings_ms" in o]
    return statistics.median(wall), statistics.median(model) if model else None


def bench(checkpoint: str | Path | None = None, data_root: str | Path | None = None, study_id: str | None = None,
          runs: int = 5, print_table: bool = True) -> dict:
    """Median end-to-end latency (ms) of the upload, dataset-case and heatmap events, with the model's share."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch
    from gradio_client import Client, handle_file

    from revtaf_app.ui import build, default_threads
    from revtaf.data import image_file
    from revtaf.paths import resolve_data_root

    torch.set_num_threads(default_threads())  # as `python -m app` does
    root = resolve_data_root(data_root)
    if root is None:
        raise FileNotFoundError("the app benchmark needs IU X-Ray: pass --data-root or set REVTAF_DATA")
    path, description = model_dir_or_random(checkpoint, tempfile.mkdtemp(prefix="revtaf-bench-"))
    model = S.load_model(path)
    service = S.Service(model, root)
    study_id = study_id or service.case_ids("test")[0]
    image = image_file(root, next(s for s in service.studies["test"] + service.studies["train"] if s.id == study_id))
    service.meteor_ready.wait(timeout=300)  # the jar's start-up is paid once per server, not per request

    demo, launch_kwargs = build(service)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        view = (False, False, [], 0.6, "inferno", "all")
        upload, upload_model = _timed(
            lambda: client.predict(handle_file(str(image)), *view, api_name="/analyze_upload"), runs)
        study, study_model = _timed(lambda: client.predict(study_id, *view, api_name="/analyze_study"), runs)
        heat, _ = _timed(lambda: client.predict("lrp:0", 0.5, "jet", api_name="/heatmap"), runs)
        client.predict("Pleural Effusion", "positive", api_name="/what_if_set")
        what_if, _ = _timed(lambda: client.predict(api_name="/what_if_page"), runs)
        generate, generate_model = _timed(
            lambda: client.predict(handle_file(str(image)), False, False, api_name="/generate"), runs)
        case = service.open_study(study_id)
        sentence, _ = _timed(lambda: [panels.sentence_evidence(case.prediction, 0),
                                      case.heatmap(f"lrp:{case.prediction.sentences[0].entity_index or 0}")], runs)
    finally:
        demo.close()
    results = {
        "upload → all panels (no ground truth)": upload,
        "  of which the model (Prediction.timings_ms)": upload_model,
        "dataset case → all panels + comparison": study,
        "  of which the model": study_model,
        "heatmap change (no model run)": heat,
        "what-if: the report rewritten to a changed finding (page)": what_if,
        "/generate (file in, prediction JSON and overlays out)": generate,
        "  of which the model": generate_model,
        "sentence click: evidence and its entity's map (server side, in process)": sentence,
    }
    out = {"model": description, "study": study_id, "runs": runs, "end_to_end_ms": results,
           "torch_threads": torch.get_num_threads()}
    if print_table:
        print(f"REVTAF demo latency, median of {runs} runs, study {study_id}, model: {description}, "
              f"torch threads: {out['torch_threads']}")
        width = max(map(len, results)) + 2
        print(f"{'event':<{width}}{'ms':>8}")
        for name, ms in results.items():
            print(f"{name:<{width}}{ms:>8.0f}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m revtaf_bench.app_latency", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=os.environ.get("REVTAF_CHECKPOINT"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--study", default=None, help="study id (default: the first test study)")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    bench(args.checkpoint, args.data_root, args.study, args.runs)


if __name__ == "__main__":
    main()
