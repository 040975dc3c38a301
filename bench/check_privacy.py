"""Check 3, patient data: DICOMs whose identifying tags (and file name) carry marker strings; no marker may appear
in any API output, downloaded file, server log line or file left under the server's temporary folders, and no
upload may stay on disk. Also: weights are read only by safetensors or torch.load(weights_only=True)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from revtaf_bench.harness import AppServer, REPO, call, client


def text_of(value) -> str:
    """All text an API result carries: JSON of the outputs plus the content of every text file it returned."""
    parts = [json.dumps(value, default=str, ensure_ascii=False)]
    for path in _paths_in(value):
        if path.suffix.lower() in (".csv", ".json", ".txt", ".html", ".md"):
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def _paths_in(value) -> list[Path]:
    """Local files (downloaded by gradio_client) referenced anywhere in an API result."""
    if isinstance(value, str):
        return [Path(value)] if os.path.isabs(value) and os.path.isfile(value) else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths_in(v)]
    return []


# ============================================================================ 3. patient data


def _find(blob: bytes, markers: Iterable[str]) -> list[str]:
    """Markers found in `blob`, as UTF-8 or UTF-16 text (JSON escapes are decoded by the caller)."""
    return [m for m in markers if m.encode() in blob or m.encode("utf-16-le") in blob]


def privacy_probe(url: str, server: AppServer, dicoms: dict[str, bytes], markers: Sequence[str],
                  workdir: str | os.PathLike, timeout_s: float = 300.0) -> dict:
    """Send marker-carrying DICOMs (file name -> bytes; names may carry markers too) through every endpoint
    that takes an upload or returns a file, then look for the markers everywhere the server could put them.

    Returns {"markers", "requests", "places_scanned", "leaks": ["where: marker"], "uploads_kept": [paths]}.
    """
    from gradio_client import handle_file

    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    needles = tuple(markers) + tuple(Path(n).stem for n in dicoms if any(m in n for m in markers))
    digests = {hashlib.sha256(d).hexdigest() for d in dicoms.values()}
    leaks, outputs, requests = [], [], 0
    for name, data in dicoms.items():
        path = folder / name
        path.write_bytes(data)
        c = client(url, download=True)
        steps = [("/generate", (handle_file(str(path)), False, False)),
                 ("/analyze_upload", ([handle_file(str(path))], False, False, [], 0.6, "inferno", "all")),
                 ("/compare", ("the heart is normal . the lungs are clear .",)),
                 ("/heatmap", ("grp:0", 0.5, "jet")),
                 ("/save_review", ("case", ["other"], "checked the upload")),
                 ("/ablate", (True, False, [], "", 0.6, "inferno", "all"))]
        for api_name, args in steps:
            result = call(c, *args, api_name=api_name, timeout_s=timeout_s)
            requests += 1
            outputs.append((f"{api_name} ({name})", result.message + "\n" + text_of(result.value)))
            for p in _paths_in(result.value):
                outputs.append((f"{api_name} ({name}) file {p.name}", p.read_bytes()))
        path.unlink()
    places = 0
    for where, blob in outputs:
        blob = blob.encode() if isinstance(blob, str) else blob
        places += 1
        leaks += [f"{where}: {m}" for m in _find(blob, needles)]
    places += 1
    leaks += [f"server log: {m}" for m in _find(server.log_text().encode(), needles)]
    kept = []
    for root in server.temp_dirs:
        for p in root.rglob("*"):
            leaks += [f"file name {p}: {m}" for m in needles if m in str(p.relative_to(root))]
            if p.is_file():
                places += 1
                blob = p.read_bytes()
                leaks += [f"file {p}: {m}" for m in _find(blob, needles)]
                if hashlib.sha256(blob).hexdigest() in digests:
                    kept.append(str(p))
    return {"markers": len(needles), "requests": requests, "places_scanned": places, "leaks": leaks,
            "uploads_kept": kept}


# ============================================================================ 4. weights integrity


def unsafe_weight_loads(roots: Iterable[str | os.PathLike] = (REPO / "revtaf", REPO / "app", REPO / "train", REPO / "bench"),
                        ) -> list[str]:
    """Places that could unpickle arbitrary objects: torch.load without weights_only=True, pickle/dill/joblib
    loads, np.load(allow_pickle=True). "file:line call" strings (an AST scan, comments cannot fool it)."""
    found = []
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func)
                kw = {k.arg: k.value for k in node.keywords}
                unsafe = (
                    name.endswith("torch.load")
                    and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True)
                ) or name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load") or (
                    name.endswith("np.load") and isinstance(kw.get("allow_pickle"), ast.Constant)
                    and kw["allow_pickle"].value is True)
                if unsafe:
                    rel = path.relative_to(REPO) if REPO in path.parents else path
                    found.append(f"{rel}:{node.lineno} {ast.unparse(node)[:90]}")
    return found
