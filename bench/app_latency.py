"""`python -m revtaf_bench.app_latency`: wall time from upload to all panels filled, and of the page's other events.

The demo runs as its own process (`python -m app`, as users start it; harness.AppServer) and is driven with
gradio_client, so a figure includes everything a browser waits for: upload, queue, image decoding, the model,
overlays, tables, the comparison with the ground truth (dataset case), output encoding and the images' download.
gradio_client adds costs a browser does not have (a new TLS context per file it moves, ~10 ms each): the figures
are upper bounds. Median of `runs` runs on one study after one warm-up run; the decoder as served (int8) beside
the fp32 decoder (`--fp32`), in one run.

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

from revtaf_bench.harness import AppServer, model_dir_or_random
from revtaf_app import panels
from revtaf_app import service as S

TWO_VIEW_STUDIES = 5  # the first test studies with a lateral, for the model's two-view latency
WARM_UP_S = 20  # after start-up the server warms the METEOR jar in the background (seconds of both cores)


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


def _events(url: str, image: Path, study_id: str, runs: int) -> dict[str, float | None]:
    """Median ms of each page event of the demo at `url`."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    view = (False, False, [], 0.6, "inferno", "all")
    upload, upload_model = _timed(
        lambda: client.predict([handle_file(str(image))], *view, api_name="/analyze_upload"), runs)
    study, study_model = _timed(lambda: client.predict(study_id, *view, api_name="/analyze_study"), runs)
    heat, _ = _timed(lambda: client.predict("lrp:0", 0.5, "jet", api_name="/heatmap"), runs)
    client.predict("Pleural Effusion", "positive", api_name="/what_if_set")
    what_if, _ = _timed(lambda: client.predict(api_name="/what_if_page"), runs)
    generate, generate_model = _timed(
        lambda: client.predict(handle_file(str(image)), False, False, api_name="/generate"), runs)
    return {
        "upload → all panels (no ground truth)": upload,
        "  of which the model (Prediction.timings_ms)": upload_model,
        "dataset case → all panels + comparison": study,
        "  of which the model (dataset case)": study_model,
        "heatmap change (no model run)": heat,
        "what-if: the report rewritten to a changed finding (page)": what_if,
        "/generate (file in, prediction JSON and overlays out)": generate,
        "  of which the model (/generate)": generate_model,
    }


def _two_views(model, pairs: list, runs: int) -> dict[str, tuple[float, float]]:
    """Median ms of the model on each study's frontal alone and on its two films, over `pairs` (frontal,
    lateral): the whole prediction, and its reading of the films (everything but writing the report, whose
    length differs between the two readings and moves a study's ratio by ±20 %). The two alternate, so a
    background task (the METEOR warm-up) weighs on both alike."""
    whole, reading = ([], []), ([], [])
    for frontal, lateral in pairs:
        for study in (frontal, [frontal, lateral]):  # warm-up
            model.predict(study)
        times = ([], []), ([], [])
        for _ in range(runs):
            for i, study in enumerate((frontal, [frontal, lateral])):
                t = time.perf_counter()
                pred = model.predict(study)
                times[0][i].append(1000 * (time.perf_counter() - t))
                times[1][i].append(pred.timings_ms["total"] - pred.timings_ms["generation"])
        for i in range(2):
            whole[i].append(statistics.median(times[0][i]))
            reading[i].append(statistics.median(times[1][i]))
    return {part: (statistics.median(ms[0]), statistics.median(ms[1]))
            for part, ms in (("whole prediction", whole), ("reading the films", reading))}


def bench(checkpoint: str | Path | None = None, data_root: str | Path | None = None, study_id: str | None = None,
          runs: int = 5, print_table: bool = True) -> dict:
    """Median end-to-end latency (ms) of the upload, dataset-case, heatmap, what-if and /generate events, with
    the model's share, for the decoder as served (int8, `python -m app`) beside the fp32 decoder (`--fp32`, the
    path before int8 was the default), in one run; and a sentence click's server work (in process)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    import torch

    from revtaf.data import image_file, load_annotation, read_image
    from revtaf.paths import resolve_data_root
    from revtaf_app.ui import default_threads

    root = resolve_data_root(data_root)
    if root is None:
        raise FileNotFoundError("the app benchmark needs IU X-Ray: pass --data-root or set REVTAF_DATA")
    path, description = model_dir_or_random(checkpoint, tempfile.mkdtemp(prefix="revtaf-bench-"))
    splits = load_annotation(root, "iu")
    study = next((s for s in splits["test"] + splits["train"] if s.id == study_id), None) if study_id else splits["test"][0]
    if study is None:
        raise ValueError(f"unknown study id {study_id!r}")
    results = {}
    for decoder in ("fp32", "int8"):
        with tempfile.TemporaryDirectory(prefix="revtaf-latency-") as work:
            server = AppServer(path, work, data_root=root, env={"REVTAF_INT8": "0" if decoder == "fp32" else "1"})
            server.start()
            time.sleep(WARM_UP_S)
            try:
                results[decoder] = _events(server.url, image_file(root, study), study.id, runs)
            finally:
                server.stop()
    torch.set_num_threads(default_threads())  # as `python -m app` does
    service = S.Service(S.load_model(path, int8=True), root)
    case = service.open_study(study.id)
    sentence, _ = _timed(lambda: [panels.sentence_evidence(case.prediction, 0),
                                  case.heatmap(f"lrp:{case.prediction.sentences[0].entity_index or 0}")], runs)
    out = {"model": description, "study": study.id, "runs": runs, "end_to_end_ms": results["int8"],
           "fp32_ms": results["fp32"], "sentence_click_server_ms": sentence, "torch_threads": default_threads()}
    if service.views > 1:  # the model alone: a study of two films against its frontal, over several studies
        pairs = [(read_image(image_file(root, s)), read_image(image_file(root, s, "lateral")))
                 for s in splits["test"] if image_file(root, s, "lateral") is not None][:TWO_VIEW_STUDIES]
        out["model_ms"] = _two_views(service.model, pairs, runs)
    if print_table:
        print(f"REVTAF demo latency, median of {runs} runs, study {study.id}, model: {description}, "
              f"torch threads per run: {out['torch_threads']}")
        width = max(map(len, results["int8"])) + 2
        print(f"{'event':<{width}}{'fp32 ms':>9}{'int8 ms':>9}{'ratio':>7}")
        for name, fast in results["int8"].items():
            slow = results["fp32"][name]
            if fast is not None and slow is not None:
                print(f"{name:<{width}}{slow:>9.0f}{fast:>9.0f}{slow / fast:>6.2f}x")
        print(f"sentence click: its evidence and its entity's map (server side, in process): {sentence:.0f} ms")
        if "model_ms" in out:
            print(f"the model on a study (in process, int8, median of the first {TWO_VIEW_STUDIES} test studies with a "
                  f"lateral):")
            for part, (one, two) in out["model_ms"].items():
                print(f"  {part}: frontal only {one:.0f} ms, frontal and lateral {two:.0f} ms ({two / one:.2f}x)")
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
