"""Image downstream tasks from RGB only: classification, semantic segmentation, depth.

Metrics (``pred``/``target`` tensors of any matching shape; classification accuracy is
:func:`deep.apps.evaluation.accuracy`):

- ``mean_iou``: ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` from the confusion matrix over
  labelled pixels (``target >= 0``), averaged over the classes with ``TP + FP + FN > 0``.
- ``depth_metrics``: over valid pixels (``target > 0``), ``rmse = sqrt(mean (d - d*)^2)``
  in metres and ``delta1 = mean(max(d/d*, d*/d) < 1.25)``.

Training (all from an :class:`~deep.apps.mae.model.RGBBackbone`, every patch visible):

- ``linear_probe``: the backbone is frozen; features ``[global token, mean patch token]``
  are standardised and a multinomial logistic regression with L2 penalty is fitted by
  L-BFGS.
- ``finetune``: the backbone and a new head are trained together with AdamW and a cosine
  learning rate: a linear classifier on the features; for segmentation a linear map from
  each patch token to ``p^2 * C`` logits; for depth a linear map to ``p^2`` values ``o``,
  depth ``softplus(o) > 0`` in metres, trained with squared error in metres (the RMSE it
  is scored by). Biases start at the training prior (log class frequencies, mean depth).
  With ``freeze_backbone`` only the head is trained, on cached tokens (a linear probe).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deep.optim import lr_factor

from ..evaluation import accuracy
from ..finetune import IMAGE_FINETUNE, FinetuneConfig
from .model import RGBBackbone, unpatchify

__all__ = [
    "confusion_matrix",
    "depth_metrics",
    "evaluate",
    "extract_features",
    "finetune",
    "mean_iou",
]

Kind = Literal["classification", "segmentation", "depth"]


# --- metrics -----------------------------------------------------------------------------
def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]`` = pixels of true class ``i`` predicted ``j``; ``target < 0`` is ignored."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    keep = target >= 0
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (
        int(t.max()) >= num_classes or int(p.min()) < 0 or int(p.max()) >= num_classes
    ):
        raise ValueError(f"class ids must be in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def mean_iou(pred: Tensor, target: Tensor, num_classes: int) -> tuple[float, list[float]]:
    """``(mIoU, per-class IoU)``; a class absent from both gets NaN and is not averaged."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    present = union > 0
    if not bool(present.any()):
        raise ValueError("no labelled pixel: mIoU is undefined")
    return float(iou[present].mean()), [float(x) for x in iou]


def depth_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    """``{"rmse": metres, "delta1": fraction with max(d/d*, d*/d) < 1.25}`` over ``target > 0``."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    valid = target > 0
    if not bool(valid.any()):
        raise ValueError("no valid (> 0) target depth")
    d, g = pred[valid].double(), target[valid].double()
    if bool((d <= 0).any()):
        raise ValueError("predicted depths must be > 0 where the target is valid")
    ratio = torch.maximum(d / g, g / d)
    return {
        "rmse": float((d - g).square().mean().sqrt()),
        "delta1": float((ratio < 1.25).double().mean()),
    }


# --- features ----------------------------------------------------------------------------
def _pool(tokens: Tensor) -> Tensor:
    """``[global token, mean of patch tokens]``: ``(B, 1+P, D) -> (B, 2D)``."""
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1)


@torch.no_grad()
def extract_features(
    backbone: RGBBackbone, rgb: np.ndarray | Tensor, batch_size: int = 256
) -> Tensor:
    """Pooled features ``(N, 2D)`` of a frozen backbone (eval mode, float32, on CPU)."""
    device = next(backbone.parameters()).device
    backbone.eval()
    x = torch.as_tensor(rgb)
    out = [
        _pool(backbone(x[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


# --- fine-tuning -------------------------------------------------------------------------
class _Model(nn.Module):
    """Backbone + a linear head for one task kind."""

    def __init__(self, backbone: RGBBackbone, kind: Kind, outputs: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.kind = kind
        d, p = backbone.config.dim, backbone.config.patch_size
        self.channels = outputs if kind == "segmentation" else 1
        head_in = 2 * d if kind == "classification" else d
        head_out = outputs if kind == "classification" else self.channels * p * p
        self.head = nn.Linear(head_in, head_out)
        nn.init.zeros_(self.head.bias)
        nn.init.xavier_uniform_(self.head.weight)

    def init_bias(self, target: Tensor) -> None:
        """Start from the training prior: mean log depth, or log class frequencies."""
        with torch.no_grad():
            if self.kind == "depth":
                valid = target > 0
                if bool(valid.any()):
                    mean = float(target[valid].mean())  # softplus^-1(mean), stable form
                    self.head.bias.fill_(mean + math.log(-math.expm1(-mean)))
                return
            ids = target[target >= 0].long()
            freq = torch.bincount(
                ids.reshape(-1),
                minlength=self.channels if self.kind == "segmentation" else self.head.out_features,
            )
            log_prior = (freq.double() + 1.0).log() - math.log(float(freq.sum()) + len(freq))
            if self.kind == "classification":
                self.head.bias.copy_(log_prior.float())
            else:
                p2 = self.head.out_features // self.channels
                self.head.bias.copy_(log_prior.float().repeat(p2))

    def forward(self, rgb: Tensor) -> Tensor:
        return self.from_tokens(self.backbone(rgb))

    def from_tokens(self, tokens: Tensor) -> Tensor:
        if self.kind == "classification":
            return self.head(_pool(tokens))
        out = self.head(tokens[:, 1:])
        return unpatchify(out, self.backbone.config.patch_size, self.channels)


def _loss(kind: Kind, out: Tensor, target: Tensor) -> Tensor:
    out = out.float()
    if kind == "depth":
        valid = target > 0
        if not bool(valid.any()):
            return out.sum() * 0.0
        return (F.softplus(out[valid]) - target[valid]).square().mean()
    return F.cross_entropy(out, target, ignore_index=-1)


def finetune(
    backbone: RGBBackbone,
    kind: Kind,
    train_rgb: np.ndarray,
    train_target: np.ndarray,
    test_rgb: np.ndarray,
    test_target: np.ndarray,
    outputs: int,
    config: FinetuneConfig = IMAGE_FINETUNE,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune a copy of ``backbone`` with a new head; return the test metrics.

    ``kind``: ``"classification"`` (targets ``(N,)`` labels; ``outputs`` classes; gives
    ``acc``), ``"segmentation"`` (targets ``(N, H, W)`` ids, ``-1`` unlabelled; gives
    ``miou``) or ``"depth"`` (targets ``(N, 1, H, W)`` metres, ``0`` missing; gives ``rmse``
    and ``delta1``). The backbone given is not modified.
    """
    if kind not in ("classification", "segmentation", "depth"):
        raise ValueError(f"kind must be 'classification', 'segmentation' or 'depth', got {kind!r}")
    if len(train_rgb) != len(train_target) or len(test_rgb) != len(test_target):
        raise ValueError("each rgb array needs one target per image")
    device = next(backbone.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _Model(copy.deepcopy(backbone), kind, outputs).to(device)
    y_all = torch.as_tensor(train_target)
    model.init_bias(y_all)
    frozen = config.freeze_backbone
    if frozen:
        model.backbone.requires_grad_(False)
        x_all = _tokens(model.backbone, train_rgb, config.eval_batch_size)
        params = list(model.head.parameters())
    else:
        x_all = torch.as_tensor(train_rgb)
        params = list(model.parameters())
    steps = config.total_steps(len(train_rgb))
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_ratio * steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return lr_factor(
            step, steps=steps, warmup_steps=warmup, lr_schedule="cosine", min_lr_ratio=0.0
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(seed)
    n = len(x_all)
    bs = min(config.batch_size, n)
    order = rng.permutation(n)
    cursor = 0
    model.train(not frozen)
    for _ in range(steps):
        if cursor + bs > n:
            order, cursor = rng.permutation(n), 0
        idx = torch.from_numpy(order[cursor : cursor + bs])
        cursor += bs
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        loss = _loss(kind, model.from_tokens(x) if frozen else model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return evaluate(model, kind, test_rgb, test_target, outputs, config.eval_batch_size)


@torch.no_grad()
def _tokens(backbone: nn.Module, rgb: np.ndarray, batch_size: int) -> Tensor:
    """Backbone tokens of every image (eval mode), kept on the backbone's device."""
    device = next(backbone.parameters()).device
    backbone.eval()
    x = torch.as_tensor(rgb)
    return torch.cat(
        [backbone(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    kind: Kind,
    rgb: np.ndarray,
    target: np.ndarray,
    outputs: int,
    batch_size: int = 256,
) -> dict[str, float]:
    """Test metrics of a fine-tuned model (see :func:`finetune`)."""
    device = next(model.parameters()).device
    model.eval()
    x_all = torch.as_tensor(rgb)
    preds = []
    for i in range(0, len(x_all), batch_size):
        out = model(x_all[i : i + batch_size].to(device)).float().cpu()
        preds.append(out.argmax(dim=1) if kind != "depth" else F.softplus(out))
    pred = torch.cat(preds)
    y = torch.as_tensor(target)
    if kind == "classification":
        return {"acc": accuracy(pred, y.long())}
    if kind == "segmentation":
        miou, _ = mean_iou(pred, y.long(), outputs)
        return {"miou": miou}
    return depth_metrics(pred, y.float())
