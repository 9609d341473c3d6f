"""Multi-modal mask MAE: modalities (RGB, depth, semantic) as pre-training tasks, minimax
(softmax weights) vs average-risk (uniform weights) pre-training, then RGB-only
classification (linear probe, fine-tune), segmentation (mIoU) and depth (RMSE, δ<1.25).

``python -m benchmarks run mae [--quick | --demo] [--data DIR] [--cls-data DIR] [--out DIR]``
writes ``mae.json`` (every number), ``mae.png`` (normalised downstream scores with the
worst task), ``mae_losses.png`` (per-modality pre-training losses over steps for both
methods) and ``mae_recon.png`` (reconstructions per modality). See
:mod:`deep.apps.mae.pipeline` for the protocol and the normalisation.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..common import Experiment, Report, write_json

# name -> pipeline settings (sizes chosen for 2 CPU cores; see the module docstring)
PRESETS: dict[str, dict[str, Any]] = {
    "demo": dict(
        image=32, patch_size=8, dim=48, depth=2, heads=4, decoder_dim=48,
        num_pretrain=768, num_train=384, num_test=256,
        pretrain_steps=100, batch_size=32, finetune_steps=40, dense_finetune=False,
        seeds=(0, 1, 2),
    ),
    "quick": dict(
        image=32, patch_size=4, dim=64, depth=3, heads=4, decoder_dim=32,
        num_pretrain=2048, num_train=1024, num_test=512,
        pretrain_steps=250, batch_size=64, finetune_steps=100, dense_finetune=False,
        seeds=(0, 1, 2),
    ),
    "full": dict(
        image=32, patch_size=4, dim=128, depth=4, heads=4, decoder_dim=64,
        num_pretrain=8192, num_train=2048, num_test=1024,
        pretrain_steps=3000, batch_size=128, finetune_steps=600, dense_finetune=True,
        seeds=(0, 1, 2),
    ),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo", action="store_true", help="the quickstart's small demo (about a minute)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="an NYUv2-style folder (rgb/, depth/, label/) to use instead of procedural scenes",
    )
    parser.add_argument(
        "--cls-data",
        type=Path,
        default=None,
        help="an image folder (one sub-folder per class) for the classification tasks",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (>= 1)")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps per run")
    parser.add_argument(
        "--temperature", type=float, default=0.5, help="softmax temperature of minimax"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 for --demo/--quick, whose small models gain little "
        "from more and lose much when other processes share the cores; 0 = torch's default)",
    )


def preset_config(name: str, **overrides: Any) -> Any:
    """The :class:`deep.apps.mae.pipeline.PipelineConfig` of a preset (``demo``, ``quick``, ``full``)."""
    from deep.apps.finetune import IMAGE_FINETUNE
    from deep.apps.mae.pipeline import PipelineConfig
    from deep.apps.mae.scenes import SceneConfig

    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    p = dict(PRESETS[name])
    p.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineConfig(
        scene=SceneConfig(size=p["image"]),
        patch_size=p["patch_size"],
        dim=p["dim"],
        depth=p["depth"],
        heads=p["heads"],
        decoder_dim=p["decoder_dim"],
        num_pretrain=p["num_pretrain"],
        num_train=p["num_train"],
        num_test=p["num_test"],
        pretrain_steps=p["pretrain_steps"],
        batch_size=p["batch_size"],
        warmup_steps=max(1, p["pretrain_steps"] // 15),
        temperature=p.get("temperature", 0.5),
        seeds=tuple(p["seeds"]),
        finetune=replace(
            IMAGE_FINETUNE, steps=p["finetune_steps"], batch_size=min(64, p["num_train"])
        ),
        dense_finetune=p.get("dense_finetune", True),
        device=p.get("device"),
    )


def _user_data(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any, Any]:
    """Read ``--data`` / ``--cls-data`` and fit the split sizes to them."""
    from deep.apps.mae.pipeline import ClassificationData
    from deep.apps.mae.readers import read_image_folder, read_rgbd_folder

    scenes = cls = None
    if args.data is not None:
        scenes = read_rgbd_folder(args.data, size=cfg.scene.size)
        n = len(scenes)
        if n < 10:
            raise ValueError(f"--data {args.data}: need at least 10 scenes, found {n}")
        n_test = max(2, n // 5)
        n_train = max(2, n // 5)
        n_pre = n - n_test - n_train
        cfg = replace(
            cfg,
            num_pretrain=n_pre,
            num_train=n_train,
            num_test=n_test,
            batch_size=min(cfg.batch_size, n_pre),
            finetune=replace(cfg.finetune, batch_size=min(cfg.finetune.batch_size, n_train)),
        )
    if args.cls_data is not None:
        rgb, label, names = read_image_folder(args.cls_data, size=cfg.scene.size)
        order = np.random.default_rng(cfg.data_seed).permutation(len(label))
        cut = round(0.7 * len(label))
        if cut < 2 or len(label) - cut < 2:
            raise ValueError(f"--cls-data {args.cls_data}: need at least 6 images")
        a, b = np.sort(order[:cut]), np.sort(order[cut:])
        cls = ClassificationData(rgb[a], label[a], rgb[b], label[b], names)
    return cfg, scenes, cls


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (0: leave torch's setting), then restore."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(args: argparse.Namespace) -> Report:
    from deep.apps import evaluation as wc
    from deep.apps.mae.figures import plot_losses, plot_reconstructions, raw_metrics_table
    from deep.apps.mae.pipeline import DOWNSTREAM_TASKS, run_pipeline

    preset = "demo" if args.demo else ("quick" if args.quick else "full")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    cfg = preset_config(
        preset,
        seeds=tuple(range(args.seeds)) if args.seeds else None,
        pretrain_steps=args.steps,
        temperature=args.temperature,
        device=args.device,
    )
    threads = args.threads if args.threads is not None else (1 if preset != "full" else 0)
    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    cfg, scenes, cls = _user_data(args, cfg)
    t0 = time.perf_counter()
    with _torch_threads(threads):
        result = run_pipeline(cfg, scenes=scenes, classification=cls, log=print)
    seconds = time.perf_counter() - t0

    summary = wc.summarize(result.scores, metrics="rer")
    out: Path = args.out
    png = wc.plot_report(
        summary,
        out / "mae.png",
        title="multi-modal MAE: downstream error reduction vs from scratch (RGB only)",
    )
    losses_png = plot_losses(result, out / "mae_losses.png")
    recon_png = plot_reconstructions(result, out / "mae_recon.png")
    table = wc.markdown_table(summary)
    raw = raw_metrics_table(result)
    data_note = (
        f"user data `{args.data}`" if args.data else f"procedural scenes ({cfg.scene.size}px)"
    )
    payload = {
        "experiment": "mae",
        "preset": preset,
        "data": str(args.data) if args.data else "procedural",
        "cls_data": str(args.cls_data) if args.cls_data else "scene labels",
        "config": asdict(cfg),
        "normalisation": "score_t = 1 - e_t / mean_seeds(e_t of scratch); e = 1-acc, 1-mIoU, RMSE",
        "scratch_error": result.scratch_error,
        "worst_case": summary.to_json(),
        "metrics": result.metrics,
        "heldout_modality_loss": {
            m: {"modalities": ["rgb", "depth", "semantic"], "per_seed": v}
            for m, v in result.heldout.items()
        },
        "histories": result.histories,
        "seconds": {**result.seconds, "experiment": seconds},
        "torch_threads": threads or "default",
        "class_names": result.class_names,
        "label_names": result.label_names,
    }
    json_path = write_json(out / "mae.json", payload)
    print(table)
    print(raw)
    held = "\n".join(
        f"| {m} | "
        + " | ".join(
            f"{np.mean([r[i] for r in rows]):.3f} ± {np.std([r[i] for r in rows], ddof=1):.3f}"
            if len(rows) > 1
            else f"{rows[0][i]:.3f}"
            for i in range(3)
        )
        + " |"
        for m, rows in result.heldout.items()
    )
    mm = summary.methods
    md = (
        "![mae](mae.png)\n\n"
        f"Multi-modal masked autoencoder on {data_note}: each modality (RGB, depth, semantic "
        "map) is a pre-training task; `minimax` weights them by "
        f"softmax(L/{cfg.temperature:g}), `average` uniformly; `scratch` is the same encoder "
        "without pre-training. Downstream tasks use RGB only. Scores are the relative error "
        "reduction vs from scratch, `1 - e/ē_scratch` (e = 1-acc, 1-mIoU, depth RMSE; "
        "0 = as good as from scratch, 1 = perfect), "
        f"mean ± std over {len(cfg.seeds)} seeds, times 100:\n\n"
        + table
        + "\nRaw metrics (mean ± std over seeds):\n\n"
        + raw
        + "\nHeld-out reconstruction loss per modality after pre-training (hidden patches "
        "of 256 test scenes; RGB/depth: MSE of standardised values, semantic: "
        "cross-entropy):\n\n| method | rgb | depth | semantic |\n|---|---|---|---|\n"
        + held
        + "\n\n![per-modality losses](mae_losses.png)\n\n![reconstructions](mae_recon.png)\n\n"
        f"{preset} preset: {cfg.pretrain_steps} pre-training steps of {cfg.batch_size} scenes; "
        f"classification fine-tuned for {cfg.finetune.steps} steps; segmentation and depth "
        + (
            f"fine-tuned for {cfg.finetune.steps} steps"
            if cfg.dense_finetune
            else f"as linear probes of the frozen patch tokens ({cfg.dense_probe_steps} steps)"
        )
        + f"; {seconds:.0f} s.\n"
    )
    headline = {f"{m}_{k}": mm[m].mean[k] for m in mm for k in (summary.macro_key, summary.wg_key)}
    headline["tasks"] = list(DOWNSTREAM_TASKS)
    return Report(json_path, (png, losses_png, recon_png), md, headline)


EXPERIMENT = Experiment(
    name="mae",
    summary="multi-modal mask MAE: modality tasks, minimax vs average pre-training, "
    "worst-case RGB downstream tasks",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=70,
    quickstart_args=("--demo",),
)
