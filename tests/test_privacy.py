"""Patient data: DICOMs whose identifying tags (and file names) carry marker strings go through the library and
the running app. No marker may appear in any output, downloaded file, warning, log line (the server's whole
stdout/stderr), exported review or file left under the server's temporary folders; no upload stays on disk;
the page warns that text burned into the pixels is not removed."""

from __future__ import annotations

import logging
import urllib.request
import warnings

import pytest

from revtaf_app.errors import BURNED_IN_WARNING
from revtaf_bench.dicom_factory import IDENTIFYING, MARKERS
from revtaf_bench.hostile_corpus import ALL_MARKERS, FILE_MARKER, MALFORMED, marker_dicoms
from reliability_support import app_server
from revtaf.data.imageio import ImageReadError, read_image
from revtaf_bench.check_privacy import privacy_probe

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning")


def test_the_probe_files_carry_the_markers():
    files = marker_dicoms()
    kept = [v for k, v in IDENTIFYING.items() if k not in MALFORMED]
    for name, data in files.items():
        expected = kept + list(ALL_MARKERS[len(MARKERS):]) if name == "malformed-tags.dcm" else MARKERS
        assert [m for m in expected if m.encode() not in data] == [], name


def test_library_reads_pixels_only(caplog):
    files = marker_dicoms()  # built first: writing the malformed one makes pydicom warn, which is not under test
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = []
        for data in files.values():
            try:
                image = read_image(data)
                seen.append(repr(image) + repr(vars(image)))
            except ImageReadError as exc:
                seen.append(str(exc))
    text = "\n".join(seen + [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records])
    assert [m for m in ALL_MARKERS if m in text] == []


def test_no_marker_leaves_the_app_and_no_upload_stays(tmp_path_factory, iu_root, tmp_path):
    server = app_server(tmp_path_factory, iu_root)
    result = privacy_probe(server.url, server, marker_dicoms(), ALL_MARKERS + (FILE_MARKER,), tmp_path)
    assert result["requests"] == 5 * 6 and result["places_scanned"] > 30
    assert result["leaks"] == []
    assert result["uploads_kept"] == []
    assert server.alive()


def test_the_page_warns_about_burned_in_text(tmp_path_factory, iu_root):
    server = app_server(tmp_path_factory, iu_root)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.url + "config", timeout=30) as response:
        config = response.read().decode()
    assert "burned into the pixels" in BURNED_IN_WARNING and "NOT removed" in BURNED_IN_WARNING
    assert BURNED_IN_WARNING in config
