"""The demo page in a real headless Chromium (Debian `chromium`, driven by Playwright): upload an image, wait
for the report, check every panel is filled, load a dataset case, survive a bad file; screenshots go to
screenshots/ (git-ignored).

Chromium missing: the test fails when CI=true, otherwise it is skipped with the reason
(install: `make browser`, as root).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from revtaf_app import service as S
from revtaf.data import image_file, load_annotation
from revtaf.labels import LABEL_NAMES_18
from test_app_client import running_app
from test_app_service import shared_model_dir

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
TIMEOUT_MS = 120_000
ABNORMAL_CASE = "CXR3595_IM-1773-0001"  # R2Gen IU test split: cardiomegaly and interstitial markings


# gradio's own queue code uses pandas options that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning",
                                        "ignore:The copy keyword is deprecated:Warning")

@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        reason = f"{CHROMIUM} not found (install it with `make browser`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1440, "height": 900})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, iu_root):
    path = shared_model_dir(tmp_path_factory, iu_root)
    with running_app(S.Service(S.load_model(path), iu_root)) as url:
        yield url


def textarea(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").first.input_value()


def wait_for_text(page, elem_id: str, previous: str = "") -> str:
    """Wait until the textbox `elem_id` holds a non-empty value different from `previous`."""
    page.wait_for_function(
        "([id, prev]) => { const t = document.querySelector(`#${id} textarea`); "
        "return t && t.value && t.value !== prev; }",
        arg=[elem_id, previous], timeout=TIMEOUT_MS)
    return textarea(page, elem_id)


def panel_text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def image_loaded(page, elem_id: str) -> bool:
    images = page.locator(f"#{elem_id} img")
    return images.count() > 0 and bool(images.first.get_attribute("src"))


def test_page_upload_panels_dataset_case_and_bad_file(browser_page, app_url, iu_root, tmp_path):
    page = browser_page
    page.goto(app_url, timeout=TIMEOUT_MS)
    page.get_by_text("not for clinical use").first.wait_for(timeout=TIMEOUT_MS)

    # 1. upload a real IU image: every panel fills in one event
    study = load_annotation(iu_root, "iu")["test"][0]
    page.locator("#upload input[type=file]").set_input_files(str(image_file(iu_root, study)))
    report = wait_for_text(page, "report")
    assert report.strip()
    page.wait_for_function("() => document.querySelector('#heat-main img')", timeout=TIMEOUT_MS)
    assert image_loaded(page, "image-view") and image_loaded(page, "heat-main") and image_loaded(page, "heat-partner")
    assert textarea(page, "retrieved").strip()
    # tables render only their visible rows: check the first ones
    for table, text in (("diseases", "Enlarged Cardiomediastinum"), ("entities", "finding"), ("neighbours", "CXR")):
        assert text in page.locator(f"#{table}").inner_text(), table
    assert "S =" in page.locator("#heat-caption").inner_text()
    assert "view position" in page.locator("body").inner_text()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "app_upload.png"), full_page=True)

    # 2. a bad file: a readable message in the page, and the app keeps serving
    bad = tmp_path / "notes.png"
    bad.write_text("this is a text file renamed to .png\n")
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.get_by_text("This file contains text, not an image").first.wait_for(timeout=TIMEOUT_MS)
    assert "Traceback" not in page.locator("body").inner_text()

    # 3. a dataset case: ground truth, word diff, finding diff and metrics appear with it
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#load-case").click()
    gt = wait_for_text(page, "gt")
    assert gt == study.report  # the first test case is preselected
    page.wait_for_function("() => document.querySelector('#metrics') && "
                           "document.querySelector('#metrics').innerText.includes('BLEU-4')", timeout=TIMEOUT_MS)
    assert "ROUGE-L" in page.locator("#metrics").inner_text()
    assert "ground truth only" in page.locator("#word-diff").inner_text()
    assert "verdict" in page.locator("#findings").inner_text()
    time.sleep(0.5)  # let images finish painting before the screenshot
    page.screenshot(path=str(SCREENSHOTS / "app_dataset_case.png"), full_page=True)


def test_page_warns_for_inputs_the_model_does_not_read(browser_page, iu_root, tmp_path):
    """With the bundled model (it carries the input check): a photograph gets the warning above a greyed-out
    report; a real frontal IU image gets none; a study's two films uploaded together are both shown and read;
    a lateral alone gets its warning."""
    from revtaf_bench.hostile_corpus import corpus
    from revtaf.paths import BUNDLED_MODEL

    page = browser_page
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(next(h for h in corpus() if h.name == "colour-photo").data)
    with running_app(S.Service(S.load_model(BUNDLED_MODEL, int8=True), iu_root)) as url:
        page.goto(url, timeout=TIMEOUT_MS)
        page.get_by_text("not for clinical use").first.wait_for(timeout=TIMEOUT_MS)
        page.locator("#upload input[type=file]").set_input_files(str(photo))
        wait_for_text(page, "report")
        warning = page.locator("#input-warning")
        warning.get_by_text("does not look like a chest radiograph").wait_for(timeout=TIMEOUT_MS)
        assert "withheld" in (page.locator("#report").get_attribute("class") or "")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "app_input_warning.png"), full_page=True)
        previous = textarea(page, "report")
        study = load_annotation(iu_root, "iu")["test"][0]
        page.locator("#upload input[type=file]").set_input_files(str(image_file(iu_root, study)))
        page.wait_for_function("() => !document.querySelector('#report').className.includes('withheld')",
                               timeout=TIMEOUT_MS)
        assert textarea(page, "report") != previous
        assert not warning.is_visible()
        assert "predicted from the pixels" in page.locator("body").inner_text()
        # the bundled model (v7) carries no plug-in: no plug-in switch and no plug-in note
        assert not page.locator("#plugin-note").is_visible() and not page.locator("#plugins-off").is_visible()
        page.wait_for_function("() => document.querySelector('#heat-main img')", timeout=TIMEOUT_MS)
        time.sleep(0.5)
        page.screenshot(path=str(SCREENSHOTS / "app_bundled_model.png"), full_page=True)
        # an abnormal case (cardiomegaly, interstitial markings) for the eye: report vs findings table, maps
        abnormal = next(s for s in load_annotation(iu_root, "iu")["test"] if s.id == ABNORMAL_CASE)
        shown = page.locator("#image-view img").first.get_attribute("src")
        page.locator("#upload input[type=file]").set_input_files(str(image_file(iu_root, abnormal)))
        page.wait_for_function("prev => { const i = document.querySelector('#image-view img'); "
                               "return i && i.src && i.src !== prev; }", arg=shown, timeout=TIMEOUT_MS)
        time.sleep(1.0)
        # a finding sentence clicked: its evidence (topic, entity, retrieved sentence) and its entity's map
        finding = page.locator("#report-sentences .token-container").filter(has_text="+").first
        finding.wait_for(timeout=TIMEOUT_MS)
        key_before = page.locator("#heat-caption").inner_text()
        finding.click()
        evidence = page.locator("#sentence-evidence")
        evidence.get_by_text("Entity (LRP map shown)").wait_for(timeout=TIMEOUT_MS)
        assert "Topic:" in evidence.inner_text() and "retrieved sentence" in evidence.inner_text()
        page.wait_for_function("prev => document.querySelector('#heat-caption').innerText !== prev",
                               arg=key_before, timeout=TIMEOUT_MS)
        time.sleep(0.5)
        page.screenshot(path=str(SCREENSHOTS / "app_abnormal_case.png"), full_page=True)
        # the clicked sentence reviewed on its own: it is the review's target, and the export carries it
        target = page.locator("#review-target input").input_value()
        assert target.startswith("sentence "), target
        page.locator("#review-categories").get_by_label("unsupported by its map").check()
        page.locator("#save-review").click()
        page.locator("#review-status").get_by_text("Saved.").wait_for(timeout=TIMEOUT_MS)
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            page.locator("#download-json").click()
        exported = tmp_path / "sentence-review.json"
        download.value.save_as(exported)
        entry = next(r for r in json.loads(exported.read_text(encoding="utf-8")) if r["sentence"])
        assert entry["categories"] == ["unsupported by its map"] and entry["sentence_text"] in textarea(page, "report")
        # what-if: lung opacity (positive here) set blank and pleural effusion positive: the rewritten report
        # states the effusion and no opacity, the changed sentences marked
        assert "lung opacity" in panel_text(page, "report-sentences").lower()
        page.locator("#what-if-set").click()
        page.locator("#what-if-changes").get_by_text("Pleural Effusion → positive").wait_for(timeout=TIMEOUT_MS)
        # the findings table's state cell, edited as a radiologist would
        row = LABEL_NAMES_18.index("Lung Opacity")  # the table keeps the classifier's order
        cell = page.locator(f'#diseases [data-testid="cell-{row}-1"]')
        assert "positive" in cell.inner_text()
        cell.dblclick()
        page.keyboard.press("Control+A")
        page.keyboard.type("blank")
        page.keyboard.press("Enter")
        page.locator("#what-if-changes").get_by_text("Lung Opacity → blank").wait_for(timeout=TIMEOUT_MS)
        page.locator("#what-if-run").click()
        rewritten = wait_for_text(page, "what-if-text")
        assert "effusion" in rewritten and "opacit" not in rewritten, rewritten
        assert "added" in page.locator("#what-if-report").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "app_what_if.png"), full_page=True)
        # a study: its lateral and frontal uploaded together, in that order; the view classifier tells them
        # apart, both films are shown, and so is the selected map on each
        page.locator("#upload input[type=file]").set_input_files(
            [str(image_file(iu_root, abnormal, "lateral")), str(image_file(iu_root, abnormal))])
        page.wait_for_function("() => document.querySelector('#lateral-view img')", timeout=TIMEOUT_MS)
        info = page.locator("#image-info").inner_text()
        assert "frontal: file 2, lateral: file 1 (by the view classifier)" in info, info
        page.wait_for_function("() => document.querySelector('#heat-lateral img')", timeout=TIMEOUT_MS)
        assert "of the map's mass on the" in page.locator("#heat-caption").inner_text()
        assert textarea(page, "report").strip() and not page.locator("#input-warning").is_visible()
        time.sleep(0.5)
        page.screenshot(path=str(SCREENSHOTS / "app_two_views.png"), full_page=True)
        # the lateral alone: read as the only film, with the warning a lateral always had (a lateral view, or,
        # when it lies beyond the training frontal films, not a radiograph like them)
        page.locator("#upload input[type=file]").set_input_files(str(image_file(iu_root, abnormal, "lateral")))
        page.locator("#input-warning").wait_for(state="visible", timeout=TIMEOUT_MS)
        warned = page.locator("#input-warning").inner_text()
        assert "lateral view" in warned or "does not look like a chest radiograph" in warned, warned
        assert not page.locator("#lateral-view").is_visible()


def test_reviews_survive_a_reload_and_an_export_clear_import_round_trip(browser_page, app_url, iu_root, tmp_path):
    """Issue: a reload lost every review. Two reviews are saved, the page is reloaded, exported, cleared and
    the export imported again; the reviews are there each time."""
    page = browser_page
    test = load_annotation(iu_root, "iu")["test"]
    page.goto(app_url, timeout=TIMEOUT_MS)
    page.get_by_text("not for clinical use").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Dataset").click()
    for i, label in enumerate(("style", "other")):
        previous = textarea(page, "gt")
        page.get_by_role("button", name="Next case →" if i else "Load case").click()
        wait_for_text(page, "gt", previous)
        page.locator("#review-categories").get_by_label(label).check()
        page.locator("#review-note textarea").fill(f"review {i + 1}")
        page.locator("#save-review").click()
        page.locator("#review-status").get_by_text(f"Saved. {i + 1} review(s)").wait_for(timeout=TIMEOUT_MS)
        # the progress line is updated after the browser's copy is written
        page.locator("#review-progress").get_by_text(f"{i + 1} of").wait_for(timeout=TIMEOUT_MS)
    ids = (test[0].id, test[1].id)

    def reviews_listed() -> str:
        page.wait_for_function("ids => { const t = document.querySelector('#reviews'); "
                               "return t && ids.every(i => t.innerText.includes(i)); }", arg=list(ids), timeout=TIMEOUT_MS)
        return page.locator("#reviews").inner_text()

    page.reload(timeout=TIMEOUT_MS)
    assert "review 1" in reviews_listed()
    page.locator("#review-status").get_by_text("2 review(s) kept in this browser").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#review-progress").get_by_text("2 of").wait_for(timeout=TIMEOUT_MS)

    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.locator("#download-json").click()
    exported = tmp_path / "reviews.json"
    download.value.save_as(exported)
    records = json.loads(exported.read_text(encoding="utf-8"))
    assert {r["study_id"] for r in records} == set(ids)
    assert all(len(r["model_sha256"]) == 64 and r["protocol"] and r["saved_at"] for r in records)

    page.locator("#clear-reviews").click()
    page.locator("#confirm-clear").click()
    page.locator("#review-status").get_by_text("Deleted 2 review(s)").wait_for(timeout=TIMEOUT_MS)
    page.locator("#review-progress").get_by_text("0 of").wait_for(timeout=TIMEOUT_MS)
    assert not any(i in page.locator("#reviews").inner_text() for i in ids)
    page.reload(timeout=TIMEOUT_MS)  # cleared in the browser's storage too
    page.get_by_text("not for clinical use").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#reviews").wait_for(timeout=TIMEOUT_MS)
    time.sleep(1.0)
    assert not any(i in page.locator("#reviews").inner_text() for i in ids)

    page.get_by_role("tab", name="Dataset").click()  # where the progress line is
    page.locator("#import-reviews input[type=file]").set_input_files(str(exported))
    page.locator("#review-status").get_by_text("Imported: 2 added").wait_for(timeout=TIMEOUT_MS)
    assert "review 2" in reviews_listed()
    page.locator("#review-progress").get_by_text("2 of").wait_for(timeout=TIMEOUT_MS)
    page.reload(timeout=TIMEOUT_MS)
    reviews_listed()
