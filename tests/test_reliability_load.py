"""Concurrency, short form: 8 gradio_client sessions at once on loopback, mixing good and bad files. Every good
request gets its report, every bad one a readable refusal, the same image the same prediction whatever the
order; sessions never see each other's ground truth, toggles or review notes; a full queue answers "busy"."""

from __future__ import annotations

import pytest

from revtaf_bench.hostile_corpus import corpus
from reliability_support import app_server, good_images
from revtaf_bench.check_load import burst, run_load, session_isolation
from revtaf_bench.harness import message_problems

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning")

CLIENTS, REQUESTS = 8, 3
BAD = ("empty", "text-renamed-png", "png-bomb-20000", "dicom-multiframe", "jpeg-truncated")


@pytest.fixture(scope="module")
def server(tmp_path_factory, iu_root):
    return app_server(tmp_path_factory, iu_root)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    paths = []
    for item in corpus():
        if item.name in BAD:
            paths.append(folder / item.filename)
            paths[-1].write_bytes(item.data)
    return paths


def test_concurrent_sessions_mixing_good_and_bad_files(server, iu_root, bad_files):
    good = good_images(iu_root, 2)
    result = run_load(server.url, good, bad_files, clients=CLIENTS, requests=REQUESTS)
    assert result.requests == CLIENTS * REQUESTS
    assert result.good_failed == [] and result.busy == 0
    assert result.bad_not_refused == []
    n_bad = sum((i + r) % 3 == 2 for i in range(CLIENTS) for r in range(REQUESTS))
    assert result.served == CLIENTS * REQUESTS - n_bad
    # determinism: each good image gave one and the same prediction to every session, in whatever order
    assert set(result.fingerprints) == {str(g) for g in good}
    assert result.deterministic, result.fingerprints
    assert server.alive()


def test_sessions_are_isolated(server, iu_root):
    result = session_isolation(server.url, good_images(iu_root, 2), sessions=4)
    assert result["isolated"], result["failures"]


def test_a_full_queue_answers_busy_and_the_app_recovers(server, iu_root):
    # the test server queues at most 8 (REVTAF_QUEUE_SIZE) behind 2 running model calls: 14 at once overflow it
    good = good_images(iu_root, 1)[0]
    results = burst(server.url, good, 14)
    kinds = [r.kind for r in results]
    assert set(kinds) <= {"ok", "busy"}, [(r.kind, r.message) for r in results]
    assert kinds.count("busy") >= 1 and kinds.count("ok") >= 2
    busy = next(r.message for r in results if r.kind == "busy")
    assert "full" in busy.lower() and not message_problems(busy)
    assert burst(server.url, good, 1)[0].kind == "ok"


def test_soak_short_form_serves_mixed_traffic_without_errors(server, iu_root, bad_files):
    """`revtaf bench --robustness --soak MINUTES`, for 15 s: every call answered as it should, figures per window."""
    from revtaf_bench.check_load import format_soak, soak

    result = soak(server, good_images(iu_root, 2), bad_files, minutes=0.25, clients=4, windows=2)
    assert result["errors"] == 0, result["error_detail"]
    assert result["good_served"] >= 4 and result["bad_refused"] >= 1 and result["server_alive"]
    assert result["requests"] == result["good_served"] + result["bad_refused"]
    assert result["rss_start_mb"] > 0 and result["rss_end_mb"] > 0
    assert all(w["rss_mb"] > 0 for w in result["windows"])
    line = format_soak(result)
    assert line.startswith("soak: ") and " 0 errors" in line and "MB at the end" in line
