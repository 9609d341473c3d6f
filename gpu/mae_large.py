"""Multi-modal mask MAE, larger configuration, for one GPU (H100/H200), in under 200 s.

    PYTHONPATH=. python3 gpu/mae_large.py --out OUT          # the GPU run
    PYTHONPATH=. python3 gpu/mae_large.py --smoke --out OUT  # tiny CPU check of this script

64x64 procedural scenes (RGB, depth, semantic), 8x8 patches (64 per modality, 192 tokens,
75% hidden, modality shares from Dirichlet(1) as in MultiMAE), a ViT encoder of width 256 and depth 6 with per-modality decoders; minimax
(``softmax(0.5)``) vs average (``uniform()``) pre-training over the three modality tasks
with ``deep.pretrain`` (bf16 autocast on CUDA), 3 seeds; then, from RGB only, a linear
probe and fine-tuning for classification and fine-tuning for segmentation and depth, with
the from-scratch encoder as the normalising baseline (see :mod:`deep.apps.mae.pipeline`).

Time budget: after the data are made, a short timing run measures one pre-training step
and one fine-tuning step; the number of pre-training steps (the same for every method and
seed) is then set so that pre-training plus downstream fits ``--budget-s`` (at most
``--pretrain-steps``). The chosen count and every phase's time are printed and saved.
Writes ``OUT/mae_large.json`` (+ PNGs when matplotlib is present) and prints the
worst-case table last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

T0 = time.perf_counter()


def _chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    from deep.apps.mae.scenes import SceneConfig, generate_scenes

    n, size, seed = args
    s = generate_scenes(n, SceneConfig(size=size), seed=seed)
    return s.rgb, s.depth, s.semantic, s.label


def make_scenes(total: int, size: int, seed: int, workers: int):  # type: ignore[no-untyped-def]
    """Procedural scenes made in parallel: chunk ``j`` of 1024 scenes uses seed
    ``seed + j`` (deterministic for a given total, whatever the worker count)."""
    from deep.apps.mae.scenes import OBJECT_CLASSES, SEGMENT_CLASSES, SceneConfig, Scenes

    sizes = [min(1024, total - i) for i in range(0, total, 1024)]
    jobs = [(n, size, seed + j) for j, n in enumerate(sizes)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            parts = list(pool.map(_chunk, jobs))
    else:
        parts = [_chunk(j) for j in jobs]
    rgb, depth, semantic, label = (np.concatenate(x) for x in zip(*parts, strict=True))
    return Scenes(
        rgb,
        depth,
        semantic,
        label,
        SEGMENT_CLASSES,
        OBJECT_CLASSES,
        SceneConfig(size=size).max_depth,
    )


def _config(smoke: bool):  # type: ignore[no-untyped-def]
    from deep.apps.finetune import IMAGE_FINETUNE
    from deep.apps.mae.pipeline import PipelineConfig
    from deep.apps.mae.scenes import SceneConfig

    if smoke:
        return PipelineConfig(
            scene=SceneConfig(size=16), patch_size=8, dim=16, depth=1, heads=2, decoder_dim=16,
            num_pretrain=64, num_train=32, num_test=32, pretrain_steps=4, batch_size=16,
            warmup_steps=1, seeds=(0, 1), finetune=replace(IMAGE_FINETUNE, steps=2, batch_size=16),
            device="cpu",
        )  # fmt: skip
    return PipelineConfig(
        scene=SceneConfig(size=64), patch_size=8, dim=256, depth=6, heads=8, decoder_dim=128,
        decoder_depth=1, num_pretrain=8192, num_train=2048, num_test=1024, pretrain_steps=1500,
        batch_size=256, lr=1e-3, warmup_steps=100, mask_ratio=0.75, temperature=0.5,
        seeds=(0, 1, 2), finetune=replace(IMAGE_FINETUNE, steps=200, batch_size=128, lr=5e-4),
    )  # fmt: skip


def _time_steps(cfg, scenes, device) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds per pre-training step and per fine-tuning step (after a warm-up)."""
    import torch

    import deep
    import minimax_core as mc
    from deep.apps.mae.downstream import finetune
    from deep.apps.mae.model import MultiModalMAE, Normalisation
    from deep.apps.mae.tasks import SceneBatches, modality_task_loss

    norm = Normalisation.from_data(scenes.rgb[:512], scenes.depth[:512])
    model = MultiModalMAE(cfg.model_config(scenes.num_classes, norm))
    batches = SceneBatches(
        scenes, cfg.batch_size, cfg.mask_ratio, cfg.patch_size, 99, cfg.mask_alpha
    )

    def pretrain(steps: int) -> float:
        sync()
        t = time.perf_counter()
        deep.pretrain(
            model, batches, num_tasks=3, task_loss=modality_task_loss,
            rule=mc.weights.softmax(cfg.temperature), steps=steps, lr=cfg.lr, device=device,
            precision=cfg.precision, progress=False, log_every=steps,
        )  # fmt: skip
        sync()
        return time.perf_counter() - t

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    warm, probe = (2, 4) if cfg.device == "cpu" else (10, 30)
    pretrain(warm)
    per_pre = (pretrain(warm + probe) - pretrain(warm)) / probe
    backbone = model.rgb_backbone().to(device)
    n = min(len(scenes), 512)

    def tune(steps: int) -> float:
        sync()
        t = time.perf_counter()
        fc = replace(cfg.finetune, steps=steps)
        finetune(backbone, "segmentation", scenes.rgb[:n], scenes.semantic[:n],
                 scenes.rgb[:8], scenes.semantic[:8], scenes.num_classes, fc)  # fmt: skip
        sync()
        return time.perf_counter() - t

    tune(warm)
    per_ft = (tune(warm + probe) - tune(warm)) / probe
    return max(per_pre, 1e-4), max(per_ft, 1e-4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of this script")
    parser.add_argument("--budget-s", type=float, default=140.0,
                        help="seconds for the timing run + pre-training + downstream "
                             "(default 140; data and imports come on top)")  # fmt: skip
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="cap on pre-training steps"
    )
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if not args.budget_s > 0:
        parser.error("--budget-s must be > 0")

    import torch

    import deep.apps.evaluation as wc
    from benchmarks.common import write_json
    from deep.apps.mae.pipeline import DOWNSTREAM_TASKS, run_pipeline

    torch.set_float32_matmul_precision("high")
    cfg = _config(args.smoke)
    # the worker processes fork before anything touches CUDA
    t = time.perf_counter()
    total = cfg.num_pretrain + cfg.num_train + cfg.num_test
    scenes = make_scenes(total, cfg.scene.size, cfg.data_seed, args.workers)
    t_data = time.perf_counter() - t
    print(f"data: {total} scenes of {cfg.scene.size}px in {t_data:.1f} s", flush=True)
    if not args.smoke and not torch.cuda.is_available():
        print("warning: no CUDA device; this configuration is meant for a GPU", file=sys.stderr)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    t = time.perf_counter()
    per_pre, per_ft = _time_steps(cfg, scenes.subset(slice(0, cfg.num_pretrain)), device)
    t_timing = time.perf_counter() - t
    runs = len(cfg.seeds)
    downstream_est = runs * 3 * (3 * cfg.finetune.steps * per_ft * 1.3 + 2.0)
    left = args.budget_s - t_timing - downstream_est
    cap = args.pretrain_steps or cfg.pretrain_steps
    steps = int(min(cap, max(left, 0.0) / (2 * runs * per_pre)))
    steps = max(steps - steps % 50, 100) if not args.smoke else cap
    cfg = replace(cfg, pretrain_steps=steps, warmup_steps=min(cfg.warmup_steps, steps // 10 or 1))
    print(
        f"timing: {per_pre * 1e3:.1f} ms per pre-training step, {per_ft * 1e3:.1f} ms per "
        f"fine-tuning step -> {steps} pre-training steps per run "
        f"(downstream estimate {downstream_est:.0f} s)",
        flush=True,
    )

    result = run_pipeline(cfg, scenes=scenes, log=lambda s: print(s, flush=True))
    summary = wc.summarize(result.scores, metrics="rer")
    args.out.mkdir(parents=True, exist_ok=True)
    pngs: list[str] = []
    try:
        import matplotlib  # noqa: F401

        from deep.apps.mae.figures import plot_losses, plot_reconstructions

        pngs.append(str(wc.plot_report(summary, args.out / "mae_large.png",
                                       title="MAE (GPU): error reduction vs from scratch")))  # fmt: skip
        pngs.append(str(plot_losses(result, args.out / "mae_large_losses.png")))
        pngs.append(str(plot_reconstructions(result, args.out / "mae_large_recon.png")))
    except ImportError as err:
        print(f"no figures ({err})", flush=True)
    from deep.apps.mae.figures import raw_metrics_table

    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    write_json(
        args.out / "mae_large.json",
        {
            "experiment": "mae_large",
            "device": device_name,
            "torch": torch.__version__,
            "config": asdict(cfg),
            "timing": {
                "pretrain_step_s": per_pre,
                "finetune_step_s": per_ft,
                "data_s": t_data,
                "timing_s": t_timing,
                **result.seconds,
                "script_s": time.perf_counter() - T0,
            },
            "tasks": list(DOWNSTREAM_TASKS),
            "scratch_error": result.scratch_error,
            "worst_case": summary.to_json(),
            "metrics": result.metrics,
            "heldout_modality_loss": result.heldout,
            "histories": result.histories,
            "figures": pngs,
        },
    )
    print(f"\ndevice {device_name}, {time.perf_counter() - T0:.0f} s in all; raw metrics:")
    print(raw_metrics_table(result))
    print("worst case (relative error reduction vs from scratch, x100):")
    print(wc.markdown_table(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
