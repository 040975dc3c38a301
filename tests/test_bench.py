"""Benchmark commands print the figures they promise (sizes here are tiny: the figures themselves are measured
on an idle machine with `revtaf bench`, never asserted as timings)."""

from __future__ import annotations

import json

from revtaf_train.cli import main


def test_retrieval_bench_prints_one_object_per_bank_size(capsys):
    assert main(["bench", "--retrieval", "300", "3000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rows"] for r in rows] == [300, 3000]
    for r in rows:
        assert r["query_ms"] > 0 and r["batch_ms"] > 0 and r["batch"] == 64 and r["dim"] == 512
    assert rows[1]["bank_mb"] > rows[0]["bank_mb"] > 0
