"""Check 4, weights integrity: corrupted, truncated and missing files of a model directory are refused by name."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _variant(source: Path, target: Path, change: Callable[[Path], None]) -> Path:
    """A copy of a model directory (hard links where possible) with `change` applied to the copy."""
    if target.exists():
        shutil.rmtree(target)

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
    change(target)
    return target


def _rewrite(path: Path, edit: Callable[[bytes], bytes]) -> None:
    data = path.read_bytes()
    path.unlink()  # break the hard link before writing
    path.write_bytes(edit(data))


def integrity_checks(model_dir: str | os.PathLike, workdir: str | os.PathLike) -> list[dict]:
    """Load the intact model and damaged copies of it with REVTAF.from_pretrained(require_manifest=True),
    as the demo loads its model.

    Each check: {"check", "passed", "detail"}. Damaged copies must be refused with an IntegrityError that
    names the damaged file; the intact one must load.
    """
    from revtaf.integrity import IntegrityError, MANIFEST
    from revtaf.model.persistence import WEIGHTS_FILE
    from revtaf.model.revtaf import REVTAF

    source, root = Path(model_dir), Path(workdir)
    root.mkdir(parents=True, exist_ok=True)

    def flip(data: bytes) -> bytes:
        mid = len(data) // 2  # inside the tensor data, past the header: safetensors itself would load it
        return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]

    cases = [
        ("intact model loads", lambda d: None, None),
        ("one bit flipped in the weights", lambda d: _rewrite(d / WEIGHTS_FILE, flip), WEIGHTS_FILE),
        ("weights truncated to half", lambda d: _rewrite(d / WEIGHTS_FILE, lambda b: b[: len(b) // 2]), WEIGHTS_FILE),
        ("weights file missing", lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE),
        ("config grown by one byte", lambda d: _rewrite(d / "config.json", lambda b: b + b" "), "config.json"),
        ("bank ids edited, same size", lambda d: _rewrite(d / "bank.json", lambda b: b.replace(b"ids", b"IDS", 1)),
         "bank.json"),
        ("manifest missing", lambda d: (d / MANIFEST).unlink(), MANIFEST),
    ]
    results = []
    for label, change, culprit in cases:
        target = _variant(source, root / "variant", change)
        try:
            REVTAF.from_pretrained(target, require_manifest=True)
            passed, detail = culprit is None, "loaded"
        except IntegrityError as exc:
            passed = culprit is not None and culprit in str(exc)
            detail = str(exc)
        except Exception as exc:  # a refusal that is not the clear integrity error is a failed check
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"check": label, "passed": passed, "detail": detail})
    shutil.rmtree(root / "variant", ignore_errors=True)
    return results


# ============================================================================ the bench
