"""`pip install .` (not editable) works outside the checkout: the wheel holds the library, the drivers and the
bundled model, `revtaf.REVTAF.from_pretrained()` finds that model, and the console scripts start."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q",
                    "-w", str(out)], check=True, capture_output=True, timeout=600)
    return next(out.glob("revtaf-*.whl"))


def test_wheel_holds_the_packages_and_the_bundled_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("revtaf-")}
    assert tops == {"revtaf", "revtaf_app", "revtaf_bench", "revtaf_cli", "revtaf_train"}
    assert {"revtaf/assets/revtaf-iu/model.safetensors", "revtaf/assets/revtaf-iu/manifest.json"} <= set(names)
    assert not any(n.startswith(("tests/", "revtaf/assets/revtaf-iu/../")) for n in names)


def test_installed_wheel_loads_the_bundled_model_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import revtaf, revtaf.paths; m = revtaf.REVTAF.from_pretrained(); "
            "print(revtaf.__file__); print(revtaf.paths.BUNDLED_MODEL); print(m.weights_sha256)")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    module, bundled, sha = out.stdout.split()[-3:]
    assert module.startswith(str(target)) and bundled.startswith(str(target)) and len(sha) == 64
    for script, args in (("revtaf", ["--help"]), ("revtaf-demo", ["--help"])):
        run = subprocess.run([str(target / "bin" / script), *args], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.startswith("usage:"), run.stderr[-2000:]
