"""Is the input what the model reads? The view position and an out-of-distribution score, from the pooled
features the visual encoder computes anyway (so the check costs a dot product and a quadratic form).

- View: a logistic regression, frontal (PA/AP) vs lateral, fitted on IU X-Ray's own view labels (training
  images of both views). A DICOM's ViewPosition tag wins over it when the file states one.
- Out of distribution: the Mahalanobis distance of the pooled feature to the training frontal images (mean and
  a shrunk covariance); the threshold is the 99th percentile of the val frontal images, so 99 % of them pass.
  A photograph, a document scan or a blank image lands far from every chest radiograph the model learned from.

Not in the paper (ours); fitted after training by `revtaf fit-input-check` and stored beside the weights
(`input_check.safetensors`, covered by the manifest). A model directory without it has no check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

INPUT_CHECK_FILE = "input_check.safetensors"
VIEWS = ("frontal", "lateral")
# DICOM ViewPosition values (PS3.16 CID 4012 and common exports) -> our two classes
_DICOM_VIEWS = {"PA": "frontal", "AP": "frontal", "AP AXIAL": "frontal", "LL": "lateral", "RL": "lateral",
                "LATERAL": "lateral", "LAT": "lateral", "LLD": "lateral", "RLD": "lateral"}
PASS_QUANTILE = 0.99


def view_from_dicom(view_position: str | None) -> str | None:
    """The view class a DICOM ViewPosition names, or None when absent or not one we know."""
    return _DICOM_VIEWS.get((view_position or "").strip().upper())


def assign_views(view_positions: list[str | None], p_lateral: list[float] | None = None) -> list[tuple[str, str]]:
    """A study's films (one or two) -> (view, source) of each: the view the model reads it as and what decided it.

    One film is the frontal the model reads ("order"; its input check says when it looks lateral). Of two, the
    files' DICOM ViewPosition decides when one of them names a view ("file"), else the view classifier's
    P(lateral) (`p_lateral`, "model": the likelier lateral is the lateral), else their order, frontal first.
    Two files that both name the same view are refused (ValueError): a study is a frontal and a lateral."""
    if not 1 <= len(view_positions) <= 2:
        raise ValueError(f"a study is one or two films (frontal, and optionally lateral), got {len(view_positions)}")
    if len(view_positions) == 1:
        return [("frontal", "order")]
    stated = [view_from_dicom(v) for v in view_positions]
    if stated[0] and stated[0] == stated[1]:
        raise ValueError(f"both files say they are {stated[0]} views (DICOM ViewPosition); a study is one frontal "
                         "and one lateral")
    if any(stated):
        known = 0 if stated[0] else 1
        lateral = known if stated[known] == "lateral" else 1 - known
        source = "file"
    elif p_lateral is not None:
        lateral, source = int(p_lateral[1] > p_lateral[0]), "model"
    else:
        lateral, source = 1, "order"
    return [("lateral" if i == lateral else "frontal", source) for i in range(2)]


@dataclass
class InputCheckResult:
    view: str  # "frontal" | "lateral"
    view_source: str  # "file" (DICOM ViewPosition) | "model" (the classifier)
    p_lateral: float
    ood_score: float
    in_distribution: bool


class InputCheck(nn.Module):
    """pooled [B,D] -> P(lateral) [B] and Mahalanobis distance [B] to the training frontal images."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))  # standardisation of the classifier's input
        self.register_buffer("feature_std", torch.ones(dim))
        self.register_buffer("view_weight", torch.zeros(dim))
        self.register_buffer("view_bias", torch.zeros(()))
        self.register_buffer("ood_mean", torch.zeros(dim))
        self.register_buffer("ood_precision", torch.eye(dim))
        self.register_buffer("ood_threshold", torch.tensor(float("inf")))

    @property
    def dim(self) -> int:
        return self.feature_mean.numel()

    def p_lateral(self, pooled: torch.Tensor) -> torch.Tensor:
        x = (pooled.float() - self.feature_mean) / self.feature_std
        return torch.sigmoid(x @ self.view_weight + self.view_bias)

    def ood_score(self, pooled: torch.Tensor) -> torch.Tensor:
        d = pooled.float() - self.ood_mean
        return ((d @ self.ood_precision) * d).sum(-1).clamp_min(0).sqrt()

    def check(self, pooled: torch.Tensor, view_positions: list[str | None] | None = None) -> list[InputCheckResult]:
        """One result per row; `view_positions[b]` = the file's DICOM ViewPosition, which wins when it names a view."""
        p, score = self.p_lateral(pooled).tolist(), self.ood_score(pooled).tolist()
        out = []
        for b in range(len(p)):
            stated = view_from_dicom(view_positions[b]) if view_positions else None
            view, source = (stated, "file") if stated else (VIEWS[int(p[b] > 0.5)], "model")
            out.append(InputCheckResult(view, source, p[b], score[b], bool(score[b] <= float(self.ood_threshold))))
        return out

    @classmethod
    def fit(cls, frontal: torch.Tensor, lateral: torch.Tensor, val_frontal: torch.Tensor,
            shrinkage: float = 0.1, l2: float = 1e-2, steps: int = 200) -> InputCheck:
        """frontal [n,D], lateral [m,D] (training images), val_frontal [k,D] (sets the threshold)."""
        if frontal.ndim != 2 or lateral.shape[1:] != frontal.shape[1:] or val_frontal.shape[1:] != frontal.shape[1:]:
            raise ValueError(f"need feature matrices [n,D]; got {tuple(frontal.shape)}, {tuple(lateral.shape)}, "
                             f"{tuple(val_frontal.shape)}")
        check = cls(frontal.shape[1])
        x = torch.cat([frontal, lateral]).double()
        y = torch.cat([torch.zeros(len(frontal)), torch.ones(len(lateral))]).double()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w @ w)
            loss.backward()
            return loss

        optimizer.step(closure)
        f = frontal.double()
        mu = f.mean(0)
        cov = torch.cov((f - mu).T)
        cov = (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(len(mu), dtype=cov.dtype)
        precision = torch.linalg.inv(cov)
        check.feature_mean.copy_(mean.float())
        check.feature_std.copy_(std.float())
        check.view_weight.copy_(w.detach().float())
        check.view_bias.copy_(b.detach().float())
        check.ood_mean.copy_(mu.float())
        check.ood_precision.copy_(precision.float())
        check.ood_threshold.copy_(torch.quantile(check.ood_score(val_frontal), PASS_QUANTILE))
        return check

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / INPUT_CHECK_FILE
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> InputCheck | None:
        """The check saved beside a model, or None when the directory has none."""
        path = Path(directory) / INPUT_CHECK_FILE
        if not path.is_file():
            return None
        state = load_file(str(path))
        check = cls(state["feature_mean"].numel())
        check.load_state_dict(state)
        return check
