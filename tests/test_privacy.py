"""Patient data: DICOMs whose identifying tags (and file names) carry marker strings go through the library and
the running app. No marker may appear in any output, downloaded file, warning, log line (the server's whole
stdout/stderr), exported review or file left under the server's temporary folders; no upload stays on disk;
the page warns that text burned into the pixels is not removed."""

from __future__ import annotations

import logging
import urllib.request
import warnings

import numpy as np
import pytest

from app.service import BURNED_IN_WARNING
from dicom_factory import IDENTIFYING, MARKERS, make_dataset, make_dicom, to_bytes, with_fake_compression
from hostile_corpus import chest_like, dicom_with
from reliability_support import app_server
from revtaf.data.imageio import ImageReadError, read_image
from train.robustness import privacy_probe

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning")

# Values that break their tag's rules (a date that is not a date, an over-long name, a bogus character set):
# pydicom warns and logs about such values, quoting them, if anything ever reads these tags.
MALFORMED = {"PatientBirthDate": "ZZLEAKBADDATE", "InstitutionName": "ZZLEAK OVERLONG HOSPITAL " * 4,
             "SpecificCharacterSet": "ZZLEAK_CHARSET", "OtherPatientIDs": "ZZLEAK-OTHER-ID\\x00"}
ALL_MARKERS = MARKERS + ("ZZLEAKBADDATE", "ZZLEAK OVERLONG HOSPITAL", "ZZLEAK_CHARSET", "ZZLEAK-OTHER-ID")
FILE_MARKER = "ZZLEAK-FILENAME-DOE-JOHN"


def marker_dicoms() -> dict[str, bytes]:
    """Upload name -> bytes: two readable marker DICOMs and three that are refused (error paths)."""
    pixels = chest_like(96, 80).astype(np.uint16) * 16
    compressed = make_dataset(pixels=pixels)
    return {
        f"{FILE_MARKER}.dcm": make_dicom(pixels=pixels),
        "malformed-tags.dcm": dicom_with(**MALFORMED),
        f"{FILE_MARKER}-multiframe.dcm": make_dicom(pixels=np.stack([pixels] * 2), frames=2),
        "compressed.dcm": with_fake_compression(compressed, "1.2.840.10008.1.2.4.80"),  # JPEG-LS, no plugin
        "no-pixels.dcm": make_dicom(pixels=None),
    }


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
