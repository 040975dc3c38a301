"""The page's panels (Gradio components). One function per panel lays out its components and returns them; a
matching `*_values` function gives their values for an analysed case as {component: value}. `ui.build` only
places the panels and wires their events."""

from types import SimpleNamespace

import gradio as gr

from revtaf_app import errors, panels, render, review, uploads
from revtaf_app import service as S
from revtaf_app.case import Case
from revtaf.labels import LABEL_NAMES_18

SENTENCE_HINT = "*Click a sentence above: its topic, the map of the entity it names, and the retrieved sentence " \
                "that says most alike appear here.*"
NO_GT = "<em>No ground truth: load a dataset case, or paste a report above and press Compare.</em>"


class Panel(SimpleNamespace):
    """The components of one panel, by name."""


def input_panel(service: S.Service) -> Panel:
    gr.Markdown("### 1 · Input", elem_classes="panel-title")
    with gr.Tabs():
        with gr.Tab("Upload"):
            upload = gr.File(label="Chest X-ray: one film, or a study's frontal and lateral together (PNG, JPEG, "
                             "16-bit PNG or DICOM .dcm)", height=110, elem_id="upload", file_count="multiple")
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
    with gr.Row():
        image_view = gr.Image(label="Image (as displayed)", type="numpy", image_mode="L", interactive=False,
                              height=512, buttons=["fullscreen"], elem_id="image-view", format="png")
        lateral_view = gr.Image(label="Lateral film (the file's window)", type="numpy", image_mode="L",
                                interactive=False, height=512, buttons=["fullscreen"], elem_id="lateral-view",
                                format="png", visible=False)
    image_info = gr.Markdown("", elem_id="image-info")
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
                 next_case=next_case, image_view=image_view, lateral_view=lateral_view, image_info=image_info,
                 dicom_warning=dicom_warning,
                 preset=preset, center=center, width=width, invert=invert, grp_off=grp_off, lrp_off=lrp_off,
                 plugins_off=plugins_off)


def input_values(p: Panel, case: Case, new_image: bool) -> dict:
    image, pred = case.image, case.prediction
    lo, hi, max_w = uploads.window_range(image)
    keep = gr.update()
    return {
        p.image_view: render.png_file(case.gray()),
        p.lateral_view: gr.update(value=None if case.lateral is None else render.png_file(case.lateral_gray()),
                                  visible=case.lateral is not None),
        p.image_info: panels.describe_image(image, case.original_size, pred)
        + (f" · study `{case.study_id}`" if case.study_id else "") + panels.describe_films(case.uploaded, pred),
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
    sentences = gr.HighlightedText(label="The report sentence by sentence: its topic, state and P. Click a sentence "
                                         "for its evidence", combine_adjacent=False, show_legend=False,
                                   interactive=False, elem_id="report-sentences")
    evidence = gr.Markdown(SENTENCE_HINT, elem_id="sentence-evidence")
    disease_md = gr.Markdown("")
    # the state column is editable: a typed state is a what-if (rewrite below); the rest is the classifier's
    diseases = gr.Dataframe(headers=panels.DISEASE_HEADERS, interactive=True, static_columns=[0, 2, 3, 4, 5, 6],
                            type="array", max_height=330, wrap=True, elem_id="diseases",
                            column_widths=["25%", "12%", "11%", "11%", "11%", "11%", "19%"],
                            label="18 disease prompts: chosen state (edit it for a what-if), the 4 state "
                                  "probabilities and when the classifier calls it positive")
    return Panel(input_warning=input_warning, report=report, status=status, sentences=sentences, evidence=evidence,
                 disease_md=disease_md, diseases=diseases)


def report_values(p: Panel, case: Case, written) -> dict:
    """`written`: the labeler's states of the generated report (Service.written_states)."""
    pred = case.prediction
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in pred.timings_ms.items())
    return {
        p.input_warning: gr.update(value=panels.warning_html(pred), visible=pred.warning is not None),
        # a report of an input the model does not read is greyed out, under the warning
        p.report: gr.update(value=pred.report, elem_classes=["report", "withheld"] if pred.warning else ["report"]),
        p.status: f"*{S.ablation_label(case.ablation)}*" + (f" · {timings}" if timings else "")
        + (f"\n\n{note}" if (note := panels.placeholder_note(pred.report)) else ""),
        p.sentences: panels.sentence_segments(pred),
        p.evidence: SENTENCE_HINT if pred.sentences else "",
        p.disease_md: panels.disease_summary(pred, written),
        p.diseases: panels.disease_rows(pred),
    }


def what_if_panel() -> Panel:
    gr.Markdown("### What if? Change a finding and see the report rewritten", elem_classes="panel-title")
    with gr.Row():
        finding = gr.Dropdown(list(LABEL_NAMES_18), value="Pleural Effusion", label="Finding", elem_id="what-if-finding")
        state = gr.Radio(["positive", "negative", "uncertain", "blank"], value="positive", label="State",
                         elem_id="what-if-state")
    with gr.Row():
        add = gr.Button("Set this finding", size="sm", elem_id="what-if-set")
        run = gr.Button("Rewrite the report", variant="primary", size="sm", elem_id="what-if-run")
        reset = gr.Button("Reset to the model's findings", size="sm", elem_id="what-if-reset")
    changes = gr.Markdown(panels.overrides_summary({}), elem_id="what-if-changes")
    report = gr.HighlightedText(label="The report under your findings, against the model's (sentence level)",
                                color_map={"added": "green", "removed": "red"}, show_legend=True,
                                combine_adjacent=False, interactive=False, elem_id="what-if-report")
    text = gr.Textbox(label="The report under your findings", lines=3, interactive=False, buttons=["copy"],
                      elem_id="what-if-text")
    return Panel(finding=finding, state=state, add=add, run=run, reset=reset, changes=changes, report=report,
                 text=text)


def what_if_values(p: Panel, states: dict[str, str], before=None, after=None) -> dict:
    """The what-if panel for the user's `states`; with `after`, its report against `before` (the model's)."""
    return {p.changes: panels.overrides_summary(states),
            p.report: panels.sentence_diff(before, after) if after is not None else None,
            p.text: after.report if after is not None else ""}


def heatmap_panel() -> Panel:
    gr.Markdown("### 3 · Attention maps and FCC consistency", elem_classes="panel-title")
    key = gr.Dropdown([], label="Map of (entity prompt = LRP, retrieved sentence = GRP)")
    with gr.Row():
        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Opacity")
        cmap = gr.Dropdown(list(render.COLORMAPS), value=render.COLORMAPS[0], label="Colormap")
    with gr.Row():
        main = gr.Image(label="Selected map", type="numpy", interactive=False, height=512, format="png",
                        buttons=["fullscreen", "download"],
                        elem_id="heat-main")
        lateral = gr.Image(label="The same map on the lateral film", type="numpy", interactive=False, height=512,
                           format="png", buttons=["fullscreen", "download"], elem_id="heat-lateral", visible=False)
        partner = gr.Image(label="FCC partner (highest S)", type="numpy", interactive=False, height=512,
                           buttons=["fullscreen", "download"],
                           format="png", elem_id="heat-partner")
    caption = gr.Markdown("", elem_id="heat-caption")
    return Panel(key=key, opacity=opacity, cmap=cmap, main=main, partner=partner, caption=caption, lateral=lateral)


def heatmap_values(p: Panel, case: Case | None, key: str | None, opacity: float, cmap: str) -> dict:
    if case is None:
        return {p.main: None, p.partner: None, p.caption: "", p.lateral: gr.update(value=None, visible=False)}
    hm = case.heatmap(key, opacity, cmap)
    partner = None if hm.partner is None else render.png_file(hm.partner)
    lateral = None if hm.lateral is None else render.png_file(hm.lateral)
    return {p.main: None if hm.image is None else render.png_file(hm.image), p.partner: partner,
            p.caption: hm.caption, p.lateral: gr.update(value=lateral, visible=lateral is not None)}


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
        target = gr.Dropdown([("the whole case", "case")], value="case", label="Review (the case, or one sentence "
                             "of its report: clicking a sentence picks it)", elem_id="review-target")
        with gr.Row(equal_height=False):
            categories = gr.CheckboxGroup(list(review.CATEGORIES), label="Error type (a sentence: false finding, wrong "
                                          "location or severity, unsupported by its map, other)",
                                          elem_id="review-categories")
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
    return Panel(case=case, target=target, categories=categories, note=note, save=save, csv_file=csv_file, json_file=json_file,
                 status=status, table=table, import_file=import_file, clear=clear, confirm_row=confirm_row,
                 confirm=confirm, cancel=cancel)


def review_values(p: Panel, case: Case, new_image: bool) -> dict:
    keep = gr.update()
    return {p.case: f"Reviewing **{case.study_id or case.key}** ({S.ablation_label(case.ablation)}).",
            p.target: gr.update(choices=review_targets(case), value="case"),
            p.categories: [] if new_image else keep, p.note: "" if new_image else keep}


def review_targets(case: Case) -> list[tuple[str, str]]:
    """The review's choices: the whole case, or one sentence of the report ("2" = its second)."""
    return [("the whole case", "case")] + [(f"sentence {i + 1}: {panels.shorten(s.text, 70)}", str(i + 1))
                                           for i, s in enumerate(case.prediction.sentences)]
