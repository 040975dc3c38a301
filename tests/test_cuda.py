"""The CUDA path: run by scripts/gpu_check.sh on a GPU machine (`pytest -m cuda`), skipped everywhere else."""

from __future__ import annotations

import pytest
import torch

from revtaf.data import image_file, load_annotation
from revtaf.data.imageio import read_image
from revtaf.model.revtaf import REVTAF
from revtaf.paths import BUNDLED_MODEL

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_training_steps_run_under_bf16_autocast_on_the_gpu(iu_root):
    from revtaf_train.speed import train_speed

    result = train_speed("cpu", iu_root, device="cuda", batch_size=4, max_steps=3, num_workers=0, print_line=False)
    assert result["amp"] in ("bfloat16", "float16") and result["steps"] == 3  # a non-finite loss would raise
    assert result["peak_memory_mb"] > 0 and result["images_per_s"] > 0


def test_the_gpu_writes_the_cpu_report(iu_root):
    studies = load_annotation(iu_root, "iu")["test"][:3]
    images = [read_image(image_file(iu_root, s)) for s in studies]
    model = REVTAF.from_pretrained(BUNDLED_MODEL)
    on_cpu = model.predict_batch(images)
    on_gpu = model.to("cuda").predict_batch(images)
    assert [p.report for p in on_gpu] == [p.report for p in on_cpu]
    assert [d.state for p in on_gpu for d in p.diseases] == [d.state for p in on_cpu for d in p.diseases]
    for a, b in zip(on_gpu, on_cpu):
        assert abs(a.lrp_maps - b.lrp_maps).max() < 1e-3
