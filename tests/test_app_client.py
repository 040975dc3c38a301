"""The running demo driven through its HTTP API with gradio_client: a real IU image in, report and overlays
out; every bad file gives a clear error and the very next good request still succeeds.

The app runs in this process (a background server thread) on 127.0.0.1 and a free port, with a random-init
cpu-preset model; nothing touches the network beyond localhost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from revtaf_bench.harness import free_port  # noqa: E402
from revtaf_app import service as S  # noqa: E402
from revtaf_bench.dicom_factory import MARKERS, make_dicom  # noqa: E402
from revtaf_app import ui  # noqa: E402
from revtaf.data import image_file, load_annotation, read_image  # noqa: E402
from test_app_service import bad_inputs, shared_model_dir  # noqa: E402


# gradio's own queue code uses pandas options that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning",
                                        "ignore:The copy keyword is deprecated:Warning")

@contextlib.contextmanager
def running_app(service: S.Service):
    """Launch the demo on 127.0.0.1:<free port> in a background thread; yield its URL; close it."""
    demo, launch_kwargs = ui.build(service)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, iu_root):
    path = shared_model_dir(tmp_path_factory, iu_root)
    with running_app(S.Service(S.load_model(path), iu_root)) as url:
        yield url


@pytest.fixture(scope="module")
def test_study(iu_root):
    return load_annotation(iu_root, "iu")["test"][0]


def test_api_lists_named_endpoints(app_url):
    endpoints = Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/generate", "/what_if", "/analyze_upload", "/analyze_study", "/heatmap", "/ablate", "/compare",
                 "/save_review"):
        assert name in endpoints


def check_generate(result, size: tuple[int, int]) -> None:
    prediction, image, gallery = result
    assert isinstance(prediction["report"], str) and prediction["report"].strip()
    assert len(prediction["diseases"]) == 18 and len(prediction["entities"]) == 75
    assert prediction["neighbours"] and prediction["lrp_maps"] == [75, 7, 7]
    assert Image.open(image).size == size
    assert len(gallery) >= 5
    for item in gallery:
        assert Image.open(item["image"]).size == size and item["caption"]


def test_generate_round_trip_with_a_real_iu_image(app_url, iu_root, test_study):
    path = image_file(iu_root, test_study)
    result = Client(app_url, verbose=False).predict(handle_file(str(path)), False, False, api_name="/generate")
    check_generate(result, Image.open(path).size)
    prediction = result[0]
    size = list(Image.open(path).size)
    assert prediction["input"] == {"format": "jpeg", "size": size, "view_position": None, "bits": 8}


def test_ablated_generate_drops_the_branch(app_url, iu_root, test_study):
    prediction, _, _ = Client(app_url, verbose=False).predict(
        handle_file(str(image_file(iu_root, test_study))), True, False, api_name="/generate")
    assert prediction["ablation"] == {"grp": False, "lrp": True}
    assert prediction["grp_maps"][0] == 0 and prediction["grp_sentences"] == []


def test_each_bad_file_gives_a_clear_error_then_a_good_request_succeeds(app_url, iu_root, test_study, tmp_path):
    client = Client(app_url, verbose=False)
    good = str(image_file(iu_root, test_study))
    size = Image.open(good).size
    for name, (data, error) in bad_inputs(iu_root, test_study.id).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(AppError) as info:
            client.predict(handle_file(str(path)), False, False, api_name="/generate")
        message = str(info.value)
        assert "Traceback" not in message and name not in message, name
        # the page shows the typed error's own sentence, e.g. "The file is empty (0 bytes)."
        with pytest.raises(error) as expected:
            read_image(data)
        assert str(expected.value) in message, (name, message)
        check_generate(client.predict(handle_file(good), False, False, api_name="/generate"), size)


def test_what_if_rewrites_to_the_given_findings_and_says_whose_they_are(app_url, iu_root, test_study):
    """/what_if: an image (or a study) and findings to change -> the prediction written to them, the model's own
    report beside it and the sentence-level difference; a bad finding or state is a readable error."""
    client = Client(app_url, verbose=False)
    out = client.predict({"Cardiomegaly": "positive", "Pneumothorax": "blank"},
                         handle_file(str(image_file(iu_root, test_study))), None, api_name="/what_if")
    sources = {d["name"]: (d["state"], d["source"]) for d in out["diseases"]}
    assert sources["Cardiomegaly"] == ("positive", "user") and sources["Pneumothorax"] == ("blank", "user")
    assert sources["Edema"][1] == "model"
    assert out["model"]["report"].strip() and out["report"].strip()
    kept = [text for text, mark in out["difference"] if mark in (None, "added")]
    assert " ".join(t.strip() for t in kept) == out["report"]
    by_study = client.predict({"Cardiomegaly": "positive"}, None, test_study.id, api_name="/what_if")
    assert {d["name"]: d["source"] for d in by_study["diseases"]}["Cardiomegaly"] == "user"
    for states in ({"Pneumonitis": "positive"}, {"Cardiomegaly": "likely"}, {}):
        with pytest.raises(AppError, match="finding|state"):
            client.predict(states, None, test_study.id, api_name="/what_if")
    with pytest.raises(AppError, match="either an image or a study"):
        client.predict({"Cardiomegaly": "positive"}, None, None, api_name="/what_if")


def test_uploads_are_not_kept_on_disk(app_url, iu_root, test_study):
    import gradio as gr

    path = image_file(iu_root, test_study)
    Client(app_url, verbose=False).predict(handle_file(str(path)), False, False, api_name="/generate")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = [f for f in Path(gr.utils.get_upload_folder()).rglob("*")
            if f.is_file() and f.stat().st_size == path.stat().st_size
            and hashlib.sha256(f.read_bytes()).hexdigest() == digest]
    assert kept == []


def test_one_session_case_heatmap_window_ablation_review(app_url, test_study):
    client = Client(app_url, verbose=False)  # one client = one session: the State carries over
    outputs = client.predict(test_study.id, False, False, [], 0.6, "inferno", "all", api_name="/analyze_study")
    assert test_study.report in outputs  # ground truth filled from the dataset
    size = Image.open(outputs[0]).size  # the displayed image

    main, partner, caption, lateral = client.predict("grp:0", 0.5, "jet", api_name="/heatmap")
    assert Image.open(main).size == Image.open(partner).size == size and "Retrieved sentence 1" in caption
    assert lateral is None or lateral.get("value") is None  # a one-view model: no map on a lateral film
    center, width, shown, *_ = client.predict("lung", False, "lrp:8", 0.6, "inferno", api_name="/window_preset")
    assert width > 0 and Image.open(shown).size == size

    ablated = client.predict(False, True, [], "", 0.6, "inferno", "all", api_name="/ablate")
    assert any(isinstance(v, str) and "entity prompts (LRP) off" in v for v in ablated)
    table, csv_file, json_file, status = client.predict("case", ["false finding"], "mentions a device that is not there",
                                                        api_name="/save_review")
    assert "1 review" in status and table["data"][0][1] == test_study.id
    assert "mentions a device that is not there" in Path(csv_file).read_text(encoding="utf-8")
    records = json.loads(Path(json_file).read_text(encoding="utf-8"))
    assert records[0]["study_id"] == test_study.id and records[0]["categories"] == ["false finding"]
    # a sentence of the report reviewed beside the case: its own entry in the export, with its text
    *_, json_file, status = client.predict("1", ["unsupported by its map"], "the map sits on the border",
                                           api_name="/save_review")
    records = json.loads(Path(json_file).read_text(encoding="utf-8"))
    assert "2 review" in status and [r["sentence"] for r in records] == ["", 1]
    assert records[1]["sentence_text"] and records[1]["sentence_text"] in records[1]["generated_report"]
    *_, status = client.predict("case", ["unsupported by its map"], "", api_name="/save_review")
    assert status.startswith("⚠") and "do not apply to a case" in status
    # another session has no case and no review: the page event answers with its message, nothing saved
    *_, status = Client(app_url, verbose=False).predict("case", ["style"], "x", api_name="/save_review")
    assert status.startswith("⚠ Analyse an image first")


def test_dicom_upload_shows_and_logs_no_identifying_text(app_url, iu_root, test_study, tmp_path, capfd, caplog):
    grey = np.asarray(Image.open(image_file(iu_root, test_study)).convert("L"), dtype=np.uint16)
    path = tmp_path / "ZZLEAKFILENAME.dcm"
    path.write_bytes(make_dicom(pixels=grey * 16, bits_stored=12, view_position="PA", window=(2048, 4096)))
    with caplog.at_level(logging.DEBUG):
        outputs = Client(app_url, verbose=False).predict([handle_file(str(path))], False, False, [], 0.6, "inferno", "all",
                                                         api_name="/analyze_upload")
    assert any(isinstance(v, str) and "view position: **PA**" in v for v in outputs)
    captured = capfd.readouterr()
    seen = json.dumps(outputs, default=str) + captured.out + captured.err + caplog.text
    for secret in (*MARKERS, "ZZLEAKFILENAME"):
        assert secret not in seen
