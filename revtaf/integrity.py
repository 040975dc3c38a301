"""SHA-256 manifest of a model directory: written when a model is saved, checked before its weights are read.

A truncated download, a half-finished copy, a flipped byte on disk or a swapped weight file all load "fine"
with safetensors (a byte flipped inside a tensor is just a different number), so the model would silently
be a different one. The manifest names every file with its size and SHA-256; `verify_manifest` refuses the
directory and names each file that is missing, truncated or changed.

Layout of `manifest.json`: {"format": "revtaf-sha256-manifest", "version": 1,
"files": {"model.safetensors": {"size": 123, "sha256": "ab..."}, ...}}. Paths are relative, '/'-separated.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
FORMAT = "revtaf-sha256-manifest"
VERSION = 1
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A model directory does not match its manifest (or has none when one is required).

    `problems` lists (file name, what is wrong) pairs; the message names every one of them.
    """

    def __init__(self, directory: Path, problems: list[tuple[str, str]]):
        self.directory = Path(directory)
        self.problems = problems
        details = "; ".join(f"{name}: {what}" for name, what in problems)
        super().__init__(
            f"model directory {self.directory} failed its integrity check ({details}). "
            "Re-download or re-export the model; do not use these files."
        )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (model weights do not fit comfortably in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, files: Iterable[str] | None = None) -> Path:
    """Hash `files` (relative names; default every regular, non-hidden file directly in `directory`) into
    `directory/manifest.json` and return its path."""
    directory = Path(directory)
    if files is None:
        files = sorted(p.name for p in directory.iterdir()
                       if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    entries = {}
    for name in files:
        _check_name(directory, name)
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"cannot write the manifest: {path} does not exist")
        entries[PurePosixPath(name).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    out = directory / MANIFEST
    out.write_text(json.dumps({"format": FORMAT, "version": VERSION, "files": entries}, indent=2) + "\n")
    return out


def read_manifest(directory: str | os.PathLike) -> dict[str, dict]:
    """The manifest's {name: {"size", "sha256"}}; IntegrityError if it is absent or malformed."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise IntegrityError(directory, [(MANIFEST, "missing, so the model files cannot be checked")])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        ok = data.get("format") == FORMAT and isinstance(files, dict) and all(
            isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
            for e in files.values())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise IntegrityError(directory, [(MANIFEST, "unreadable or not a REVTAF SHA-256 manifest")])
    return files


def verify_manifest(directory: str | os.PathLike, required: Iterable[str] = ()) -> list[str]:
    """Check every file the manifest lists (size, then SHA-256) and that it lists each of `required`.

    Returns the verified names. Raises IntegrityError naming each missing, truncated, resized or changed file.
    Files the manifest does not list (a README, .gitattributes) are ignored.
    """
    directory = Path(directory)
    files = read_manifest(directory)
    problems = [(name, "not covered by the manifest") for name in required if name not in files]
    for name, entry in files.items():
        if not _safe(name):
            problems.append((name, "the manifest names a path outside the model directory"))
            continue
        path = directory / name
        if not path.is_file():
            problems.append((name, "missing"))
            continue
        size = path.stat().st_size
        if size < entry["size"]:
            problems.append((name, f"truncated ({size} of {entry['size']} bytes)"))
        elif size != entry["size"]:
            problems.append((name, f"wrong size ({size} bytes, the manifest says {entry['size']})"))
        elif sha256_file(path) != entry["sha256"].lower():
            problems.append((name, "corrupted or modified (SHA-256 differs from the manifest)"))
    if problems:
        raise IntegrityError(directory, problems)
    return list(files)


def _safe(name: str) -> bool:
    # Lexical check only: Hugging Face snapshots are symlinks into a blob store, so resolved paths leave the folder.
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts and "\\" not in name


def _check_name(directory: Path, name: str) -> None:
    if not _safe(name):
        raise ValueError(f"manifest entries are paths inside {directory}, got {name!r}")
