import pytest
import torch
import torchvision
from safetensors.torch import save_file

from revtaf.model.encoder import VISUAL_ENCODERS, build_visual_encoder


@pytest.mark.parametrize("name,channels", [("resnet18", 512), ("resnet50", 2048)])
def test_shapes_and_pooling(name, channels):
    enc = build_visual_encoder(name).eval()
    with torch.no_grad():
        patches, pooled = enc(torch.randn(2, 3, 224, 224))
    assert enc.out_dim == channels
    assert patches.shape == (2, 49, channels) and pooled.shape == (2, channels)
    assert torch.allclose(pooled, patches.mean(1))


def test_patches_are_row_major():
    enc = build_visual_encoder("resnet18").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fmap = enc.feature_map(x)  # [1,512,7,7]
        patches, _ = enc(x)
    h, w = 2, 5
    assert torch.equal(patches[0, 7 * h + w], fmap[0, :, h, w])


def test_stage3_trunk_is_stride_16():
    enc = build_visual_encoder("resnet50", last_stage=3).eval()
    with torch.no_grad():
        patches, _ = enc(torch.randn(1, 3, 224, 224))
    assert patches.shape == (1, 196, 1024) and not hasattr(enc, "layer4")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_weights_round_trip(tmp_path, suffix):
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / f"resnet18-random{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    enc = build_visual_encoder("resnet18", weights=path).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        _, pooled = enc(x)
        trunk = torch.nn.Sequential(*list(reference.children())[:-2])
        expected = trunk(x).mean((2, 3))
    assert torch.equal(pooled, expected)


def test_bad_inputs(tmp_path):
    assert VISUAL_ENCODERS == {"resnet18", "resnet34", "resnet50", "resnet101"}
    with pytest.raises(ValueError, match="unknown visual encoder"):
        build_visual_encoder("vit_b16")
    with pytest.raises(FileNotFoundError):
        build_visual_encoder("resnet18", weights=tmp_path / "missing.pth")
    wrong = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wrong)
    with pytest.raises((KeyError, RuntimeError)):
        build_visual_encoder("resnet18", weights=wrong)
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        build_visual_encoder("resnet18")(torch.randn(3, 224, 224))
