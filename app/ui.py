"""The demo page (Gradio Blocks): one function per panel, the event wiring, and the `/generate` API. Every event
calls `app.service`; this file only maps results to components, as {component: value}.

API: `/generate` (a `gr.api` endpoint: file in, prediction JSON and overlays out) and the page's main events
(`/analyze_upload`, `/analyze_study`, `/heatmap`, `/ablate`, `/compare`, `/save_review`) are documented; the
page's own view events (window, entity table, list and next case) are callable but undocumented.

Per-session data lives in `gr.State` (the analysed case with its cached predictions, the error review), never
in module globals, so users never see each other's cases.
"""

# No `from __future__ import annotations`: gr.api reads the type hints of `/generate` at run time.
import atexit
import functools
import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image

from revtaf_app import errors, panels, render, review, uploads
from revtaf_app.case import Case
from revtaf_app import service as S
from revtaf.data import ImageReadError
from revtaf.labels import LABEL_NAMES_18

log = logging.getLogger("revtaf.app")

TITLE = "REVTAF · chest X-ray report generation with its evidence"
CSS = """
.notice {background:#fff4e5;border:1px solid #f0b35b;border-radius:8px;padding:8px 14px;color:#7a4100;font-weight:600}
.dicom-warning {background:#fdecec;border:1px solid #e79a9a;border-radius:8px;padding:6px 12px;color:#8a1f1f}
.attribution {font-size:0.85em;opacity:0.8}
.report textarea {font-size:1.02em;line-height:1.5}
.withheld textarea {opacity:0.45}
.input-warning {background:#fdecec;border:2px solid #d64545;border-radius:8px;padding:8px 14px;color:#7a1010;font-weight:600}
.panel-title h3 {margin:0 0 4px 0}
footer {display:none !important}
"""
THEME = gr.themes.Soft(
    primary_hue="blue",
    neutral_hue="slate",
    # system fonts: the page must not fetch web fonts (offline laptops, no third-party requests)
    font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
)
NO_GT = "<em>No ground truth: load a dataset case, or paste a report above and press Compare.</em>"
EVENT_TTL_S = 3600  # an analysed case is dropped from memory an hour after it was made
# Model runs at a time; more wait in the queue, at most QUEUE_SIZE (environment overrides for deployments/tests).
MODEL_CONCURRENCY = int(os.environ.get("REVTAF_CONCURRENCY", "2"))
QUEUE_SIZE = int(os.environ.get("REVTAF_QUEUE_SIZE", "16"))
# Key of the browser-side review store's encryption. Gradio's default is random per server start, which would make
# every stored review unreadable after a restart (a Space restarts often); a deployment may set its own.
REVIEW_SECRET = os.environ.get("REVTAF_REVIEW_SECRET", "revtaf-review-store-v1")


def default_threads() -> int:
    """Torch threads per model run: the cores shared by the concurrent runs. Oversubscribing (2 runs x 2
    threads on 2 cores) made generation up to 8x slower here, from OpenMP threads spinning against each other."""
    return max(1, (os.cpu_count() or 1) // MODEL_CONCURRENCY)


def _message(exc: Exception, where: str) -> str:
    """The user-facing sentence for an exception: typed input errors speak for themselves; anything else is
    logged (type and traceback only: a message could quote user data) and replaced by a generic sentence."""
    if isinstance(exc, (ImageReadError, errors.AppInputError)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Not enough memory for this image; try a smaller one."
    log.error("unexpected %s in %s:\n%s", type(exc).__name__, where, "".join(traceback.format_tb(exc.__traceback__)))
    return ("Something went wrong on the server while processing this request (it was logged). "
            "Please try again or use another image.")


def api_errors(fn):
    """For API endpoints: a failure is a gr.Error carrying a readable message (gradio_client raises AppError)."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            message = _message(exc, fn.__name__)
            raise gr.Error(message, title="Cannot process this input", print_exception=False) from None

    return inner


def page_errors(fn, status: gr.components.Component | None = None, reset: dict | None = None):
    """For page events, which return {component: value}: a failure shows a warning toast (and the message in
    `status`) and leaves every other output as it was (except the `reset` ones), so the last good case stays on
    screen instead of a wall of error badges."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = _message(exc, fn.__name__)
            gr.Warning(message, title="Cannot process this input")
            out = dict(reset or {})
            if status is not None:
                out[status] = f"⚠ {message}"
            return out

    return inner


# ---------------------------------------------------------------------------------------------- panels
# One function per panel: it lays out the panel's components and returns them; a matching `*_values` function
# gives their values for an analysed case as {component: value}. `build` only places panels and wires events.

class Panel(SimpleNamespace):
    """The components of one panel, by name."""


def input_panel(service: S.Service) -> Panel:
    gr.Markdown("### 1 · Input", elem_classes="panel-title")
    with gr.Tabs():
        with gr.Tab("Upload"):
            upload = gr.File(label="Chest X-ray: PNG, JPEG, 16-bit PNG or DICOM (.dcm)", height=110, elem_id="upload")
        with gr.Tab("Dataset", visible=service.has_data):
            split = gr.Dropdown(list(service.studies) or ["test"], value="test", label="Split")
            finding = gr.Dropdown(["any", *LABEL_NAMES_18], value="any", label="Ground-truth finding (rule labeler)")
            with gr.Row():
                order = gr.Radio([("dataset order", "dataset"), ("errors first", "errors")], value="dataset",
                                 label="Order", info="errors first: missed findings, then false findings (the "
                                 "model runs over the split once, then it is cached)", elem_id="case-order")
                errors_only = gr.Checkbox(False, label="Only cases with a missed or false finding",
                                          elem_id="errors-only")
            case_id = gr.Dropdown(service.case_ids("test") if service.has_data else [], label="Study",
                                  filterable=True, elem_id="case-id")
            progress = gr.Markdown("", elem_id="review-progress")
            with gr.Row():
                load_case = gr.Button("Load case", variant="primary", elem_id="load-case")
                next_case = gr.Button("Next case →")
            gr.Markdown(f"Images and reports: {S.IU_ATTRIBUTION} (CC BY-NC-ND 4.0), shown unmodified.",
                        elem_classes="attribution")
    image_view = gr.Image(label="Image (as displayed)", type="numpy", image_mode="L", interactive=False,
                          height=360, buttons=["fullscreen"], elem_id="image-view", format="png")
    image_info = gr.Markdown("")
    dicom_warning = gr.HTML(f'<div class="dicom-warning">{errors.BURNED_IN_WARNING}</div>', visible=False)
    with gr.Accordion("Display window (the model always sees the file's own window)", open=False):
        preset = gr.Radio(["file", *uploads.WINDOW_PRESETS], value="file", label="Preset (percentile windows: "
                          "radiograph values are not Hounsfield units)")
        center = gr.Slider(0, 255, value=127.5, step=0.5, label="Window center (level)")
        width = gr.Slider(1, 510, value=255, step=0.5, label="Window width")
        invert = gr.Checkbox(False, label="Invert")
    gr.Markdown("**Ablation** — switch a branch off to see what it contributes (re-runs the model):")
    with gr.Row():
        grp_off = gr.Checkbox(False, label="Retrieval (GRP) off")
        lrp_off = gr.Checkbox(False, label="Entity prompts (LRP) off")
    # the plug-ins the model carries (TISR, UAR's TIR): hidden for a model without any
    plugins_off = gr.CheckboxGroup(service.plugin_switches, value=[], label="Plug-ins off",
                                   visible=bool(service.plugin_switches), elem_id="plugins-off")
    # what each carried plug-in does at inference, so a missing switch is explained, not a mystery
    gr.Markdown(service.plugin_note, visible=bool(service.model.plugins), elem_id="plugin-note")
    return Panel(upload=upload, split=split, finding=finding, order=order, errors_only=errors_only,
                 case_id=case_id, progress=progress, load_case=load_case,
                 next_case=next_case, image_view=image_view, image_info=image_info, dicom_warning=dicom_warning,
                 preset=preset, center=center, width=width, invert=invert, grp_off=grp_off, lrp_off=lrp_off,
                 plugins_off=plugins_off)


def input_values(p: Panel, case: Case, new_image: bool) -> dict:
    image, pred = case.image, case.prediction
    lo, hi, max_w = uploads.window_range(image)
    keep = gr.update()
    return {
        p.image_view: case.gray(),
        p.image_info: panels.describe_image(image, case.original_size, pred)
        + (f" · study `{case.study_id}`" if case.study_id else ""),
        p.dicom_warning: gr.update(visible=image.source_format == "dicom"),
        p.center: gr.update(minimum=lo, maximum=hi, value=float(image.window[0])) if new_image else keep,
        p.width: gr.update(minimum=1, maximum=max_w, value=float(image.window[1])) if new_image else keep,
        p.invert: bool(image.invert) if new_image else keep,
        p.preset: "file" if new_image else keep,
    }


def report_panel() -> Panel:
    gr.Markdown("### 2 · Generated report", elem_classes="panel-title")
    input_warning = gr.HTML("", visible=False, elem_id="input-warning")
    report = gr.Textbox(label="Generated findings", lines=6, interactive=False, elem_classes="report",
                        buttons=["copy"], elem_id="report")
    status = gr.Markdown("Upload an image or load a dataset case.")
    disease_md = gr.Markdown("")
    diseases = gr.Dataframe(headers=panels.DISEASE_HEADERS, interactive=False, max_height=330, wrap=True,
                            label="18 disease prompts: chosen state and the 4 state probabilities",
                            elem_id="diseases")
    return Panel(input_warning=input_warning, report=report, status=status, disease_md=disease_md, diseases=diseases)


def report_values(p: Panel, case: Case, written) -> dict:
    """`written`: the labeler's states of the generated report (Service.written_states)."""
    pred = case.prediction
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in pred.timings_ms.items())
    return {
        p.input_warning: gr.update(value=panels.warning_html(pred), visible=pred.warning is not None),
        # a report of an input the model does not read is greyed out, under the warning
        p.report: gr.update(value=pred.report, elem_classes=["report", "withheld"] if pred.warning else ["report"]),
        p.status: f"*{S.ablation_label(case.ablation)}*" + (f" · {timings}" if timings else ""),
        p.disease_md: panels.disease_summary(pred, written),
        p.diseases: panels.disease_rows(pred),
    }


def heatmap_panel() -> Panel:
    gr.Markdown("### 3 · Attention maps and FCC consistency", elem_classes="panel-title")
    key = gr.Dropdown([], label="Map of (entity prompt = LRP, retrieved sentence = GRP)")
    with gr.Row():
        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Opacity")
        cmap = gr.Dropdown(list(render.COLORMAPS), value=render.COLORMAPS[0], label="Colormap")
    with gr.Row():
        main = gr.Image(label="Selected map", type="numpy", interactive=False, height=300, format="png",
                        elem_id="heat-main")
        partner = gr.Image(label="FCC partner (highest S)", type="numpy", interactive=False, height=300,
                           format="png", elem_id="heat-partner")
    caption = gr.Markdown("", elem_id="heat-caption")
    return Panel(key=key, opacity=opacity, cmap=cmap, main=main, partner=partner, caption=caption)


def heatmap_values(p: Panel, case: Case | None, key: str | None, opacity: float, cmap: str) -> dict:
    if case is None:
        return {p.main: None, p.partner: None, p.caption: ""}
    hm = case.heatmap(key, opacity, cmap)
    return {p.main: hm.image, p.partner: hm.partner, p.caption: hm.caption}


def retrieval_panel() -> Panel:
    gr.Markdown("### 4 · Retrieved reference report (LRE)", elem_classes="panel-title")
    retrieved = gr.Textbox(label="Nearest training study in the Poincaré ball (its sentences are the GRPs)", lines=5,
                           interactive=False, elem_id="retrieved")
    facts = gr.Markdown("")
    neighbours = gr.Dataframe(headers=panels.NEIGHBOUR_HEADERS, label="Runner-up neighbours", interactive=False,
                              max_height=300, wrap=True, column_widths=["8%", "20%", "12%", "28%", "32%"],
                              elem_id="neighbours")
    gr.Markdown(f"Retrieved reports: {S.IU_ATTRIBUTION}.", elem_classes="attribution")
    return Panel(retrieved=retrieved, facts=facts, neighbours=neighbours)


def retrieval_values(p: Panel, case: Case) -> dict:
    text, facts = panels.retrieved_summary(case.prediction)
    return {p.retrieved: text, p.facts: facts, p.neighbours: panels.neighbour_rows(case.prediction)[1:]}


def entity_panel() -> Panel:
    with gr.Accordion("5 · Entity-level prompts: 75 LRP triplets (click a row to see its map)", open=True):
        group = gr.Radio(["all", *panels.GROUPS], value="all", label="Group", container=False)
        table = gr.Dataframe(headers=panels.ENTITY_HEADERS, interactive=False, max_height=320, wrap=True,
                             column_widths=["5%", "12%", "12%", "9%", "7%", "15%", "40%"], elem_id="entities")
    return Panel(group=group, table=table)


def ground_truth_panel() -> Panel:
    gr.Markdown("### 6 · Ground truth and comparison", elem_classes="panel-title")
    with gr.Row():
        gt_text = gr.Textbox(label="Ground truth (dataset findings, or paste a report)", lines=5, elem_id="gt")
        generated = gr.Textbox(label="Generated", lines=5, interactive=False)
    compare = gr.Button("Compare with ground truth")
    diff = gr.HTML("", elem_id="word-diff")
    with gr.Row(equal_height=False):
        findings = gr.Dataframe(headers=panels.FINDING_HEADERS, interactive=False, wrap=True, scale=3,
                                label="Finding-level diff (rule labeler states; verdicts by the CE rule: only "
                                "positive counts)", column_widths=["26%", "13%", "14%", "16%", "14%", "17%"],
                                elem_id="findings")
        metrics = gr.Dataframe(headers=panels.METRIC_HEADERS, label="Per-case metrics", interactive=False, wrap=True,
                               scale=2, column_widths=["14%", "14%", "14%", "58%"], elem_id="metrics")
    return Panel(gt_text=gt_text, generated=generated, compare=compare, diff=diff, findings=findings,
                 metrics=metrics)


def comparison_values(p: Panel, service: S.Service, gt: str | None, case: Case) -> dict:
    comparison = service.compare(gt, case.prediction) if gt and gt.strip() else None
    return {
        p.gt_text: gt or "",
        p.generated: case.prediction.report,
        p.diff: comparison.diff_html if comparison else NO_GT,
        p.findings: comparison.findings if comparison else [],
        p.metrics: comparison.metrics if comparison else [],
    }


def review_panel() -> Panel:
    with gr.Accordion("7 · Error review (kept in this browser, across reloads; export to share or archive)",
                      open=True):
        case = gr.Markdown("No case yet.")
        with gr.Row(equal_height=False):
            categories = gr.CheckboxGroup(list(review.REVIEW_CATEGORIES), label="Error type", elem_id="review-categories")
            note = gr.Textbox(label="Note", lines=2, scale=2, elem_id="review-note")
        with gr.Row():
            save = gr.Button("Save review for this case", variant="primary", scale=2, elem_id="save-review")
            csv_file = gr.DownloadButton("Download CSV", scale=1)
            json_file = gr.DownloadButton("Download JSON", scale=1, elem_id="download-json")
        status = gr.Markdown("", elem_id="review-status")
        table = gr.Dataframe(headers=review.REVIEW_HEADERS, label="Reviews in this browser", interactive=False, wrap=True,
                             elem_id="reviews")
        with gr.Row(equal_height=False):
            import_file = gr.File(label="Continue a review: import a JSON exported earlier (merged; the newer "
                                  "review of a case wins)", file_types=[".json"], height=90, elem_id="import-reviews")
            clear = gr.Button("Clear reviews…", variant="stop", scale=0, elem_id="clear-reviews")
        with gr.Row(visible=False) as confirm_row:
            confirm = gr.Button("Yes, delete every review in this browser", variant="stop", elem_id="confirm-clear")
            cancel = gr.Button("Cancel", elem_id="cancel-clear")
    return Panel(case=case, categories=categories, note=note, save=save, csv_file=csv_file, json_file=json_file,
                 status=status, table=table, import_file=import_file, clear=clear, confirm_row=confirm_row,
                 confirm=confirm, cancel=cancel)


def review_values(p: Panel, case: Case, new_image: bool) -> dict:
    keep = gr.update()
    return {p.case: f"Reviewing **{case.study_id or case.key}** ({S.ablation_label(case.ablation)}).",
            p.categories: [] if new_image else keep, p.note: "" if new_image else keep}


def _png(path: Path, pixels: np.ndarray) -> gr.FileData:
    Image.fromarray(pixels).save(path)
    return gr.FileData(path=str(path), orig_name=path.name, mime_type="image/png")


# ---------------------------------------------------------------------------------------------- page
def build(service: S.Service) -> tuple[gr.Blocks, dict]:
    """(demo, launch kwargs). Queued: MODEL_CONCURRENCY model runs at a time, at most QUEUE_SIZE waiting (a
    full queue shows Gradio's "This application is currently busy" message)."""
    upload_root = gr.utils.get_upload_folder()
    export_dir = tempfile.mkdtemp(prefix="revtaf-app-")
    atexit.register(shutil.rmtree, export_dir, ignore_errors=True)

    with gr.Blocks(title="REVTAF demo", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        case_state = gr.State(None, time_to_live=EVENT_TTL_S)
        # Reviews: the session's working copy (a State, so API clients keep theirs per session as before) and its
        # mirror in the browser's localStorage, written after every change and read back when the page loads: a
        # reload or a restarted browser keeps them, the server keeps none beyond the session, and another browser
        # never sees them.
        review_state = gr.State({})
        browser_reviews = gr.BrowserState({}, storage_key="revtaf-reviews", secret=REVIEW_SECRET)

        gr.Markdown(f"## {TITLE}")
        gr.HTML(f'<div class="notice">⚠ {errors.NOTICE}</div>')
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                inp = input_panel(service)
            with gr.Column(scale=6, min_width=420):
                rep = report_panel()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=380):
                heat = heatmap_panel()
            with gr.Column(scale=5, min_width=380):
                ret = retrieval_panel()
        ent = entity_panel()
        gt = ground_truth_panel()
        rev = review_panel()
        with gr.Accordion("Raw prediction (JSON, as /generate returns it)", open=False):
            raw_json = gr.JSON()
        ident = service.identity
        gr.Markdown(f"Model: REVTAF (ICCV 2025) re-implementation, `{ident['model_config']}`, weights SHA-256 "
                    f"`{ident['model_sha256'][:12]}`. Data: {S.IU_ATTRIBUTION}. "
                    "Uploads are processed in memory and not stored. API: see “Use via API” / `gradio_client`, "
                    "endpoint `/generate`.", elem_classes="attribution")

        # ------------------------------------------------------------------ events
        # The order of a case event's outputs is what API clients receive, positionally (State excluded).
        case_outputs = [case_state, inp.image_view, inp.image_info, inp.dicom_warning, inp.center, inp.width,
                        inp.invert, inp.preset, rep.input_warning, rep.report, rep.status, rep.disease_md,
                        rep.diseases, ret.retrieved, ret.facts, ret.neighbours, ent.table, heat.key, heat.main,
                        heat.partner, heat.caption, gt.gt_text, gt.generated, gt.diff, gt.findings, gt.metrics,
                        raw_json, rev.case, rev.categories, rev.note]
        view_inputs = [heat.opacity, heat.cmap, ent.group]
        switches = [inp.grp_off, inp.lrp_off, inp.plugins_off]
        heat_outputs = [heat.main, heat.partner, heat.caption]

        def show(case: Case, gt_value: str | None, opacity: float, cmap: str, group: str, new_image: bool) -> dict:
            """Every panel's values for `case` (a fresh one when `new_image`, else a re-run or new ablation)."""
            key = render.default_heatmap(case.prediction)
            return {
                case_state: case,
                **input_values(inp, case, new_image),
                **report_values(rep, case, service.written_states(case.prediction)),
                **retrieval_values(ret, case),
                ent.table: panels.entity_rows(case.prediction, group),
                heat.key: gr.update(choices=render.heatmap_choices(case.prediction), value=key),
                **heatmap_values(heat, case, key, opacity, cmap),
                **comparison_values(gt, service, case.ground_truth if new_image else gt_value, case),
                raw_json: case.prediction.to_json(),
                **review_values(rev, case, new_image),
            }

        def analyze_upload(path, grp, lrp, plugins, opacity, cmap, group):
            data = uploads.consume_upload(path, upload_root)
            uploads.prune_upload_folders(upload_root)
            case = service.open_upload(data, S.ablation_tag(grp, lrp, plugins))
            # the file box is emptied: ready for the next image (the upload itself is already deleted)
            return {inp.upload: None, **show(case, None, opacity, cmap, group, new_image=True)}

        def analyze_study(study_id, grp, lrp, plugins, opacity, cmap, group):
            return show(service.open_study(study_id, S.ablation_tag(grp, lrp, plugins)), None, opacity, cmap, group,
                        True)

        def advance(split, finding, order, errors_only, current, grp, lrp, plugins, opacity, cmap, group):
            study_id = service.next_case(split, finding, current, order, errors_only)
            return {inp.case_id: study_id, **analyze_study(study_id, grp, lrp, plugins, opacity, cmap, group)}

        def list_cases(split, finding, order, errors_only, store, progress=gr.Progress()):
            def step(done, total):
                progress(done / total, desc=f"running the model over {split} to find its errors: {done}/{total}")

            ids = service.case_ids(split, finding, order, errors_only, progress=step)
            return {inp.case_id: gr.update(choices=ids, value=ids[0] if ids else None),
                    inp.progress: service.review_progress(ids, store)}

        def show_progress(split, finding, order, errors_only, store):
            if not service.has_data:
                return {inp.progress: ""}
            return {inp.progress: service.review_progress(service.case_ids(split, finding, order, errors_only), store)}

        def ablate(case, grp, lrp, plugins, gt_value, opacity, cmap, group):
            if case is None:
                raise errors.AppInputError("Analyse an image first, then switch a branch off to see what it contributes.")
            return show(service.run(case, S.ablation_tag(grp, lrp, plugins)), gt_value, opacity, cmap, group,
                        new_image=False)

        def redraw(case, key, opacity, cmap):
            return heatmap_values(heat, case, key, opacity, cmap)

        def select_entity(case, opacity, cmap, evt: gr.SelectData):
            if case is None:
                return heatmap_values(heat, None, None, opacity, cmap)
            key = f"lrp:{int(evt.row_value[0])}"
            return {heat.key: key, **heatmap_values(heat, case, key, opacity, cmap)}

        def set_window(case, c, w, inv, key, opacity, cmap):
            if case is None:
                return {case_state: None, inp.image_view: None, **heatmap_values(heat, None, None, opacity, cmap)}
            c0, w0 = case.image.window
            # the sliders' 0.5 step may round the file's window: within half a step it is still the file's own
            # (which may be a VOI LUT rather than a linear window)
            default = abs(c - c0) <= 0.25 and abs(w - w0) <= 0.25 and bool(inv) == bool(case.image.invert)
            case.display = uploads.Display() if default else uploads.Display(float(c), float(w), bool(inv))
            return {case_state: case, inp.image_view: case.gray(), **heatmap_values(heat, case, key, opacity, cmap)}

        def apply_preset(case, name, inv, key, opacity, cmap):
            if case is None:
                return {inp.image_view: None, **heatmap_values(heat, None, None, opacity, cmap)}
            c, w = uploads.window_presets(case.image)[name]
            return {inp.center: c, inp.width: w, **set_window(case, c, w, inv, key, opacity, cmap)}

        def filter_entities(case, group):
            return {ent.table: panels.entity_rows(case.prediction, group) if case is not None else []}

        def compare(case, gt_value):
            if case is None:
                raise errors.AppInputError("Analyse an image first.")
            comparison = service.compare(gt_value, case.prediction)
            return {gt.diff: comparison.diff_html, gt.findings: comparison.findings, gt.metrics: comparison.metrics}

        def reviews(store: dict, message: str) -> dict:
            """The review panel for `store`: table, fresh export files (none when empty), status line."""
            files = {rev.csv_file: None, rev.json_file: None}
            if store:
                review.prune(export_dir)
                csv_path, json_path = review.export_reviews(store, export_dir)
                files = {rev.csv_file: str(csv_path), rev.json_file: str(json_path)}
            return {review_state: store, rev.table: review.review_rows(store), **files, rev.status: message}

        def save(store, case, categories, note):
            store = review.save_review(store or {}, case, categories, note, service.identity)
            return reviews(store, f"Saved. {len(store)} review(s) in this browser.")

        def restore(store):
            store = store or {}
            return reviews(store, f"{len(store)} review(s) kept in this browser." if store else "")

        def import_reviews(store, path):
            store, counts = review.merge_reviews(store or {}, review.read_reviews(path))
            return {**reviews(store, f"Imported: {counts['added']} added, {counts['replaced']} replaced an older "
                                     f"review, {counts['kept']} older than the one here left out. "
                                     f"{len(store)} review(s) in this browser."),
                    rev.import_file: None}

        def ask_clear(store):
            if not store:
                raise errors.AppInputError("There is no review to clear.")
            return {rev.confirm_row: gr.update(visible=True),
                    rev.status: f"Delete all {len(store)} review(s) kept in this browser? Export them first to keep them."}

        def clear(store):
            return {**reviews({}, f"Deleted {len(store or {})} review(s)."), rev.confirm_row: gr.update(visible=False)}

        def cancel_clear():
            return {rev.confirm_row: gr.update(visible=False), rev.status: "Nothing deleted."}

        # documented: what a script needs (analyse, look, compare, review); undocumented: the page's own
        # view events, still callable so that tests and the robustness bench drive the page as a browser does
        page = dict(api_visibility="undocumented")
        inp.upload.upload(page_errors(analyze_upload, rep.status, reset={inp.upload: None}),
                          [inp.upload, *switches, *view_inputs], [inp.upload, *case_outputs],
                          api_name="analyze_upload")
        inp.load_case.click(page_errors(analyze_study, rep.status), [inp.case_id, *switches, *view_inputs],
                            case_outputs, api_name="analyze_study")
        inp.next_case.click(page_errors(advance, rep.status),
                            [inp.split, inp.finding, inp.order, inp.errors_only, inp.case_id, *switches, *view_inputs],
                            [inp.case_id, *case_outputs], api_name="next_case", **page)
        case_filter = [inp.split, inp.finding, inp.order, inp.errors_only]
        gr.on([inp.split.input, inp.finding.input, inp.order.input, inp.errors_only.input],
              page_errors(list_cases, inp.progress), [*case_filter, review_state], [inp.case_id, inp.progress],
              api_name="list_cases", **page)
        gr.on([switch.input for switch in switches], page_errors(ablate, rep.status),
              [case_state, *switches, gt.gt_text, *view_inputs], case_outputs, api_name="ablate")
        gr.on([heat.key.input, heat.opacity.release, heat.cmap.input], page_errors(redraw),
              [case_state, heat.key, heat.opacity, heat.cmap], heat_outputs, api_name="heatmap", concurrency_limit=8)
        ent.table.select(page_errors(select_entity), [case_state, heat.opacity, heat.cmap], [heat.key, *heat_outputs],
                         api_name="select_entity", concurrency_limit=8, **page)
        gr.on([inp.center.release, inp.width.release, inp.invert.input], page_errors(set_window),
              [case_state, inp.center, inp.width, inp.invert, heat.key, heat.opacity, heat.cmap],
              [case_state, inp.image_view, *heat_outputs], api_name="window", concurrency_limit=8, **page)
        inp.preset.input(page_errors(apply_preset), [case_state, inp.preset, inp.invert, heat.key, heat.opacity, heat.cmap],
                         [inp.center, inp.width, case_state, inp.image_view, *heat_outputs], api_name="window_preset",
                         concurrency_limit=8, **page)
        ent.group.input(page_errors(filter_entities), [case_state, ent.group], ent.table, api_name="entity_table",
                        concurrency_limit=8, **page)
        gt.compare.click(page_errors(compare), [case_state, gt.gt_text], [gt.diff, gt.findings, gt.metrics],
                         api_name="compare")
        review_outputs = [review_state, rev.table, rev.csv_file, rev.json_file, rev.status]
        progress_update = dict(fn=page_errors(show_progress), inputs=[*case_filter, review_state],
                               outputs=inp.progress, api_visibility="private")
        mirror = dict(fn=lambda store: store, inputs=review_state, outputs=browser_reviews, api_visibility="private")
        rev.save.click(page_errors(save, rev.status), [review_state, case_state, rev.categories, rev.note],
                       review_outputs, api_name="save_review", concurrency_limit=8
                       ).then(**mirror).then(**progress_update)
        rev.import_file.upload(page_errors(import_reviews, rev.status, reset={rev.import_file: None}),
                               [review_state, rev.import_file], [*review_outputs, rev.import_file],
                               api_name="import_reviews", concurrency_limit=8).then(**mirror).then(**progress_update)
        rev.clear.click(page_errors(ask_clear, rev.status), review_state, [rev.confirm_row, rev.status],
                        api_visibility="private")
        rev.confirm.click(clear, review_state, [*review_outputs, rev.confirm_row],
                          api_visibility="private").then(**mirror).then(**progress_update)
        rev.cancel.click(cancel_clear, None, [rev.confirm_row, rev.status], api_visibility="private")
        demo.load(page_errors(restore, rev.status), browser_reviews, review_outputs,
                  api_visibility="private").then(**progress_update)
        def generate(image: gr.FileData, retrieval_off: bool = False, entity_prompts_off: bool = False,
                     plugins_off: list[str] | None = None) -> tuple[dict, gr.FileData, list[dict]]:
            """One chest X-ray (PNG, JPEG or DICOM) -> (the prediction as JSON with an `input` block, the image as
            displayed, overlays [{"image", "caption"}] of the most probable entities and the retrieved sentences).
            `plugins_off`: plug-in parts the model carries to switch off ("tisr", "tir")."""
            path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
            data = uploads.consume_upload(path, upload_root, uploads_only=True)
            uploads.prune_upload_folders(upload_root)
            case = service.open_upload(data, S.ablation_tag(retrieval_off, entity_prompts_off, plugins_off))
            out = case.prediction.to_json()
            out["input"] = {"format": case.image.source_format, "size": list(case.original_size),
                            "view_position": case.image.view_position, "bits": case.image.bits}
            review.prune(export_dir)
            folder = Path(tempfile.mkdtemp(prefix="generate-", dir=export_dir))
            gallery = [{"image": _png(folder / f"overlay-{i}.png", im), "caption": caption}
                       for i, (im, caption) in enumerate(service.overlay_gallery(case))]
            return out, _png(folder / "image.png", case.gray()), gallery

        gr.api(api_errors(generate), api_name="generate")

    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE)
    # /generate returns its images as files of the app's own export folder (a gr.api endpoint has no image
    # component to move them into Gradio's cache): that folder, and only it, is served besides the cache.
    return demo, {"theme": THEME, "css": CSS, "max_file_size": "100mb", "show_error": False,
                  "allowed_paths": [export_dir]}
