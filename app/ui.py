"""The demo page (Gradio Blocks): the panels (layout.py) placed, the event wiring, and the `/generate` API. Every
event calls `app.service`; this file only maps results to components, as {component: value}.

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

import gradio as gr
import numpy as np

from revtaf_app import errors, panels, render, review, uploads
from revtaf_app.layout import (comparison_values, entity_panel, ground_truth_panel, heatmap_panel, heatmap_values,
                               input_panel, input_values, report_panel, report_values, retrieval_panel,
                               retrieval_values, review_panel, review_values, what_if_panel, what_if_values)
from revtaf_app.case import Case
from revtaf_app import service as S
from revtaf.data import ImageReadError

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
/* a film one can read: IU's 256-px images and their maps drawn at the panel's size (512 px), not their own */
#image-view img, #lateral-view img, #heat-main img, #heat-lateral img, #heat-partner img {width:100%;height:100%;object-fit:contain}
"""
THEME = gr.themes.Soft(
    primary_hue="blue",
    neutral_hue="slate",
    # system fonts: the page must not fetch web fonts (offline laptops, no third-party requests)
    font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
)
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


def _png(folder: Path, pixels: np.ndarray) -> gr.FileData:
    path = Path(render.png_file(pixels, folder))
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
        what_if_state = gr.State({})  # the user's findings {finding: state} for the current case
        browser_reviews = gr.BrowserState({}, storage_key="revtaf-reviews", secret=REVIEW_SECRET)

        gr.Markdown(f"## {TITLE}")
        gr.HTML(f'<div class="notice">⚠ {errors.NOTICE}</div>')
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                inp = input_panel(service)
            with gr.Column(scale=6, min_width=420):
                rep = report_panel()
                wi = what_if_panel()
        heat = heatmap_panel()  # the page's width: two maps of a film one can read (≥ 512 px each)
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
                        raw_json, rev.case, rev.categories, rev.note, rep.sentences, rep.evidence, what_if_state,
                        wi.changes, wi.report, rev.target, wi.text, inp.lateral_view, heat.lateral]
        view_inputs = [heat.opacity, heat.cmap, ent.group]
        switches = [inp.grp_off, inp.lrp_off, inp.plugins_off]
        heat_outputs = [heat.main, heat.partner, heat.caption, heat.lateral]

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
                what_if_state: {},  # a new case or ablation starts from the model's findings
                **what_if_values(wi, {}),
            }

        def analyze_upload(paths, grp, lrp, plugins, opacity, cmap, group):
            paths = paths if isinstance(paths, list) else [paths]  # one film, or a study's two
            data = [uploads.consume_upload(path, upload_root) for path in paths]
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
            return {case_state: case, inp.image_view: render.png_file(case.gray()),
                    **heatmap_values(heat, case, key, opacity, cmap)}

        def apply_preset(case, name, inv, key, opacity, cmap):
            if case is None:
                return {inp.image_view: None, **heatmap_values(heat, None, None, opacity, cmap)}
            c, w = uploads.window_presets(case.image)[name]
            return {inp.center: c, inp.width: w, **set_window(case, c, w, inv, key, opacity, cmap)}

        def select_sentence(case, opacity, cmap, evt: gr.SelectData):
            """A clicked sentence: its evidence, and the map of the entity it names in the map panel."""
            if case is None:
                raise errors.AppInputError("Analyse an image first.")
            index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            sentence = case.prediction.sentences[int(index)] if case.prediction.sentences else None
            out = {rep.evidence: panels.sentence_evidence(case.prediction, int(index)) if sentence else "",
                   rev.target: str(int(index) + 1) if sentence else "case"}
            if sentence is not None and sentence.entity_index is not None:
                key = f"lrp:{sentence.entity_index}"
                out.update({heat.key: key, **heatmap_values(heat, case, key, opacity, cmap)})
            return out

        def set_finding(case, states, finding, state):
            if case is None:
                raise errors.AppInputError("Analyse an image first, then change a finding.")
            states = {**(states or {}), finding: state}
            if state == next(d.state for d in case.prediction.diseases if d.name == finding):
                states.pop(finding)  # back to the model's call
            return {what_if_state: states, wi.changes: panels.overrides_summary(states),
                    rep.diseases: panels.disease_rows(case.prediction, states)}

        def edit_states(case, rows):
            if case is None:
                raise errors.AppInputError("Analyse an image first, then change a finding.")
            states = panels.states_from_rows(case.prediction, rows)
            return {what_if_state: states, wi.changes: panels.overrides_summary(states)}

        def what_if(case, states):
            if case is None:
                raise errors.AppInputError("Analyse an image first, then change a finding.")
            after = service.what_if(case, states or {})
            return what_if_values(wi, states, case.prediction, after)

        def reset_what_if(case):
            rows = panels.disease_rows(case.prediction) if case is not None else []
            return {what_if_state: {}, **what_if_values(wi, {}), rep.diseases: rows}

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

        def save(store, case, target, categories, note):
            sentence = None if target in (None, "", "case") else int(target) - 1
            store = review.save_review(store or {}, case, categories, note, service.identity, sentence)
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
        rep.sentences.select(page_errors(select_sentence, rep.status), [case_state, heat.opacity, heat.cmap],
                             [rep.evidence, rev.target, heat.key, *heat_outputs], api_name="select_sentence",
                             concurrency_limit=8, **page)
        wi.add.click(page_errors(set_finding, wi.changes), [case_state, what_if_state, wi.finding, wi.state],
                     [what_if_state, wi.changes, rep.diseases], api_name="what_if_set", queue=False, **page)
        rep.diseases.input(page_errors(edit_states, wi.changes), [case_state, rep.diseases],
                           [what_if_state, wi.changes], api_name="what_if_table", queue=False, **page)
        wi.run.click(page_errors(what_if, wi.changes), [case_state, what_if_state], [wi.changes, wi.report, wi.text],
                     api_name="what_if_page", **page)
        wi.reset.click(reset_what_if, case_state, [what_if_state, wi.changes, wi.report, wi.text, rep.diseases],
                       api_visibility="private",
                       queue=False)
        ent.group.input(page_errors(filter_entities), [case_state, ent.group], ent.table, api_name="entity_table",
                        concurrency_limit=8, **page)
        gt.compare.click(page_errors(compare), [case_state, gt.gt_text], [gt.diff, gt.findings, gt.metrics],
                         api_name="compare")
        review_outputs = [review_state, rev.table, rev.csv_file, rev.json_file, rev.status]
        progress_update = dict(fn=page_errors(show_progress), inputs=[*case_filter, review_state],
                               outputs=inp.progress, api_visibility="private")
        mirror = dict(fn=lambda store: store, inputs=review_state, outputs=browser_reviews, api_visibility="private")
        rev.save.click(page_errors(save, rev.status), [review_state, case_state, rev.target, rev.categories, rev.note],
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
        def open_api_upload(image, lateral=None, ablation: str = "full") -> Case:
            """An API endpoint's file(s) (FileData or their dicts; `lateral` optional): read, deleted from the
            upload folder, analysed as one study."""
            files = [f for f in (image, lateral) if f is not None]
            paths = [f.get("path") if isinstance(f, dict) else getattr(f, "path", None) for f in files]
            data = [uploads.consume_upload(path, upload_root, uploads_only=True) for path in paths]
            uploads.prune_upload_folders(upload_root)
            return service.open_upload(data, ablation)

        def generate(image: gr.FileData, retrieval_off: bool = False, entity_prompts_off: bool = False,
                     plugins_off: list[str] | None = None,
                     lateral: gr.FileData | None = None) -> tuple[dict, gr.FileData, list[dict]]:
            """One chest X-ray (PNG, JPEG or DICOM), or a study's two (`lateral`: the second file; which is which
            is read from the files or the pixels) -> (the prediction as JSON with an `input` block and `films`,
            the frontal as displayed, overlays [{"image", "caption"}] of the most probable entities and the
            retrieved sentences). `plugins_off`: plug-in parts the model carries to switch off ("tisr", "tir")."""
            case = open_api_upload(image, lateral, S.ablation_tag(retrieval_off, entity_prompts_off, plugins_off))
            out = case.prediction.to_json()
            out["input"] = {"format": case.image.source_format, "size": list(case.original_size),
                            "view_position": case.image.view_position, "bits": case.image.bits}
            review.prune(export_dir)
            folder = Path(tempfile.mkdtemp(prefix="generate-", dir=export_dir))
            gallery = [{"image": _png(folder, im), "caption": caption} for im, caption in service.overlay_gallery(case)]
            return out, _png(folder, case.gray()), gallery

        gr.api(api_errors(generate), api_name="generate")

        def what_if_api(states: dict[str, str], image: gr.FileData | None = None,
                        study_id: str | None = None, lateral: gr.FileData | None = None) -> dict:
            """A what-if: one chest X-ray (PNG, JPEG or DICOM; `lateral` a study's second file) or a dataset study, and the findings to change
            {finding: "positive" | "negative" | "uncertain" | "blank"} -> the prediction written to them (as
            /generate's JSON, each overridden disease marked "user"), with `model` = the model's own report and
            sentences and `difference` = the sentence-level difference [[sentence, "added" | "removed" | null]]."""
            if (image is None) == (not study_id):
                raise errors.AppInputError("Give either an image or a study id.")
            case = open_api_upload(image, lateral) if image is not None else service.open_study(study_id)
            after = service.what_if(case, states)
            out = after.to_json()
            before = case.prediction.to_json()
            out["model"] = {"report": before["report"], "sentences": before["sentences"]}
            out["difference"] = [list(x) for x in panels.sentence_diff(case.prediction, after)]
            return out

        gr.api(api_errors(what_if_api), api_name="what_if")

    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE)
    # /generate returns its images as files of the app's own export folder (a gr.api endpoint has no image
    # component to move them into Gradio's cache), the page's images are render.png_file's: those two folders,
    # and only they, are served besides the cache.
    return demo, {"theme": THEME, "css": CSS, "max_file_size": "100mb", "show_error": False,
                  "allowed_paths": [export_dir, str(render.image_dir())]}
