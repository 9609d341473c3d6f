"""Multi-modal mask MAE: RGB, depth and semantic maps as pre-training tasks.

- :mod:`~deep.apps.mae.scenes`: procedural scenes whose three modalities come from one geometry.
- :mod:`~deep.apps.mae.readers`: a user's image folder (class sub-folders) or NYUv2-style
  RGB/depth/label folder.
- :mod:`~deep.apps.mae.model`: per-modality patch embeddings, a shared ViT encoder, light
  per-modality decoders (MultiMAE style); :mod:`~deep.apps.mae.masking`: random masking across
  modalities.
- :mod:`~deep.apps.mae.tasks`: per-patch reconstruction losses with the modality as task id, the
  ``task_loss`` of :func:`deep.pretrain`, and seeded batches.
- :mod:`~deep.apps.mae.downstream`: RGB-only classification (features for
  :func:`deep.diagnostics.linear_probe`; fine-tuning with a
  :class:`~deep.apps.finetune.FinetuneConfig`), segmentation (mIoU) and depth (RMSE,
  delta < 1.25).
- :mod:`~deep.apps.mae.pipeline`: the whole experiment (minimax vs average vs from scratch,
  normalised worst-case scores); :mod:`~deep.apps.mae.figures`: its plots and tables.
"""

from __future__ import annotations

from .downstream import depth_metrics, finetune, mean_iou
from .masking import random_mask
from .model import MODALITIES, MAEConfig, MultiModalMAE, Normalisation, RGBBackbone
from .readers import read_image_folder, read_rgbd_folder
from .scenes import SceneConfig, Scenes, generate_scenes
from .tasks import MAEBatch, SceneBatches, modality_task_loss, per_patch_losses

__all__ = [
    "MODALITIES",
    "MAEBatch",
    "MAEConfig",
    "MultiModalMAE",
    "Normalisation",
    "RGBBackbone",
    "SceneBatches",
    "SceneConfig",
    "Scenes",
    "depth_metrics",
    "finetune",
    "generate_scenes",
    "mean_iou",
    "modality_task_loss",
    "per_patch_losses",
    "random_mask",
    "read_image_folder",
    "read_rgbd_folder",
]
