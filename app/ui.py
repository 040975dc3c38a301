"""The demo page (Gradio Blocks): layout and events. Every event calls `app.service`; this file only maps
results to components. Every event has an `api_name`, so `gradio_client` scripts use the same functions.

Per-session data lives in `gr.State` (the analysed case with its cached predictions, the error review), never
in module globals, so users never see each other's cases.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import traceback

import gradio as gr

from app import service as S
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


def default_threads() -> int:
    """Torch threads per model run: the cores shared by the concurrent runs. Oversubscribing (2 runs x 2
    threads on 2 cores) made generation up to 8x slower here, from OpenMP threads spinning against each other."""
    return max(1, (os.cpu_count() or 1) // MODEL_CONCURRENCY)


def _message(exc: Exception, where: str) -> str:
    """The user-facing sentence for an exception: typed input errors speak for themselves; anything else is
    logged (type and traceback only: a message could quote user data) and replaced by a generic sentence."""
    if isinstance(exc, (ImageReadError, S.AppInputError)):
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


def page_errors(fn, n_outputs: int, status: int | None = None, reset: dict[int, object] | None = None):
    """For page events: a failure shows a warning toast (and the message in the `status` output) and leaves
    every other output as it was (except the `reset` ones: index -> value), so the last good case stays on
    screen instead of a wall of error badges."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = _message(exc, fn.__name__)
            gr.Warning(message, title="Cannot process this input")
            out = [gr.skip()] * n_outputs
            if status is not None:
                out[status] = f"⚠ {message}"
            for index, value in (reset or {}).items():
                out[index] = value
            return out if n_outputs > 1 else out[0]

    return inner


def build(service: S.Service) -> tuple[gr.Blocks, dict]:
    """(demo, launch kwargs). Queued: MODEL_CONCURRENCY model runs at a time, at most QUEUE_SIZE waiting (a
    full queue shows Gradio's "This application is currently busy" message)."""
    upload_root = gr.utils.get_upload_folder()
    export_dir = tempfile.mkdtemp(prefix="revtaf-app-")
    atexit.register(shutil.rmtree, export_dir, ignore_errors=True)

    with gr.Blocks(title="REVTAF demo", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        case_state = gr.State(None, time_to_live=EVENT_TTL_S)
        review_state = gr.State({})

        gr.Markdown(f"## {TITLE}")
        gr.HTML(f'<div class="notice">⚠ {S.NOTICE}</div>')

        # ------------------------------------------------------------------ input | report
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                gr.Markdown("### 1 · Input", elem_classes="panel-title")
                with gr.Tabs():
                    with gr.Tab("Upload"):
                        upload = gr.File(label="Chest X-ray: PNG, JPEG, 16-bit PNG or DICOM (.dcm)", height=110,
                                         elem_id="upload")
                    with gr.Tab("Dataset", visible=service.has_data):
                        split = gr.Dropdown(list(service.studies) or ["test"], value="test", label="Split")
                        finding = gr.Dropdown(["any", *LABEL_NAMES_18], value="any",
                                              label="Ground-truth finding (rule labeler)")
                        case_id = gr.Dropdown(service.case_ids("test") if service.has_data else [], label="Study",
                                              filterable=True, elem_id="case-id")
                        with gr.Row():
                            load_case = gr.Button("Load case", variant="primary", elem_id="load-case")
                            next_case = gr.Button("Next case →")
                        gr.Markdown(f"Images and reports: {S.IU_ATTRIBUTION} (CC BY-NC-ND 4.0), shown unmodified.",
                                    elem_classes="attribution")
                image_view = gr.Image(label="Image (as displayed)", type="numpy", image_mode="L", interactive=False,
                                      height=360, buttons=["fullscreen"], elem_id="image-view", format="png")
                image_info = gr.Markdown("")
                dicom_warning = gr.HTML(f'<div class="dicom-warning">{S.BURNED_IN_WARNING}</div>', visible=False)
                with gr.Accordion("Display window (the model always sees the file's own window)", open=False):
                    preset = gr.Radio(["file", *S.WINDOW_PRESETS], value="file", label="Preset (percentile windows: "
                                      "radiograph values are not Hounsfield units)")
                    center = gr.Slider(0, 255, value=127.5, step=0.5, label="Window center (level)")
                    width = gr.Slider(1, 510, value=255, step=0.5, label="Window width")
                    invert = gr.Checkbox(False, label="Invert")
                gr.Markdown("**Ablation** — switch a branch off to see what it contributes (re-runs the model):")
                with gr.Row():
                    grp_off = gr.Checkbox(False, label="Retrieval (GRP) off")
                    lrp_off = gr.Checkbox(False, label="Entity prompts (LRP) off")

            with gr.Column(scale=6, min_width=420):
                gr.Markdown("### 2 · Generated report", elem_classes="panel-title")
                input_warning = gr.HTML("", visible=False, elem_id="input-warning")
                report = gr.Textbox(label="Generated findings", lines=6, interactive=False, elem_classes="report",
                                    buttons=["copy"], elem_id="report")
                status = gr.Markdown("Upload an image or load a dataset case.")
                disease_md = gr.Markdown("")
                diseases = gr.Dataframe(headers=S.DISEASE_HEADERS, interactive=False, max_height=330, wrap=True,
                                        label="18 disease prompts: chosen state and the 4 state probabilities",
                                        elem_id="diseases")

        # ------------------------------------------------------------------ heatmap | retrieved
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=380):
                gr.Markdown("### 3 · Attention maps and FCC consistency", elem_classes="panel-title")
                heat_key = gr.Dropdown([], label="Map of (entity prompt = LRP, retrieved sentence = GRP)")
                with gr.Row():
                    opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Opacity")
                    cmap = gr.Dropdown(list(S.COLORMAPS), value=S.COLORMAPS[0], label="Colormap")
                with gr.Row():
                    heat_main = gr.Image(label="Selected map", type="numpy", interactive=False, height=300,
                                         format="png", elem_id="heat-main")
                    heat_partner = gr.Image(label="FCC partner (highest S)", type="numpy", interactive=False,
                                            height=300, format="png", elem_id="heat-partner")
                heat_caption = gr.Markdown("", elem_id="heat-caption")
            with gr.Column(scale=5, min_width=380):
                gr.Markdown("### 4 · Retrieved reference report (LRE)", elem_classes="panel-title")
                retrieved = gr.Textbox(label="Nearest training study in the Poincaré ball (its sentences are the "
                                       "GRPs)", lines=5, interactive=False, elem_id="retrieved")
                retrieved_md = gr.Markdown("")
                neighbours = gr.Dataframe(headers=S.NEIGHBOUR_HEADERS, label="Runner-up neighbours", interactive=False,
                                          max_height=300, wrap=True, column_widths=["8%", "20%", "12%", "28%", "32%"],
                                          elem_id="neighbours")
                gr.Markdown(f"Retrieved reports: {S.IU_ATTRIBUTION}.", elem_classes="attribution")

        # ------------------------------------------------------------------ entities
        with gr.Accordion("5 · Entity-level prompts: 75 LRP triplets (click a row to see its map)", open=True):
            entity_group = gr.Radio(["all", *S.GROUPS], value="all", label="Group", container=False)
            entities = gr.Dataframe(headers=S.ENTITY_HEADERS, interactive=False, max_height=320, wrap=True,
                                    column_widths=["5%", "12%", "12%", "9%", "7%", "15%", "40%"], elem_id="entities")

        # ------------------------------------------------------------------ ground truth
        gr.Markdown("### 6 · Ground truth and comparison", elem_classes="panel-title")
        with gr.Row():
            gt_text = gr.Textbox(label="Ground truth (dataset findings, or paste a report)", lines=5, elem_id="gt")
            gen_copy = gr.Textbox(label="Generated", lines=5, interactive=False)
        compare_btn = gr.Button("Compare with ground truth")
        diff_html = gr.HTML("", elem_id="word-diff")
        with gr.Row(equal_height=False):
            findings = gr.Dataframe(headers=S.FINDING_HEADERS, interactive=False, wrap=True, scale=3,
                                    label="Finding-level diff (rule labeler states; verdicts by the CE rule: only "
                                    "positive counts)", column_widths=["26%", "13%", "14%", "16%", "14%", "17%"],
                                    elem_id="findings")
            metrics = gr.Dataframe(headers=S.METRIC_HEADERS, label="Per-case metrics", interactive=False, wrap=True,
                                   scale=2, column_widths=["14%", "14%", "14%", "58%"], elem_id="metrics")

        # ------------------------------------------------------------------ review
        with gr.Accordion("7 · Error review (kept in this browser session only; download to keep it)", open=True):
            review_case = gr.Markdown("No case yet.")
            with gr.Row(equal_height=False):
                categories = gr.CheckboxGroup(list(S.REVIEW_CATEGORIES), label="Error type")
                note = gr.Textbox(label="Note", lines=2, scale=2)
            with gr.Row():
                save_btn = gr.Button("Save review for this case", variant="primary", scale=2)
                csv_button = gr.DownloadButton("Download CSV", scale=1)
                json_button = gr.DownloadButton("Download JSON", scale=1)
            review_status = gr.Markdown("")
            reviews = gr.Dataframe(headers=S.REVIEW_HEADERS, label="Reviews of this session", interactive=False,
                                   wrap=True)

        with gr.Accordion("Raw prediction (JSON, as /generate returns it)", open=False):
            raw_json = gr.JSON()

        gr.Markdown(f"Model: REVTAF (ICCV 2025) re-implementation. Data: {S.IU_ATTRIBUTION}. "
                    "Uploads are processed in memory and not stored. API: see “Use via API” / `gradio_client`, "
                    "endpoint `/generate`.", elem_classes="attribution")

        # hidden components of the /generate API (file in, prediction JSON + overlays out)
        with gr.Column(visible=False):
            api_file = gr.File()
            api_grp_off, api_lrp_off = gr.Checkbox(False), gr.Checkbox(False)
            api_json, api_image = gr.JSON(), gr.Image(type="numpy", format="png")
            api_gallery = gr.Gallery()
            api_button = gr.Button()

        # ------------------------------------------------------------------ event functions
        case_outputs = [case_state, image_view, image_info, dicom_warning, center, width, invert, preset,
                        input_warning, report, status, disease_md, diseases, retrieved, retrieved_md, neighbours, entities,
                        heat_key, heat_main, heat_partner, heat_caption, gt_text, gen_copy, diff_html, findings,
                        metrics, raw_json, review_case, categories, note]

        def show(case: S.Case, gt: str | None, opacity_v: float, cmap_v: str, group: str, new_image: bool) -> list:
            """Values of `case_outputs` for `case` (a fresh one when `new_image`, else a re-run or new ablation)."""
            pred = case.prediction
            image = case.image
            gt = case.ground_truth if new_image else gt
            key = S.default_heatmap(pred)
            hm = case.heatmap(key, opacity_v, cmap_v)
            text, facts = S.retrieved_summary(pred)
            comparison = service.compare(gt, pred) if gt and gt.strip() else None
            lo, hi, max_w = S.window_range(image)
            is_dicom = image.source_format == "dicom"
            timings = ", ".join(f"{k} {v:.0f} ms" for k, v in pred.timings_ms.items())
            ablated = {"full": "full model", "grp": "retrieval (GRP) off", "lrp": "entity prompts (LRP) off",
                       "grp+lrp": "GRP and LRP off"}[case.ablation]
            return [
                case,
                case.gray(),
                S.describe_image(image, case.original_size, pred) + (f" · study `{case.study_id}`" if case.study_id else ""),
                gr.update(visible=is_dicom),
                gr.update(minimum=lo, maximum=hi, value=float(image.window[0])) if new_image else gr.update(),
                gr.update(minimum=1, maximum=max_w, value=float(image.window[1])) if new_image else gr.update(),
                bool(image.invert) if new_image else gr.update(),
                "file" if new_image else gr.update(),
                gr.update(value=S.warning_html(pred), visible=pred.warning is not None),
                # a report of an input the model does not read is greyed out, under the warning
                gr.update(value=pred.report, elem_classes=["report", "withheld"] if pred.warning else ["report"]),
                f"*{ablated}* · {timings}" if timings else f"*{ablated}*",
                S.disease_summary(pred),
                S.disease_rows(pred),
                text,
                facts,
                S.neighbour_rows(pred)[1:],
                S.entity_rows(pred, group),
                gr.update(choices=S.heatmap_choices(pred), value=key),
                hm.image,
                hm.partner,
                hm.caption,
                gt or "",
                pred.report,
                comparison.diff_html if comparison else NO_GT,
                comparison.findings if comparison else [],
                comparison.metrics if comparison else [],
                pred.to_json(),
                f"Reviewing **{case.study_id or case.key}** ({ablated}).",
                [] if new_image else gr.update(),
                "" if new_image else gr.update(),
            ]

        def analyze_upload(path, grp, lrp, opacity_v, cmap_v, group):
            data = S.consume_upload(path, upload_root)
            case = service.open_upload(data, S.ablation_tag(grp, lrp))
            # the file box is emptied: ready for the next image (the upload itself is already deleted)
            return [None, *show(case, None, opacity_v, cmap_v, group, new_image=True)]

        def analyze_study(study_id, grp, lrp, opacity_v, cmap_v, group):
            case = service.open_study(study_id, S.ablation_tag(grp, lrp))
            return show(case, None, opacity_v, cmap_v, group, new_image=True)

        def advance(split_v, finding_v, current, grp, lrp, opacity_v, cmap_v, group):
            study_id = service.next_case(split_v, finding_v, current)
            return [study_id] + analyze_study(study_id, grp, lrp, opacity_v, cmap_v, group)

        def list_cases(split_v, finding_v):
            ids = service.case_ids(split_v, finding_v)
            return gr.update(choices=ids, value=ids[0] if ids else None)

        def ablate(case, grp, lrp, gt, opacity_v, cmap_v, group):
            if case is None:
                raise S.AppInputError("Analyse an image first, then switch a branch off to see what it contributes.")
            case = service.run(case, S.ablation_tag(grp, lrp))
            return show(case, gt, opacity_v, cmap_v, group, new_image=False)

        def redraw(case, key, opacity_v, cmap_v):
            if case is None:
                return None, None, ""
            hm = case.heatmap(key, opacity_v, cmap_v)
            return hm.image, hm.partner, hm.caption

        def select_entity(case, opacity_v, cmap_v, evt: gr.SelectData):
            if case is None:
                return gr.update(), None, None, ""
            key = f"lrp:{int(evt.row_value[0])}"
            return [key, *redraw(case, key, opacity_v, cmap_v)]

        def set_window(case, c, w, inv, key, opacity_v, cmap_v):
            if case is None:
                return None, None, None, None, ""
            c0, w0 = case.image.window
            # the sliders' 0.5 step may round the file's window: within half a step it is still the file's own
            # (which may be a VOI LUT rather than a linear window)
            default = abs(c - c0) <= 0.25 and abs(w - w0) <= 0.25 and bool(inv) == bool(case.image.invert)
            case.display = S.Display() if default else S.Display(float(c), float(w), bool(inv))
            return [case, case.gray(), *redraw(case, key, opacity_v, cmap_v)]

        def apply_preset(case, name, inv, key, opacity_v, cmap_v):
            if case is None:
                return gr.update(), gr.update(), None, None, None, None, ""
            c, w = S.window_presets(case.image)[name]
            return [c, w, *set_window(case, c, w, inv, key, opacity_v, cmap_v)]

        def filter_entities(case, group):
            return S.entity_rows(case.prediction, group) if case is not None else []

        def compare(case, gt):
            if case is None:
                raise S.AppInputError("Analyse an image first.")
            comparison = service.compare(gt, case.prediction)
            return comparison.diff_html, comparison.findings, comparison.metrics

        def save(store, case, cats, text):
            store = S.save_review(store, case, cats, text)
            S.prune(export_dir)
            csv_path, json_path = S.export_reviews(store, export_dir)
            saved = f"Saved. {len(store)} review(s) in this session."
            return store, S.review_rows(store), str(csv_path), str(json_path), saved

        def generate(path, grp, lrp):
            data = S.consume_upload(path, upload_root)
            case = service.open_upload(data, S.ablation_tag(grp, lrp))
            out = case.prediction.to_json()
            out["input"] = {"format": case.image.source_format, "size": list(case.original_size),
                            "view_position": case.image.view_position, "bits": case.image.bits}
            return out, case.gray(), service.overlay_gallery(case)

        # ------------------------------------------------------------------ wiring
        n_case, at_status = len(case_outputs), case_outputs.index(status)
        view_inputs = [opacity, cmap, entity_group]
        heat_outputs = [heat_main, heat_partner, heat_caption]
        upload.upload(page_errors(analyze_upload, n_case + 1, at_status + 1, reset={0: None}),
                      [upload, grp_off, lrp_off, *view_inputs], [upload, *case_outputs], api_name="analyze_upload")
        load_case.click(page_errors(analyze_study, n_case, at_status), [case_id, grp_off, lrp_off, *view_inputs],
                        case_outputs, api_name="analyze_study")
        next_case.click(page_errors(advance, n_case + 1, at_status + 1),
                        [split, finding, case_id, grp_off, lrp_off, *view_inputs], [case_id, *case_outputs],
                        api_name="next_case")
        gr.on([split.input, finding.input], page_errors(list_cases, 1), [split, finding], case_id,
              api_name="list_cases")
        gr.on([grp_off.input, lrp_off.input], page_errors(ablate, n_case, at_status),
              [case_state, grp_off, lrp_off, gt_text, *view_inputs], case_outputs, api_name="ablate")
        gr.on([heat_key.input, opacity.release, cmap.input], page_errors(redraw, 3),
              [case_state, heat_key, opacity, cmap], heat_outputs, api_name="heatmap", concurrency_limit=8)
        entities.select(page_errors(select_entity, 4), [case_state, opacity, cmap], [heat_key, *heat_outputs],
                        api_name="select_entity", concurrency_limit=8)
        gr.on([center.release, width.release, invert.input], page_errors(set_window, 5),
              [case_state, center, width, invert, heat_key, opacity, cmap], [case_state, image_view, *heat_outputs],
              api_name="window", concurrency_limit=8)
        preset.input(page_errors(apply_preset, 7), [case_state, preset, invert, heat_key, opacity, cmap],
                     [center, width, case_state, image_view, *heat_outputs], api_name="window_preset",
                     concurrency_limit=8)
        entity_group.input(page_errors(filter_entities, 1), [case_state, entity_group], entities,
                           api_name="entity_table", concurrency_limit=8)
        compare_btn.click(page_errors(compare, 3), [case_state, gt_text], [diff_html, findings, metrics],
                          api_name="compare")
        save_btn.click(page_errors(save, 5, 4), [review_state, case_state, categories, note],
                       [review_state, reviews, csv_button, json_button, review_status], api_name="save_review",
                       concurrency_limit=8)
        api_button.click(api_errors(generate), [api_file, api_grp_off, api_lrp_off], [api_json, api_image, api_gallery],
                         api_name="generate")

    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE)
    return demo, {"theme": THEME, "css": CSS, "max_file_size": "100mb", "show_error": False}
