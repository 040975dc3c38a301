import pytest
import torch

from revtaf.labels.constants import UNSPECIFIED_POSITION
from revtaf.model.entity import (
    MEDKLIP_CONFIG,
    EntityModel,
    EntityModelConfig,
    EntityOutput,
    entity_loss,
    load_medklip,
    predict_triplets,
    scores,
    to_medklip_state_dict,
)

SMALL = EntityModelConfig(backbone="resnet18", d_model=32, num_layers=2, num_heads=2, dim_feedforward=64, text_dim=24, map_layers=2)


def small_model(seed=0):
    torch.manual_seed(seed)
    return EntityModel(SMALL, torch.randn(75, 24), torch.randn(51, 24))


def test_shapes_and_maps():
    model = small_model().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.exist_logits.shape == (2, 75, 2)
    assert out.position_logits.shape == (2, 75, 51)
    assert out.maps.shape == (2, 75, 14, 14)
    assert out.features.shape == (2, 75, 32)
    assert torch.allclose(out.maps.sum((2, 3)), torch.ones(2, 75), atol=1e-5)
    s = scores(out)
    assert s.shape == (2, 75) and ((s >= 0) & (s <= 1)).all()


def test_loss_backward_reaches_backbone_and_heads():
    model = small_model()
    out = model(torch.randn(2, 3, 224, 224))
    exist = torch.full((2, 75), -1, dtype=torch.int8)
    exist[0, 8], exist[1, 0], exist[1, 10] = 1, 1, 0
    position = torch.full((2, 75), UNSPECIFIED_POSITION)
    position[0, 8] = 5
    loss = entity_loss(out, exist, position)
    assert torch.isfinite(loss)
    loss.backward()
    for p in (model.backbone.body.conv1.weight, model.classifier.weight, model.cl_fc.weight, model.query_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.disease_book.grad is None  # frozen buffer


def test_loss_counts_unmentioned_as_absent_and_positions_only_when_present():
    logits = torch.zeros(1, 75, 2)
    logits[..., 0] = 5.0  # confidently absent everywhere
    pos_logits = torch.zeros(1, 75, 51)
    pos_logits[0, :, 3] = 10.0
    out = EntityOutput(logits, pos_logits, torch.zeros(1, 75, 14, 14), torch.zeros(1, 75, 4))
    unmentioned = torch.full((1, 75), -1)
    absent = torch.zeros((1, 75), dtype=torch.long)
    wrong_positions = torch.full((1, 75), 7)
    assert torch.isclose(entity_loss(out, unmentioned, wrong_positions), entity_loss(out, absent, wrong_positions))
    # existence CE summed over entities; positions of absent entities are ignored
    expected = 75 * torch.nn.functional.softplus(torch.tensor(-5.0))
    assert torch.isclose(entity_loss(out, absent, wrong_positions), expected)
    present = absent.clone()
    present[0, 0] = 1
    right = torch.full((1, 75), 3)
    assert entity_loss(out, present, wrong_positions) > entity_loss(out, present, right) + 5


def test_loss_rejects_bad_targets():
    out = EntityOutput(torch.zeros(1, 75, 2), torch.zeros(1, 75, 51), torch.zeros(1, 75, 1, 1), torch.zeros(1, 75, 4))
    with pytest.raises(ValueError, match=r"\{1, 0, -1\}"):
        entity_loss(out, torch.full((1, 75), 2), torch.zeros(1, 75, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[1,75\]"):
        entity_loss(out, torch.zeros(1, 74), torch.zeros(1, 74, dtype=torch.long))
    with pytest.raises(ValueError, match="positions"):
        entity_loss(out, torch.ones(1, 75), torch.full((1, 75), 51))


def test_bad_books():
    with pytest.raises(ValueError, match="disease_book"):
        EntityModel(SMALL, torch.randn(74, 24), torch.randn(51, 24))
    with pytest.raises(ValueError, match="anatomy_book"):
        EntityModel(SMALL, torch.randn(75, 24), torch.randn(51, 23))


def test_predict_triplets_absent_position_is_configurable():
    logits = torch.zeros(1, 75, 2)
    logits[0, 0, 1] = 3.0  # entity 0 present, others at P = 0.5 (not > 0.5) -> absent
    pos = torch.zeros(1, 75, 51)
    pos[..., 2] = 1.0
    out = EntityOutput(logits, pos, torch.zeros(1, 75, 1, 1), torch.zeros(1, 75, 4))
    prob, exists, position = predict_triplets(out)
    assert exists[0, 0] and not exists[0, 1:].any()
    assert position[0, 0] == 2 and (position[0, 1:] == UNSPECIFIED_POSITION).all()
    assert torch.allclose(prob, scores(out))
    _, _, argmax_everywhere = predict_triplets(out, absent_position=None)
    assert (argmax_everywhere == 2).all()


def test_save_load_round_trip(tmp_path):
    model = small_model().eval()
    model.save(tmp_path / "entity")
    loaded = EntityModel.load(tmp_path / "entity").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.exist_logits, b.exist_logits) and torch.equal(a.maps, b.maps)
    with pytest.raises(FileNotFoundError):
        EntityModel.load(tmp_path / "nothing")


def test_medklip_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    disease_book, anatomy_book = torch.randn(75, 768), torch.randn(51, 768)
    source = EntityModel(MEDKLIP_CONFIG, disease_book, anatomy_book).eval()
    medklip = to_medklip_state_dict(source)
    # the layout MedKLIP's model_MedKLIP.py produces under DataParallel
    for key in (
        "module.res_features.0.weight",
        "module.res_features.1.running_mean",
        "module.res_features.6.5.conv3.weight",
        "module.res_l1.weight",
        "module.res_l2.bias",
        "module.disease_embedding_layer.weight",
        "module.decoder.layers.3.multihead_attn.in_proj_weight",
        "module.decoder.layers.0.self_attn.out_proj.weight",
        "module.decoder.layers.2.norm3.bias",
        "module.decoder.norm.weight",
        "module.classifier.weight",
        "module.cl_fc.weight",
    ):
        assert key in medklip, key
    assert medklip["module.res_l1.weight"].shape == (1024, 1024)
    assert not any("book" in k or "layer4" in k or "res_features.7" in k for k in medklip)
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"model": medklip, "epoch": 3, "config": {"d_model": 256}}, path)

    loaded = load_medklip(path, disease_book, anatomy_book).eval()
    for (k, a), (k2, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(source(x).exist_logits, loaded(x).exist_logits)

    medklip["module.query_embed.weight"] = torch.zeros(75, 256)
    torch.save({"model": medklip}, path)
    with pytest.raises(KeyError, match="query_embed"):
        load_medklip(path, disease_book, anatomy_book)
    with pytest.raises(FileNotFoundError):
        load_medklip(tmp_path / "missing.pth", disease_book, anatomy_book)


def test_image_cache_reproduces_entity_transform(iu_root):
    from revtaf.data import XrayDataset, load_annotation, transforms
    from revtaf_train.components import _to_input, cache_images

    studies = load_annotation(iu_root, "iu")["train"][:2]
    cached = cache_images(studies, iu_root)
    assert cached.dtype == torch.uint8 and cached.shape == (2, 1, 224, 224)
    reference = XrayDataset(studies, iu_root, transforms.entity_transform())[1]["image"]
    assert torch.allclose(_to_input(cached[1:2])[0], reference, atol=1e-6)


def test_train_entity_model_smoke(iu_root, tmp_path):
    import json

    from revtaf.data import load_annotation
    from revtaf.model.text_encoder import TextEncoder
    from revtaf.model.tokenizer import build_tokenizer
    from revtaf_train.components import train_entity_model

    splits = load_annotation(iu_root, "iu")
    train, val = splits["train"][:4], splits["val"][:2]
    torch.manual_seed(0)
    text = TextEncoder.compact(build_tokenizer([s.report for s in train], vocab_size=200), hidden=24, layers=1,
                               heads=2, intermediate=48, max_len=32)
    cfg = EntityModelConfig(d_model=32, num_layers=1, num_heads=2, dim_feedforward=64, map_layers=1)
    model = train_entity_model(train, iu_root, cfg, tmp_path / "em", epochs=1, batch_size=2, lr=1e-3, seed=0,
                               text_encoder=text, val_studies=val)
    log = json.loads((tmp_path / "em" / "train_log.json").read_text())
    assert log["log"][0]["step"] == 2 and log["log"][0]["loss"] > 0 and log["config"]["text_dim"] == 24
    assert not model.training and model.disease_book.shape == (75, 24)
    assert torch.equal(EntityModel.load(tmp_path / "em").classifier.weight, model.classifier.weight)
    with pytest.raises(ValueError, match="training reports only"):
        train_entity_model(val, iu_root, cfg, tmp_path / "bad", epochs=1, batch_size=2, lr=1e-3, seed=0, text_encoder=text)


def test_train_entity_model_resumes_after_a_crash(iu_root, tmp_path, monkeypatch):
    from revtaf.data import load_annotation
    from revtaf.model.text_encoder import TextEncoder
    from revtaf.model.tokenizer import build_tokenizer
    from revtaf_train import components

    train = load_annotation(iu_root, "iu")["train"][:4]
    torch.manual_seed(0)
    text = TextEncoder.compact(build_tokenizer([s.report for s in train], vocab_size=200), hidden=16, layers=1,
                               heads=2, intermediate=32, max_len=32)
    cfg = EntityModelConfig(d_model=16, num_layers=1, num_heads=2, dim_feedforward=32, map_layers=1)
    args = dict(epochs=2, batch_size=2, lr=1e-3, seed=0, text_encoder=text)
    straight = components.train_entity_model(train, iu_root, cfg, tmp_path / "a", **args)

    calls = {"n": 0}
    real_loss = components.entity_loss

    def crash_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # first step of epoch 2
            raise RuntimeError("crash")
        return real_loss(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(components, "entity_loss", crash_in_epoch_2)
        with pytest.raises(RuntimeError, match="crash"):
            components.train_entity_model(train, iu_root, cfg, tmp_path / "b", **args)
    resumed = components.train_entity_model(train, iu_root, cfg, tmp_path / "b", **args)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
