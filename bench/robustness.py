"""`revtaf bench --robustness`: does the demo survive strangers? Measured, not assumed.

Four checks, each a module whose functions the tests reuse with small sizes (the harness they share: harness.py):
1. hostile inputs (`harness.run_library`, `check_inputs.run_app_corpus`): every file of the generated corpus through `read_image`
   + `REVTAF.predict` in a sandboxed child process with a time limit, then through the running app's
   `/generate` API; each must end in a report or a typed, readable error, and a good request must succeed
   right after every bad one;
2. load (`check_load`: `run_load`, `session_isolation`, `soak`): concurrent `gradio_client` sessions on loopback mixing good and
   bad files; latency percentiles, throughput, peak RSS of the server, same image -> same report;
3. patient data (`check_privacy.privacy_probe`): DICOMs whose identifying tags (and file name) carry marker strings; no
   marker may appear in any API output, downloaded file, server log line or file left under the server's
   temporary folders, and no upload may stay on disk;
4. weights integrity (`check_integrity.integrity_checks`, `check_privacy.unsafe_weight_loads`): corrupted, truncated and missing files of
   a model directory are refused by name; weights are read only by safetensors or torch.load(weights_only=True).

The app runs as its own process (`python -m app`, `AppServer`), exactly as users start it, so its log is
the real log and a crash cannot take the harness down with it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from revtaf_bench.check_inputs import run_app_corpus
from revtaf_bench.check_integrity import integrity_checks
from revtaf_bench.check_load import burst, format_soak, run_load, session_isolation, soak
from revtaf_bench.check_privacy import privacy_probe, unsafe_weight_loads
from revtaf_bench.harness import AppServer, REPO, client, generate, model_dir_or_random, run_library


BAD_FOR_LOAD = ("empty", "text-renamed-png", "png-bomb-20000", "dicom-multiframe", "jpeg-truncated")


def soak_bench(checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
               minutes: float = 30.0, clients: int = 4, timeout_s: float = 300.0, print_line: bool = True) -> dict:
    """`revtaf bench --robustness --soak MINUTES`: `python -m app` with the given (else bundled, else random)
    model under `soak` traffic; prints the `soak:` line and returns every figure."""
    from revtaf.paths import resolve_data_root

    from revtaf_bench import hostile_corpus as helpers

    root = resolve_data_root(data_root)
    with tempfile.TemporaryDirectory(prefix="revtaf-soak-") as tmp:
        work = Path(tmp)
        model_dir, model = model_dir_or_random(checkpoint, work)
        good = _good_files(root, work, helpers)
        bad = _bad_files(helpers.corpus(), work)
        with AppServer(model_dir, work / "app", java=False) as server:
            generate(client(server.url), good[0], timeout_s)  # warm-up: first-call costs are not soak figures
            out = {"model": model, **soak(server, good, bad, minutes, clients, timeout_s=timeout_s)}
            if out["errors"]:  # the server's side of it, before its folder is deleted
                out["error_detail"] += [f"server log: {line[:200]}" for line in server.log_text().splitlines()
                                        if "Error" in line or "Traceback" in line][-10:]
    if print_line:
        print(format_soak(out))
    return out


def _bad_files(items: Sequence, folder: Path) -> list[Path]:
    """The hostile corpus items of BAD_FOR_LOAD written to `folder`, for the load and soak traffic."""
    paths = []
    for item in items:
        if item.name in BAD_FOR_LOAD:
            paths.append(folder / item.filename)
            paths[-1].write_bytes(item.data)
    return paths


def _good_files(data_root: Path | None, folder: Path, helpers, n: int = 2) -> list[Path]:
    if data_root is not None:
        from revtaf.data import image_file, load_annotation

        return [image_file(data_root, s) for s in load_annotation(data_root, "iu")["test"][:n]]
    paths = []
    for i in range(n):
        paths.append(folder / f"good-{i}.png")
        paths[-1].write_bytes(helpers.good_image(seed=i))
    return paths


def bench(checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None, clients: int = 8,
          requests: int = 4, timeout_s: float = 300.0, print_table: bool = True) -> dict:
    """Run the four checks against `python -m app` with the given (else bundled, else random) model; print the
    summary and return every figure."""
    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients}, {requests}")
    from revtaf.paths import resolve_data_root

    from revtaf_bench import hostile_corpus as helpers

    root = resolve_data_root(data_root)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="revtaf-robustness-") as tmp:
        work = Path(tmp)
        model_dir, out["model"] = model_dir_or_random(checkpoint, work)
        items = helpers.corpus()
        good = _good_files(root, work, helpers)
        bad = _bad_files(items, work)

        start = time.perf_counter()
        library = run_library(items, model_dir, timeout_s)
        out["library"] = {"tried": len(library), "clean": sum(o.clean for o in library),
                          "reports": sum(o.kind == "report" for o in library),
                          "warned": sum(bool(o.warned) for o in library),
                          "typed_errors": sum(o.kind == "error" for o in library),
                          "crashed": [f"{o.name}: {o.kind} {o.error_type or ''} {o.message[:80]}"
                                      for o in library if not o.clean],
                          "unexpected": [o.name for o in library if not o.as_expected],
                          "max_seconds": round(max(o.seconds for o in library), 2),
                          "wall_s": round(time.perf_counter() - start, 1)}

        with AppServer(model_dir, work / "app", data_root=root) as server:
            from revtaf_app.ui import MODEL_CONCURRENCY, QUEUE_SIZE

            api = run_app_corpus(server.url, items, good[0], work / "uploads", helpers.MARKERS, timeout_s)
            refused = [o for o in api if o.kind != "ok"]
            out["app"] = {"tried": len(api), "clean": sum(o.clean for o in api),
                          "reports": sum(o.kind == "ok" for o in api),
                          "refused_readably": sum(o.kind == "error" and not o.problems for o in api),
                          "failed": [f"{o.name}: {o.kind} {o.problems} {o.message[:80]}" for o in api if not o.clean],
                          "good_after_refusal": f"{sum(bool(o.good_after) for o in refused)}/{len(refused)}",
                          "server_alive": server.alive()}
            pyd_items = helpers.pydicom_corpus()
            pyd = run_app_corpus(server.url, pyd_items, good[0], work / "pydicom", helpers.MARKERS, timeout_s)
            expected = {h.name: h.expect for h in pyd_items}
            out["pydicom"] = {"tried": len(pyd), "read": sum(o.kind == "ok" for o in pyd),
                              "refused": sum(o.kind == "error" and not o.problems for o in pyd),
                              "crashed": [f"{o.name}: {o.kind} {o.problems} {o.message[:80]}" for o in pyd if not o.clean],
                              "unexpected": [o.name for o in pyd if (o.kind == "ok") != (expected[o.name] is None)]}
            load = run_load(server.url, good, bad, clients, requests, timeout_s)
            out["load"] = {**load.summary(), "good_failed_detail": load.good_failed, "bad_detail": load.bad_not_refused,
                           "peak_rss_mb": round((server.peak_rss() or 0) / 2**20)}
            n_burst = MODEL_CONCURRENCY + QUEUE_SIZE + 4
            calls = burst(server.url, good[0], n_burst, timeout_s)
            busy = [c for c in calls if c.kind == "busy"]
            out["queue"] = {"concurrency": MODEL_CONCURRENCY, "max_waiting": QUEUE_SIZE, "burst": n_burst,
                            "served": sum(c.kind == "ok" for c in calls), "busy": len(busy),
                            "other": [f"{c.kind} {c.message[:80]}" for c in calls if c.kind not in ("ok", "busy")],
                            "busy_message": busy[0].message if busy else None}
            out["isolation"] = session_isolation(server.url, good, sessions=4, timeout_s=timeout_s)
            out["privacy"] = privacy_probe(server.url, server, helpers.marker_dicoms(),
                                           helpers.ALL_MARKERS + (helpers.FILE_MARKER,), work / "privacy", timeout_s)
            out["load"]["peak_rss_mb"] = round((server.peak_rss() or 0) / 2**20)
            out["app"]["server_alive"] = server.alive()

        checks = integrity_checks(model_dir, work / "integrity")
        out["integrity"] = {"checks": checks, "passed": sum(c["passed"] for c in checks)}
        out["weight_loads"] = {"serving": unsafe_weight_loads([REPO / "revtaf", REPO / "app"]),
                               "training": unsafe_weight_loads([REPO / "train"])}
    if print_table:
        print(format_summary(out))
    return out


def format_summary(r: dict) -> str:
    lib, api, load, q, iso, priv = r["library"], r["app"], r["load"], r["queue"], r["isolation"], r["privacy"]
    crashed = len(lib["crashed"])
    lines = [
        f"REVTAF robustness (model: {r['model']})",
        f"hostile inputs, library (read_image + predict, sandboxed): {lib['tried']} tried · {lib['clean']} handled "
        f"cleanly ({lib['reports']} reports, of which {lib['warned']} with the input warning, {lib['typed_errors']} typed errors) · {crashed} crashed/hung/untyped · "
        f"{lib['tried'] - len(lib['unexpected'])} as expected · slowest {lib['max_seconds']} s",
        f"hostile inputs, app /generate: {api['tried']} tried · {api['clean']} handled cleanly "
        f"({api['reports']} reports, {api['refused_readably']} readable refusals, no stack trace) · "
        f"{len(api['failed'])} failed · good request right after each refusal: {api['good_after_refusal']}",
        f"pydicom corpus, app /generate: {r['pydicom']['tried']} files tried · {r['pydicom']['read']} read (report) · "
        f"{r['pydicom']['refused']} refused readably · {len(r['pydicom']['crashed'])} crashed · "
        f"{len(r['pydicom']['unexpected'])} unlike the expected-outcome table",
        f"load: {load['clients']} concurrent clients x {load['requests'] // load['clients']} requests (1 in 3 bad): "
        f"{load['good_served']} good served, {load['good_failed']} failed, bad refused cleanly: "
        f"{'yes' if load['bad_refused_cleanly'] else 'NO'} · p50 {load['p50_s']:.2f} s, p95 {load['p95_s']:.2f} s · "
        f"{load['throughput_per_min']} reports/min · peak RSS of the server {load['peak_rss_mb']} MB · "
        f"same image -> same report: {'yes' if load['deterministic'] else 'NO'}",
        f"queue: {q['concurrency']} running + {q['max_waiting']} waiting; a burst of {q['burst']}: "
        f"{q['served']} served, {q['busy']} answered busy ({q['busy_message']!r}), {len(q['other'])} other",
        f"sessions isolated (ground truth, ablation toggles, review notes): {'yes' if iso['isolated'] else 'NO'} "
        f"({iso['sessions']} concurrent sessions)",
        f"patient-data markers leaked: {len(priv['leaks'])} ({priv['markers']} markers, {priv['requests']} requests, "
        f"{priv['places_scanned']} outputs/log/files scanned) · uploads left on disk: {len(priv['uploads_kept'])}",
        f"weights integrity: {r['integrity']['passed']}/{len(r['integrity']['checks'])} checks passed ("
        + "; ".join(f"{c['check']}: {'ok' if c['passed'] else 'FAILED'}" for c in r["integrity"]["checks"]) + ")",
        f"weights read only via safetensors / torch.load(weights_only=True) in revtaf/ and app/: "
        f"{'yes' if not r['weight_loads']['serving'] else 'NO: ' + '; '.join(r['weight_loads']['serving'])} · "
        f"train/: {len(r['weight_loads']['training'])} torch.load calls without weights_only=True (its own training "
        f"checkpoints and feature cache; listed in --out)",
    ]
    details = lib["crashed"] + api["failed"] + r["pydicom"]["crashed"] + load["good_failed_detail"] + load["bad_detail"] + q["other"] \
        + iso["failures"] + priv["leaks"] + priv["uploads_kept"]
    return "\n".join(lines + [f"  ! {d}" for d in details])
