"""The public API as the README shows it: its Python example runs verbatim (on a real IU image), and
`import revtaf` stays cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    section = REPO.joinpath("README.md").read_text().split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(iu_root, monkeypatch, capsys):
    from revtaf.data import image_file, load_annotation

    study = load_annotation(iu_root, "iu")["test"][0]
    code = readme_example()
    assert len(code.strip().splitlines()) <= 5 and "cxr.png" in code
    monkeypatch.chdir(REPO)  # the example names the bundled model by its path in the checkout
    exec(code.replace("cxr.png", str(image_file(iu_root, study))), {})
    report = capsys.readouterr().out.strip()
    assert len(report.split()) >= 5


def test_import_revtaf_is_cheap_and_names_resolve():
    probe = ("import sys, revtaf; heavy = [m for m in ('torch', 'transformers', 'gradio') if m in sys.modules];"
             "print(heavy); print(revtaf.REVTAF.__name__, revtaf.read_image.__name__, revtaf.Prediction.__name__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.splitlines() == ["[]", "REVTAF read_image Prediction"]
