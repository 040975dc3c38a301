"""Benchmark commands print the figures they promise (sizes here are tiny: the figures themselves are measured
on an idle machine with `revtaf bench`, never asserted as timings)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from revtaf_cli.main import main
from revtaf_train.speed import format_speed, train_speed

REPO = Path(__file__).resolve().parents[1]


def test_retrieval_bench_prints_one_object_per_bank_size(capsys):
    assert main(["bench", "--retrieval", "300", "3000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rows"] for r in rows] == [300, 3000]
    for r in rows:
        assert r["query_ms"] > 0 and r["batch_ms"] > 0 and r["batch"] == 64 and r["dim"] == 512
    assert rows[1]["bank_mb"] > rows[0]["bank_mb"] > 0
    for r in rows:  # the int8 scan, timed beside it: the same neighbours for (nearly) every query
        assert r["query_ms_int8"] > 0 and r["batch_ms_int8"] > 0 and r["int8_same_topk"] >= 60


def test_gpu_check_script_runs_its_cpu_form(iu_root):
    """scripts/gpu_check.sh in the tiny CPU form (GPU_CHECK_TINY=1): real training steps on IU images, one
    `train-speed:` line with images/s and the step time."""
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(iu_root)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(s for s in out.stdout.splitlines() if s.startswith("train-speed:"))
    assert "preset cpu on cpu (fp32" in line and "batch 2:" in line and "median of 2 steps" in line
    assert float(re.search(r"([\d.]+) images/s", line).group(1)) > 0


def test_train_speed_trains_with_the_plugins_on(iu_root):
    result = train_speed("cpu", iu_root, device="cpu", batch_size=2, max_steps=1, warmup_steps=0, num_workers=0,
                         print_line=False, plugins=("tisr.enabled", "uar.cra", "uar.tir"))
    assert result["plugins"] == ["tisr.enabled", "uar.cra", "uar.tir"] and result["step_s"] > 0
    assert "preset cpu with tisr.enabled + uar.cra + uar.tir on cpu" in format_speed(result)


def test_train_speed_refuses_a_folder_without_a_batch_of_studies(tmp_path):
    (tmp_path / "annotation.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_speed("cpu", tmp_path, device="cpu", batch_size=2, max_steps=1, print_line=False)


def test_latency_bench_prints_fp32_and_int8_side_by_side(capsys):
    assert main(["bench", "--preset", "cpu", "--runs", "1", "--json", "--with", "uar"]) == 0  # all of UAR
    result = json.loads(capsys.readouterr().out)
    assert result["plugins"] == ["uar"] and result["parameters"]["decoder"] > 4_215_301  # + TIR's mask
    assert result["parameters"]["uar_cra"] > 0
    assert set(result["latency_ms"]) == {"fp32", "int8"}
    for path in result["latency_ms"].values():
        assert path["generation"] > 0 and path["total"] >= path["generation"]
    assert result["naive_total_s"] == round(result["latency_ms"]["fp32"]["total"] / 1000, 3)
    assert abs(result["ratio"] - result["naive_total_s"] / result["total_s"]) < 0.02
