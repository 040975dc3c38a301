"""Weights integrity: the SHA-256 manifest written by save_pretrained is checked by from_pretrained; damaged,
truncated or missing files are refused with an IntegrityError naming the file; weights are only ever read by
safetensors or torch.load(weights_only=True)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from revtaf.integrity import MANIFEST, IntegrityError, read_manifest, sha256_file, verify_manifest, write_manifest
from test_app_service import shared_model_dir
from revtaf_bench.check_integrity import integrity_checks
from revtaf_bench.check_privacy import unsafe_weight_loads
from revtaf_bench.harness import REPO


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "config.json").write_text('{"dim": 8}')
    (tmp_path / ".hidden").write_text("not listed")
    return tmp_path


def test_manifest_lists_every_visible_file_with_size_and_sha256(folder):
    path = write_manifest(folder)
    assert path == folder / MANIFEST
    files = read_manifest(folder)
    assert set(files) == {"model.safetensors", "config.json"}
    assert files["model.safetensors"] == {"size": 256 * 64, "sha256": sha256_file(folder / "model.safetensors")}
    assert verify_manifest(folder, required=["model.safetensors"]) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
         "model.safetensors: truncated (1000 of 16384 bytes)"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors: missing"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x01" + (d / "model.safetensors").read_bytes()[1:]),
         "model.safetensors: corrupted or modified"),
        (lambda d: (d / "config.json").write_text('{"dim": 8} '), "config.json: wrong size"),
        (lambda d: (d / MANIFEST).unlink(), f"{MANIFEST}: missing"),
        (lambda d: (d / MANIFEST).write_text("{not json"), f"{MANIFEST}: unreadable"),
        (lambda d: (d / MANIFEST).write_text(json.dumps({"format": "revtaf-sha256-manifest", "files": {
            "../outside": {"size": 1, "sha256": "00"}}})), "../outside: the manifest names a path outside"),
    ],
)
def test_damage_is_refused_naming_the_file(folder, damage, words):
    write_manifest(folder)
    damage(folder)
    with pytest.raises(IntegrityError) as info:
        verify_manifest(folder)
    assert words in str(info.value) and str(folder) in str(info.value)


def test_every_problem_is_named_at_once(folder):
    write_manifest(folder)
    (folder / "model.safetensors").unlink()
    (folder / "config.json").write_text('{"dim": 9}')
    with pytest.raises(IntegrityError) as info:
        verify_manifest(folder, required=["bank.json"])
    assert {name for name, _ in info.value.problems} == {"model.safetensors", "config.json", "bank.json"}
    assert "bank.json: not covered by the manifest" in str(info.value)


def test_unlisted_files_are_ignored(folder):
    write_manifest(folder)
    (folder / "README.md").write_text("added after export")
    verify_manifest(folder)


def test_write_manifest_refuses_paths_outside(folder):
    with pytest.raises(ValueError, match="inside"):
        write_manifest(folder, files=["../etc/passwd"])
    with pytest.raises(FileNotFoundError):
        write_manifest(folder, files=["nope.bin"])


# ----------------------------------------------------------------------------------- the real model directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, iu_root):
    return shared_model_dir(tmp_path_factory, iu_root)


def test_save_pretrained_writes_a_manifest_covering_the_weights(model_dir):
    files = read_manifest(model_dir)
    assert {"config.json", "model.safetensors", "bank.json", "tokenizer.json"} <= set(files)
    assert files["model.safetensors"]["sha256"] == sha256_file(model_dir / "model.safetensors")


def test_from_pretrained_refuses_damaged_copies_by_name(model_dir, tmp_path):
    results = {r["check"]: r for r in integrity_checks(model_dir, tmp_path)}
    failed = {k: r["detail"] for k, r in results.items() if not r["passed"]}
    assert not failed, failed
    assert results["intact model loads"]["detail"] == "loaded"
    assert "model.safetensors: corrupted or modified" in results["one bit flipped in the weights"]["detail"]
    assert "model.safetensors: truncated" in results["weights truncated to half"]["detail"]
    assert "model.safetensors: missing" in results["weights file missing"]["detail"]
    assert "bank.json: corrupted" in results["bank ids edited, same size"]["detail"]


def test_missing_manifest_warns_in_the_library(model_dir, tmp_path):
    from revtaf.model.revtaf import REVTAF

    copy = shutil.copytree(model_dir, tmp_path / "m")
    (copy / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="without an integrity check"):
        REVTAF.from_pretrained(copy)
    with pytest.raises(IntegrityError, match=f"{MANIFEST}: missing"):
        REVTAF.from_pretrained(copy, require_manifest=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_manifest(copy)  # e.g. for a directory saved before manifests existed
        REVTAF.from_pretrained(copy, require_manifest=True)


# ----------------------------------------------------------------------------------- how weights are read


def test_the_scan_finds_unsafe_loads(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import pickle, torch, numpy as np\n"
        "a = torch.load('x.pt')\n"
        "b = torch.load('x.pt', weights_only=False)\n"
        "c = pickle.loads(b'')\n"
        "d = np.load('x.npy', allow_pickle=True)\n"
        "# torch.load('in a comment') is not a call\n"
        "e = torch.load('x.pt', map_location='cpu', weights_only=True)\n"
        "f = np.load('x.npy')\n"
    )
    found = unsafe_weight_loads([tmp_path])
    assert [line.split()[0].rsplit(":", 1)[1] for line in found] == ["2", "3", "4", "5"]


def test_serving_code_reads_weights_only_safely():
    # The library and the demo: everything a public Space runs. (train/ resumes its own training checkpoints
    # with weights_only=False; those files hold optimizer and RNG state and are never downloaded.)
    assert unsafe_weight_loads([REPO / "revtaf", REPO / "app"]) == []


def test_the_demo_refuses_to_start_on_a_truncated_model(model_dir, tmp_path):
    from revtaf_app.__main__ import main

    copy = shutil.copytree(model_dir, tmp_path / "m")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(SystemExit) as info:  # `python -m app` prints this message and exits with status 1
        main(["--checkpoint", str(copy), "--port", "9", "--threads", "1"])
    assert "model.safetensors: truncated (4096 of" in str(info.value.code)
