"""The multi-modal MAE experiment end to end, shared by ``benchmarks`` and ``gpu/``.

For every seed ``s`` and pre-training method (``minimax``: ``softmax(temperature)`` weights
over the three modality tasks; ``average``: ``uniform()`` weights), a
:class:`~deep.apps.mae.model.MultiModalMAE` initialised from seed ``s`` (the same initial
weights for both methods) is pre-trained with ``deep.pretrain`` on the same batches and
masks; then its RGB encoder is evaluated on four downstream tasks from RGB only:
``cls_linear`` (linear-probe accuracy), ``cls_finetune`` (fine-tuned accuracy),
``segmentation`` (mIoU) and ``depth`` (RMSE in metres; delta < 1.25 is reported too),
fine-tuned (``dense_finetune=True``) or as linear probes of the frozen patch tokens (the
small CPU presets, where a few hundred fine-tuning steps move a ViT too little to tell
encoders apart). A ``scratch`` row (the same encoder at its random initialisation) is
the baseline.

Normalisation (so that tasks are comparable). Each task has an error ``e``: ``1 - acc``,
``1 - mIoU`` or the depth RMSE. With ``ebar_t`` the from-scratch error of task ``t``
averaged over seeds, the normalised score is the *relative error reduction*

    score_t = 1 - e_t / ebar_t,

0 for the from-scratch model on average, 1 for a perfect model, negative where
pre-training hurt. The worst case is ``min_t score_t`` for each seed (``deep.apps.evaluation``).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

import deep
import minimax_core as mc
from deep.diagnostics import linear_probe

from ..evaluation import accuracy
from ..finetune import IMAGE_FINETUNE, FinetuneConfig
from .downstream import extract_features, finetune
from .masking import random_mask
from .model import MODALITIES, MAEConfig, MultiModalMAE, Normalisation, unpatchify
from .scenes import SceneConfig, Scenes, generate_scenes
from .tasks import MAEBatch, SceneBatches, modality_task_loss, per_patch_losses

__all__ = [
    "DOWNSTREAM_TASKS",
    "ClassificationData",
    "PipelineConfig",
    "PipelineResult",
    "normalised_scores",
    "reconstruct",
    "run_pipeline",
    "split_scenes",
]

DOWNSTREAM_TASKS: tuple[str, ...] = ("cls_linear", "cls_finetune", "segmentation", "depth")
# task -> (raw metric, error from the metric)
_ERROR: dict[str, tuple[str, Callable[[float], float]]] = {
    "cls_linear": ("acc", lambda a: 1.0 - a),
    "cls_finetune": ("acc", lambda a: 1.0 - a),
    "segmentation": ("miou", lambda m: 1.0 - m),
    "depth": ("rmse", lambda r: r),
}


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that sets a run; ``asdict`` of it goes into the JSON."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    patch_size: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 1
    num_pretrain: int = 2048
    num_train: int = 512
    num_test: int = 512
    data_seed: int = 12345
    pretrain_steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 20
    mask_ratio: float = 0.75
    mask_alpha: float | None = 1.0
    temperature: float = 0.5
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune: FinetuneConfig = IMAGE_FINETUNE
    dense_finetune: bool = True
    dense_probe_steps: int = 300
    probe_l2: float = 1e-3
    device: str | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("num_pretrain", "num_train", "num_test", "pretrain_steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.batch_size > self.num_pretrain:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed num_pretrain ({self.num_pretrain})"
            )
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds!r}")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    def model_config(self, num_classes: int, norm: Normalisation) -> MAEConfig:
        return MAEConfig(
            image_size=self.scene.size,
            patch_size=self.patch_size,
            num_classes=num_classes,
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            decoder_dim=self.decoder_dim,
            decoder_depth=self.decoder_depth,
            norm=norm,
        )

    def methods(self) -> dict[str, mc.weights.WeightRule]:
        """Pre-training methods: name -> weight rule."""
        return {
            "minimax": mc.weights.softmax(self.temperature),
            "average": mc.weights.uniform(),
        }


@dataclass(frozen=True)
class ClassificationData:
    """Images and labels for the classification tasks (e.g. from ``read_image_folder``)."""

    train_rgb: np.ndarray
    train_label: np.ndarray
    test_rgb: np.ndarray
    test_label: np.ndarray
    label_names: tuple[str, ...]


@dataclass(frozen=True)
class PipelineResult:
    """``metrics[method][seed]`` raw downstream metrics; ``scores[method][task]`` normalised
    per-seed scores; ``histories[method][seed]`` pre-training logs (step, loss, per-task
    losses, weights); ``heldout[method][seed]`` per-modality loss on held-out scenes;
    ``scratch_error[task]`` the normalisers ``ebar_t``; ``seconds`` wall time per phase."""

    config: PipelineConfig
    metrics: dict[str, list[dict[str, float]]]
    scores: dict[str, dict[str, list[float]]]
    histories: dict[str, list[dict[str, np.ndarray]]]
    heldout: dict[str, list[list[float]]]
    scratch_error: dict[str, float]
    seconds: dict[str, float]
    reconstructions: dict[str, dict[str, np.ndarray]]
    class_names: tuple[str, ...]
    label_names: tuple[str, ...]


def split_scenes(scenes: Scenes, sizes: tuple[int, int, int], seed: int) -> tuple[Scenes, ...]:
    """A seeded random split of ``scenes`` into parts of the given sizes (pre-train,
    downstream train, test); raises ValueError if there are too few scenes."""
    if sum(sizes) > len(scenes):
        raise ValueError(f"need {sum(sizes)} scenes for the split {sizes}, have {len(scenes)}")
    order = np.random.default_rng(seed).permutation(len(scenes))
    bounds = np.cumsum((0, *sizes))
    return tuple(scenes.subset(np.sort(order[a:b])) for a, b in itertools.pairwise(bounds))


def normalised_scores(
    metrics: dict[str, list[dict[str, float]]], baseline: str = "scratch"
) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """``score_t = 1 - e_t / ebar_t`` per method, task and seed; and the ``ebar_t``.

    A task whose baseline error is 0 (already perfect from scratch) cannot be normalised
    and tells the methods apart only by a loss: it is left out of ``scores`` (its ``ebar``
    is reported as 0); if every task is, ValueError.
    """
    if baseline not in metrics:
        raise ValueError(f"metrics has no {baseline!r} row to normalise by")
    ebar: dict[str, float] = {}
    for task, (key, err) in _ERROR.items():
        ebar[task] = float(np.mean([err(m[f"{task}_{key}"]) for m in metrics[baseline]]))
    kept = {t: v for t, v in _ERROR.items() if ebar[t] > 0}
    if not kept:
        raise ValueError(f"the {baseline} error is 0 on every task: nothing to normalise")
    scores = {
        method: {
            task: [1.0 - err(m[f"{task}_{key}"]) / ebar[task] for m in rows]
            for task, (key, err) in kept.items()
        }
        for method, rows in metrics.items()
    }
    return scores, ebar


@torch.no_grad()
def heldout_losses(model: MultiModalMAE, batch: MAEBatch) -> list[float]:
    """Mean per-modality reconstruction loss on a fixed held-out batch (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    b = batch.to(device)
    values, ids = per_patch_losses(model(*b))
    losses, _ = deep.task_means(values, ids, len(MODALITIES))
    return [float(x) for x in losses.cpu()]


@torch.no_grad()
def reconstruct(model: MultiModalMAE, batch: MAEBatch) -> dict[str, np.ndarray]:
    """Images for a reconstruction grid: per modality the masked input (hidden patches
    NaN; semantic -2) and the reconstruction (prediction where hidden, input where
    visible), in raw units (RGB ``[0, 1]``, depth metres, semantic ids)."""
    model.eval()
    device = next(model.parameters()).device
    b = batch.to(device)
    cfg = model.config
    out = model(*b)
    p, n = cfg.patch_size, cfg.num_patches
    result: dict[str, np.ndarray] = {}
    for i, m in enumerate(MODALITIES):
        hidden = b.mask[:, i * n : (i + 1) * n, None]
        pred = out.predictions[m].float()
        if m == "semantic":
            logits = pred.reshape(pred.shape[0], n, p * p, cfg.num_classes)
            ids = logits.argmax(-1).float()
            truth = out.targets[m].float()
            rec = torch.where(hidden, ids, truth)
            shown = torch.where(hidden, torch.full_like(truth, -2.0), truth)
            result[f"{m}_input"] = unpatchify(shown, p, 1)[:, 0].cpu().numpy()
            result[f"{m}_recon"] = unpatchify(rec, p, 1)[:, 0].cpu().numpy()
            result[f"{m}_truth"] = b.semantic.float().cpu().numpy()
            continue
        truth = out.targets[m].float()
        rec = torch.where(hidden, pred, truth)
        shown = torch.where(hidden, torch.full_like(truth, math.nan), truth)
        result[f"{m}_input"] = _raw_image(m, shown, cfg).cpu().numpy()
        result[f"{m}_recon"] = _raw_image(m, rec, cfg).cpu().numpy()
        result[f"{m}_truth"] = (b.rgb if m == "rgb" else b.depth).cpu().numpy()
    return result


def _raw_image(modality: str, patches: torch.Tensor, cfg: MAEConfig) -> torch.Tensor:
    """Standardised patches ``(B, P, p*p*C)`` back to an image in raw units."""
    n = cfg.norm
    if modality == "rgb":
        img = unpatchify(patches, cfg.patch_size, 3)
        mean = img.new_tensor(n.rgb_mean).reshape(1, 3, 1, 1)
        std = img.new_tensor(n.rgb_std).reshape(1, 3, 1, 1)
        return (img * std + mean).clamp(0, 1)
    return unpatchify(patches, cfg.patch_size, 1) * n.depth_std + n.depth_mean


def _fixed_batch(scenes: Scenes, count: int, cfg: PipelineConfig, seed: int) -> MAEBatch:
    count = min(count, len(scenes))
    tokens = len(MODALITIES) * (cfg.scene.size // cfg.patch_size) ** 2
    mask = random_mask(count, tokens, cfg.mask_ratio, np.random.default_rng(seed))
    return MAEBatch.from_arrays(
        scenes.rgb[:count], scenes.depth[:count], scenes.semantic[:count], mask
    )


def _downstream(
    model: MultiModalMAE,
    train: Scenes,
    test: Scenes,
    cls: ClassificationData,
    cfg: PipelineConfig,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    backbone = model.rgb_backbone().to(device)
    n_labels = len(cls.label_names)
    fa = extract_features(backbone, cls.train_rgb)
    fb = extract_features(backbone, cls.test_rgb)
    out = {
        "cls_linear_acc": accuracy(
            linear_probe(
                fa,
                cls.train_label,
                fb,
                cls.test_label,
                num_labels=n_labels,
                l2=cfg.probe_l2,
                steps=200,
            ).predictions,
            cls.test_label,
        )
    }
    ft = cfg.finetune
    res = finetune(
        backbone, "classification", cls.train_rgb, cls.train_label, cls.test_rgb,
        cls.test_label, n_labels, ft, seed,
    )  # fmt: skip
    out["cls_finetune_acc"] = res["acc"]
    dense = (
        ft
        if cfg.dense_finetune
        else replace(
            ft, steps=cfg.dense_probe_steps, lr=3e-3, weight_decay=0.0, freeze_backbone=True
        )
    )
    res = finetune(
        backbone, "segmentation", train.rgb, train.semantic, test.rgb, test.semantic,
        train.num_classes, dense, seed,
    )  # fmt: skip
    out["segmentation_miou"] = res["miou"]
    res = finetune(backbone, "depth", train.rgb, train.depth, test.rgb, test.depth, 1, dense, seed)
    out["depth_rmse"], out["depth_delta1"] = res["rmse"], res["delta1"]
    return out


def _history(result: Any) -> dict[str, np.ndarray]:
    h = result.history
    return {k: np.asarray(h[k]) for k in ("step", "loss", "task_losses", "weights") if k in h}


def run_pipeline(
    cfg: PipelineConfig,
    scenes: Scenes | None = None,
    classification: ClassificationData | None = None,
    log: Callable[[str], None] = print,
    pretrain_options: dict[str, Any] | None = None,
) -> PipelineResult:
    """Pre-train with every method and seed, evaluate downstream, normalise.

    ``scenes``: the user's RGB-D-semantic data (else procedural scenes from
    ``cfg.data_seed``), split into ``num_pretrain`` / ``num_train`` / ``num_test`` scenes.
    ``classification``: images for the two classification tasks (else the scene labels of
    the downstream train / test scenes). ``pretrain_options``: extra keyword arguments of
    ``deep.pretrain``.
    """
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    sizes = (cfg.num_pretrain, cfg.num_train, cfg.num_test)
    if scenes is None:
        scenes = generate_scenes(sum(sizes), cfg.scene, seed=cfg.data_seed)
    elif scenes.rgb.shape[-1] != cfg.scene.size:
        raise ValueError(
            f"scenes are {scenes.rgb.shape[-1]} pixels wide, the config says {cfg.scene.size}"
        )
    pre, train, test = split_scenes(scenes, sizes, cfg.data_seed)
    cls = classification or ClassificationData(
        train.rgb, train.label, test.rgb, test.label, scenes.label_names
    )
    seconds["data"] = time.perf_counter() - t_start
    norm = Normalisation.from_data(pre.rgb, pre.depth)
    mcfg = cfg.model_config(scenes.num_classes, norm)
    device = torch.device(cfg.device) if cfg.device else _default_device()
    heldout_batch = _fixed_batch(test, 256, cfg, seed=cfg.data_seed + 1)
    show_batch = _fixed_batch(test, 4, cfg, seed=cfg.data_seed + 2)

    methods = cfg.methods()
    metrics: dict[str, list[dict[str, float]]] = {m: [] for m in (*methods, "scratch")}
    histories: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in methods}
    heldout: dict[str, list[list[float]]] = {m: [] for m in (*methods, "scratch")}
    recon: dict[str, dict[str, np.ndarray]] = {}
    seconds["pretrain"] = seconds["downstream"] = 0.0
    for seed in cfg.seeds:
        for name in ("scratch", *methods):
            torch.manual_seed(seed)
            model = MultiModalMAE(mcfg)
            t0 = time.perf_counter()
            if name != "scratch":
                result = deep.pretrain(
                    model,
                    SceneBatches(
                        pre, cfg.batch_size, cfg.mask_ratio, cfg.patch_size, seed, cfg.mask_alpha
                    ),
                    num_tasks=len(MODALITIES),
                    task_loss=modality_task_loss,
                    rule=methods[name],
                    steps=cfg.pretrain_steps,
                    lr=cfg.lr,
                    warmup_steps=cfg.warmup_steps,
                    device=device,
                    precision=cfg.precision,
                    seed=seed,
                    progress=False,
                    task_names=MODALITIES,
                    log_every=max(1, cfg.pretrain_steps // 60),
                    **(pretrain_options or {}),
                )
                model = result.model
                histories[name].append(_history(result))
            model = model.to(device)
            seconds["pretrain"] += time.perf_counter() - t0
            heldout[name].append(heldout_losses(model, heldout_batch))
            if seed == cfg.seeds[0]:
                recon[name] = reconstruct(model, show_batch)
            t0 = time.perf_counter()
            metrics[name].append(_downstream(model, train, test, cls, cfg, seed, device))
            seconds["downstream"] += time.perf_counter() - t0
            row = " ".join(f"{k}={v:.3f}" for k, v in metrics[name][-1].items())
            losses = " ".join(
                f"{m}={v:.3f}" for m, v in zip(MODALITIES, heldout[name][-1], strict=True)
            )
            log(f"  seed {seed} {name:<8} held-out loss {losses} | {row}")
    scores, ebar = normalised_scores(metrics)
    for task in DOWNSTREAM_TASKS:
        if task not in scores["scratch"]:
            log(f"  {task}: the from-scratch model is already perfect; left out of the scores")
    seconds["total"] = time.perf_counter() - t_start
    return PipelineResult(
        config=cfg,
        metrics=metrics,
        scores=scores,
        histories=histories,
        heldout=heldout,
        scratch_error=ebar,
        seconds=seconds,
        reconstructions=recon,
        class_names=scenes.class_names,
        label_names=cls.label_names,
    )


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
