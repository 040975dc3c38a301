"""`revtaf bench`: inference latency per stage and parameter counts of a preset, with random weights, on the
default fp32 path and with the decoder in int8, side by side.

Random initialisation has the preset's exact shapes, so latency is what a trained model of that size costs,
with one caveat that makes the figure an upper bound: an untrained decoder never emits [SEP] early, so
generation always runs to max_new_tokens (a sentence-plan decoder is timed with free topics; `generation_bench`
times the plan of a trained model). The bank holds ~2,000 random rows (IU X-Ray's training split size).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from revtaf.data.imageio import read_image
from revtaf.model.random_init import random_model

STAGES = ("decode", "entity", "retrieval", "visual", "fusion", "generation", "total")


def _png_bytes(seed: int = 0, size: int = 512) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _time_path(model, data: bytes, runs: int) -> dict[str, float]:
    """Median per-stage ms of `runs` runs of one study after a warm-up run (first-call allocations). A random
    decoder writes to no plan: its topics are free (a plan would try every topic, with wide beams, in vain)."""
    from dataclasses import replace

    generation = replace(model.cfg.generation, plan=False)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in range(runs + 1):
        t = time.perf_counter()
        image = read_image(data)
        decode = 1000 * (time.perf_counter() - t)
        pred = model.predict(image, generation=generation)
        if i == 0:
            continue
        samples["decode"].append(decode)
        for stage in STAGES[1:]:
            samples[stage].append(pred.timings_ms[stage] + (decode if stage == "total" else 0.0))
    return {s: round(statistics.median(v), 1) for s, v in samples.items()}


def bench(preset: str, runs: int = 3, print_table: bool = True, threads: int | None = None,
          plugins: Sequence[str] = ()) -> dict:
    """Per-stage latency (ms, median of `runs` after a warm-up) of one study on the default fp32 path and with
    the decoder in int8 (`REVTAF.quantize_int8`), measured in the same run, their ratio, and parameter counts.

    `threads` sets torch's intra-op threads for the run (default: leave as is); `plugins` switches sibling
    methods' modules on (revtaf.switches.PLUGINS).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if threads is not None:
        torch.set_num_threads(threads)
    model = random_model(preset, plugins=plugins)
    data = _png_bytes()
    parameters = model.num_parameters()
    latency = {"fp32": _time_path(model, data, runs)}
    latency["int8"] = _time_path(model.quantize_int8(), data, runs)
    total, naive = latency["int8"]["total"] / 1000, latency["fp32"]["total"] / 1000
    result = {
        "preset": preset,
        "plugins": list(plugins),
        "threads": torch.get_num_threads(),
        "runs": runs,
        "latency_ms": latency,
        "naive_total_s": round(naive, 3),
        "total_s": round(total, 3),
        "ratio": round(naive / total, 2),
        "parameters": parameters,
        "generated_tokens_max": model.cfg.generation.max_new_tokens,
    }
    if print_table:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    lat = result["latency_ms"]
    plugins = f" with {', '.join(result['plugins'])}" if result["plugins"] else ""
    lines = [f"REVTAF preset '{result['preset']}'{plugins} (random init, {result['threads']} threads, median of "
             f"{result['runs']} runs, one study, {result['generated_tokens_max']} tokens x 3 beams)", "",
             f"{'stage':<12}{'fp32 ms':>10}{'int8 ms':>10}{'ratio':>8}"]
    lines += [f"{stage:<12}{lat['fp32'][stage]:>10.1f}{lat['int8'][stage]:>10.1f}"
              f"{lat['fp32'][stage] / max(lat['int8'][stage], 1e-9):>8.2f}" for stage in STAGES]
    lines += ["", "fp32: the default path (exact). int8: REVTAF.quantize_int8(), the decoder's Linear layers in "
              "dynamic int8 (approximate; opt-in)", "", f"{'component':<14}{'parameters':>14}"]
    lines += [f"{name:<14}{n:>14,}" for name, n in result["parameters"].items()]
    return "\n".join(lines)


def generation_bench(checkpoint, data_root, studies: int = 20, runs: int = 3, print_table: bool = True) -> dict:
    """Report generation of a trained sentence-plan model on `studies` test images, three paths in one run: the
    plan loop (sentence_plan.write_planned, the default), the same loop with topics chosen freely (plan off),
    and transformers' `generate` over the same prompt and memory (the path before the plan: one beam search of
    the whole report, topic tokens written as words). Median ms per study of `runs` passes after a warm-up, the
    mean generated length, and the ratio generate / plan.

    A trained model is needed: a random decoder never ends a sentence, so it would time the worst case."""
    from dataclasses import replace

    from revtaf.data import image_file, load_annotation, require_data_root
    from revtaf.data.transforms import entity_transform, test_transform
    from revtaf.model.decoder import prompt_ids
    from revtaf.model.entity import predict_triplets
    from revtaf.model.revtaf import REVTAF
    from revtaf.model.sentence_plan import write_planned

    model = REVTAF.from_pretrained(checkpoint)
    if not model.cfg.decoder.sentence_plan:
        raise ValueError(f"{checkpoint}: its decoder was not trained to a sentence plan")
    root = require_data_root(data_root)
    chosen = load_annotation(root)["test"][:studies]
    g = model.cfg.generation
    inputs = []
    with torch.no_grad():  # everything before the decoder, once per study
        for study in chosen:
            pil = read_image(image_file(root, study)).to_pil()
            exist, exists, position = predict_triplets(
                model.entity_model(entity_transform(model.cfg.image_size)(pil)[None]), model.cfg.absent_position)
            out = model.infer(test_transform(model.cfg.image_size)(pil)[None], exist, position, exists,
                              generation=replace(g, max_new_tokens=1))
            inputs.append((prompt_ids(model.tokenizer, out.states, model.decoder.per_disease), out.fused.fc,
                           out.states[0].numpy()))
    paths = {
        "plan": lambda p, m, s: write_planned(model.decoder, p, m, s, g).text,
        "free": lambda p, m, s: write_planned(model.decoder, p, m, s, replace(g, plan=False)).text,
        "generate": lambda p, m, s: model.decoder.generate(p, m, g.num_beams, g.max_new_tokens, g.min_length,
                                                           g.no_repeat_ngram_size)[0],
    }
    result = {"checkpoint": str(checkpoint), "studies": len(inputs), "runs": runs, "threads": torch.get_num_threads(),
              "ms_per_study": {}, "words_per_report": {}}
    with torch.no_grad():
        for name, path in paths.items():
            times = []
            for i in range(runs + 1):
                t = time.perf_counter()
                texts = [path(*x) for x in inputs]
                if i:
                    times.append(1000 * (time.perf_counter() - t) / len(inputs))
            result["ms_per_study"][name] = round(statistics.median(times), 1)
            result["words_per_report"][name] = round(float(np.mean([len(t.split()) for t in texts])), 1)
    result["ratio_generate_over_plan"] = round(result["ms_per_study"]["generate"] / result["ms_per_study"]["plan"], 2)
    if print_table:
        print(format_generation(result))
    return result


def format_generation(result: dict) -> str:
    lines = [f"Report generation, {result['checkpoint']} ({result['studies']} test studies, {result['threads']} threads,"
             f" median of {result['runs']} passes)", "", f"{'path':<10}{'ms / study':>12}{'words':>8}"]
    lines += [f"{name:<10}{ms:>12.1f}{result['words_per_report'][name]:>8.1f}"
              for name, ms in result["ms_per_study"].items()]
    lines += ["", "plan: the sentence-plan loop (default); free: the same loop, topics unconstrained; generate: "
              f"transformers' beam search of the whole report. generate / plan = {result['ratio_generate_over_plan']}"]
    return "\n".join(lines)


RETRIEVAL_SIZES = (2_955, 270_790)  # IU X-Ray's training studies (R2Gen + the rest) and MIMIC-CXR's


def retrieval_bench(sizes=RETRIEVAL_SIZES, k: int = 5, batch: int = 64, runs: int = 5, seed: int = 0,
                    print_table: bool = True) -> dict:
    """LRE retrieval at bank sizes `sizes`: a synthetic bank of N rows (uniform 75-d entity scores embedded by
    a randomly initialised LRE into the Poincaré ball, float32, as `ReferenceDatabase.build` stores it), then the
    median time of a top-`k` query for one study and for a batch of `batch`, and the bank's memory; the same
    with the int8 scan (`build_int8_index`), and how many of the batch's queries it answers as the exact search."""
    from revtaf.model.config import LREConfig
    from revtaf.model.lre import LearnableRetrievalEnhancer, ReferenceDatabase

    torch.manual_seed(seed)
    cfg = LREConfig()
    lre = LearnableRetrievalEnhancer(75, cfg.hidden_dim, cfg.num_layers, cfg.c).eval()
    rows = []
    for n in sizes:
        t = time.perf_counter()
        db = ReferenceDatabase.build(lre, torch.rand(n, 75), [str(i) for i in range(n)])
        build_s = time.perf_counter() - t
        queries = lre(torch.rand(batch, 75)).detach()
        memory = db.embeddings.numel() * db.embeddings.element_size() + db.sq_norms.numel() * 4
        row = {"rows": n, "dim": db.embeddings.shape[1], "k": k, "batch": batch, **_time_search(db, queries, k, runs),
               "bank_mb": round(memory / 2**20, 1), "build_s": round(build_s, 2)}
        exact = db.search(queries, k)[1]
        db.build_int8_index()
        int8 = _time_search(db, queries, k, runs)
        row.update({"query_ms_int8": int8["query_ms"], "batch_ms_int8": int8["batch_ms"],
                    "int8_index_mb": round(n * (db.embeddings.shape[1] + 8) / 2**20, 1),
                    "int8_same_topk": sum(set(a.tolist()) == set(b.tolist())
                                          for a, b in zip(exact, db.search(queries, k)[1]))})
        rows.append(row)
    result = {"threads": torch.get_num_threads(), "runs": runs, "sizes": rows}
    if print_table:
        print(format_retrieval(result))
    return result


def _time_search(db, queries: torch.Tensor, k: int, runs: int) -> dict[str, float]:
    """Median ms of a top-k search for one query and for the whole batch, after a warm-up run."""
    timings = {"query_ms": [], "batch_ms": []}
    for i in range(runs + 1):
        t = time.perf_counter()
        db.search(queries[:1], k)
        one = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        db.search(queries, k)
        many = 1000 * (time.perf_counter() - t)
        if i:
            timings["query_ms"].append(one)
            timings["batch_ms"].append(many)
    return {name: round(statistics.median(v), 2) for name, v in timings.items()}


def format_retrieval(result: dict) -> str:
    lines = [f"LRE retrieval, synthetic bank (random LRE, float32, {result['threads']} threads, median of "
             f"{result['runs']} runs)", "",
             f"{'rows':>10}{'dim':>6}{'1 query ms':>13}{'batch ms':>10}{'batch':>7}{'bank MB':>10}{'build s':>10}"
             f"{'int8: 1 query':>15}{'batch':>9}{'index MB':>10}{'same top-k':>12}"]
    lines += [f"{r['rows']:>10,}{r['dim']:>6}{r['query_ms']:>13.2f}{r['batch_ms']:>10.2f}{r['batch']:>7}{r['bank_mb']:>10.1f}"
              f"{r['build_s']:>10.2f}{r['query_ms_int8']:>15.2f}{r['batch_ms_int8']:>9.2f}{r['int8_index_mb']:>10.1f}"
              f"{r['int8_same_topk']:>9}/{r['batch']}" for r in result["sizes"]]
    lines += ["", "int8: ReferenceDatabase.build_int8_index(), an int8 scan whose shortlist is re-scored exactly in "
              "float32; same top-k = queries of the batch whose k neighbours equal the exact search's"]
    return "\n".join(lines)
