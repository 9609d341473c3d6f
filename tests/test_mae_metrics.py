"""Downstream metrics against hand-computed values; normalised scores; fine-tuning learns."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from deep.apps.evaluation import accuracy
from deep.apps.finetune import IMAGE_FINETUNE, FinetuneConfig
from deep.apps.mae import downstream as ds
from deep.apps.mae.model import MAEConfig, MultiModalMAE
from deep.apps.mae.pipeline import normalised_scores
from deep.diagnostics import linear_probe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_accuracy():
    assert accuracy(torch.tensor([1, 2, 3, 0]), torch.tensor([1, 2, 0, 0])) == 0.75
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.tensor([1]), torch.tensor([1, 2]))


def test_confusion_matrix_and_miou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, -1, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ds.confusion_matrix(pred, target, 3)
    # rows = truth, cols = prediction; the -1 pixel is ignored
    np.testing.assert_array_equal(cm.numpy(), [[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    # IoU_0 = 1/(1+1+1) ; IoU_1 = 3/(3+1+0) ; IoU_2 = 1/(1+0+1)
    miou, per_class = ds.mean_iou(pred, target, 3)
    expected = [1 / 3, 3 / 4, 1 / 2]
    np.testing.assert_allclose(per_class, expected)
    assert miou == pytest.approx(np.mean(expected))


def test_miou_skips_absent_classes():
    target = torch.tensor([0, 0, 1])
    pred = torch.tensor([0, 0, 1])
    miou, per_class = ds.mean_iou(pred, target, 4)
    assert miou == 1.0 and math.isnan(per_class[2]) and math.isnan(per_class[3])
    with pytest.raises(ValueError, match="class ids"):
        ds.mean_iou(torch.tensor([5, 0, 1]), target, 4)
    with pytest.raises(ValueError, match="no labelled"):
        ds.mean_iou(pred, torch.tensor([-1, -1, -1]), 4)


def test_depth_metrics_by_hand():
    target = torch.tensor([1.0, 2.0, 4.0, 0.0])  # the 0 is missing and ignored
    pred = torch.tensor([1.2, 3.0, 4.0, 7.0])
    m = ds.depth_metrics(pred, target)
    assert m["rmse"] == pytest.approx(math.sqrt((0.2**2 + 1.0**2 + 0.0) / 3))
    # ratios 1.2 (<1.25), 1.5 (no), 1.0 (yes)
    assert m["delta1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="> 0"):
        ds.depth_metrics(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="no valid"):
        ds.depth_metrics(torch.tensor([1.0]), torch.tensor([0.0]))


def test_normalised_scores_by_hand():
    def row(acc, ft, miou, rmse):
        return {
            "cls_linear_acc": acc,
            "cls_finetune_acc": ft,
            "segmentation_miou": miou,
            "depth_rmse": rmse,
            "depth_delta1": 0.5,
        }

    metrics = {
        "scratch": [row(0.5, 0.6, 0.4, 2.0), row(0.7, 0.6, 0.6, 1.0)],
        "minimax": [row(0.8, 0.8, 0.7, 0.75), row(0.6, 0.6, 0.5, 1.5)],
    }
    scores, ebar = normalised_scores(metrics)
    assert ebar == pytest.approx(
        {"cls_linear": 0.4, "cls_finetune": 0.4, "segmentation": 0.5, "depth": 1.5}
    )
    assert scores["minimax"]["cls_linear"] == pytest.approx([1 - 0.2 / 0.4, 1 - 0.4 / 0.4])
    assert scores["minimax"]["depth"] == pytest.approx([0.5, 0.0])
    assert np.mean(scores["scratch"]["segmentation"]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="scratch"):
        normalised_scores({"minimax": metrics["minimax"]})
    # a task the baseline already solves is left out (not divided by zero)
    perfect = {k: [dict(r, cls_linear_acc=1.0) for r in v] for k, v in metrics.items()}
    scores, ebar = normalised_scores(perfect)
    assert ebar["cls_linear"] == 0.0 and "cls_linear" not in scores["minimax"]
    assert set(scores["minimax"]) == {"cls_finetune", "segmentation", "depth"}


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    probe = linear_probe(x[:100], y[:100], x[100:], y[100:], num_labels=2, l2=1e-2, steps=200)
    assert accuracy(probe.predictions, y[100:]) >= 0.95


@pytest.fixture(scope="module")
def tiny():
    from deep.apps.mae.scenes import SceneConfig, generate_scenes

    scenes = generate_scenes(96, SceneConfig(size=16), seed=0)
    torch.manual_seed(0)
    model = MultiModalMAE(MAEConfig(image_size=16, patch_size=4, dim=32, depth=1, heads=2))
    return scenes, model.rgb_backbone()


@pytest.mark.parametrize("frozen", [False, True])
def test_finetune_depth_beats_constant(tiny, frozen):
    """Even a random encoder, trained on depth, beats the best constant (the mean depth,
    where the head starts) on the training scenes themselves: the loop does optimise."""
    scenes, backbone = tiny
    cfg = replace(IMAGE_FINETUNE, steps=60, batch_size=32, lr=3e-3, freeze_backbone=frozen)
    m = ds.finetune(
        backbone, "depth", scenes.rgb, scenes.depth, scenes.rgb, scenes.depth, 1, cfg, seed=0
    )
    d = torch.from_numpy(scenes.depth)
    const = torch.full_like(d, float(d.mean()))
    assert m["rmse"] < ds.depth_metrics(const, d)["rmse"]
    assert 0.0 <= m["delta1"] <= 1.0


def test_finetune_does_not_touch_the_backbone(tiny):
    scenes, backbone = tiny
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = replace(IMAGE_FINETUNE, steps=3, batch_size=16)
    out = ds.finetune(
        backbone, "segmentation", scenes.rgb, scenes.semantic, scenes.rgb, scenes.semantic, 6,
        cfg,
    )  # fmt: skip
    assert 0.0 <= out["miou"] <= 1.0
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_finetune_bad_arguments(tiny):
    scenes, backbone = tiny
    cfg = replace(IMAGE_FINETUNE, steps=1)
    with pytest.raises(ValueError, match="kind"):
        ds.finetune(backbone, "boxes", scenes.rgb, scenes.label, scenes.rgb, scenes.label, 4, cfg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one target"):
        ds.finetune(
            backbone, "classification", scenes.rgb, scenes.label[:3], scenes.rgb, scenes.label,
            4, cfg,
        )  # fmt: skip
    with pytest.raises(ValueError, match="steps"):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        FinetuneConfig(lr=-1.0)
