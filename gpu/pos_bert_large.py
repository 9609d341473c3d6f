"""POS-Mask BERT on a GPU: minimax vs average vs MLM pre-training on the full Austen corpus,
then fine-tuning on the built-in downstream suite; worst-case table printed last.

The GPU machine has no spaCy, so the tagged corpus and tokenizer come from a bundle built
here (about 4 MB; carry ``.cache/pos_bert_bundle``, an ignored path)::

    python gpu/pos_bert_large.py --build-bundle            # here: the shipped tagged novels
    PYTHONPATH=. python3 gpu/pos_bert_large.py --out OUT   # there: under 200 s on an H100
    PYTHONPATH=. python3 gpu/pos_bert_large.py --smoke --out OUT   # a tiny run on CPU (a test)

Configuration: BERT ``small`` (4 layers, 512 wide, 8 heads) built from a config, sequences
of 128 tokens, batch 128, bf16 autocast, 9 POS tasks, minimax = ``softmax(0.5)``; 3 seeds
per method; fine-tuning 4 suite tasks (2000 train / 1000 dev examples each, 3 epochs of
batch 32, lr 1e-4: the usual BERT recipe) with a mean-pooled classifier (``--pooling cls``
for BERT's pooler on ``[CLS]``, which masked-LM pre-training never trains).
The number of pre-training steps (the same for every run) is set from a timed calibration
so that the whole script stays within ``--budget-s`` (190 s by default), capped by
``--pretrain-steps``. Writes ``OUT/pos_bert_large.json`` (+ PNGs when matplotlib is present).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / ".cache" / "pos_bert_bundle"
START = time.perf_counter()
if str(ROOT) not in sys.path:  # run as a script from anywhere: deep and benchmarks importable
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for pos_bert_large.json")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="tagged corpus")
    parser.add_argument(
        "--build-bundle", action="store_true", help="build the bundle (tagged novels)"
    )
    parser.add_argument(
        "--corpus", default="austen", help="for --build-bundle: austen or austen-excerpt"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny configuration on CPU")
    parser.add_argument("--size", default=None, help="BERT size (default small; smoke tiny)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (3)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (128)")
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="cap on pre-training steps"
    )
    parser.add_argument("--budget-s", type=float, default=190.0, help="wall-clock target")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=200,
        help="stop with an error if the budget allows fewer pre-training steps per run",
    )
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument(
        "--pooling", choices=("mean", "cls"), default="mean", help="fine-tuned classifier input"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the device (untested > 1)"
    )
    args = parser.parse_args(argv)
    if not args.build_bundle and args.out is None:
        parser.error("--out is required (except with --build-bundle)")
    return args


def build_bundle(args: argparse.Namespace) -> Path:
    from deep.apps.pos_bert.pipeline import DataConfig, prepare_data, save_bundle

    data = prepare_data(DataConfig(corpus=args.corpus, vocab_size=8000, max_len=128))
    folder = save_bundle(data, args.bundle)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(
        f"bundle {folder}: {len(data.corpus.sentences)} sentences, {data.corpus.num_words} words, "
        f"{size / 1e6:.1f} MB"
    )
    return folder


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        plan = dict(size="tiny", seeds=2, batch_size=8, pretrain_steps=6, suite=("acceptability",),
                    max_train=24, max_dev=16, ft_epochs=1.0, ft_lr=1e-3, ft_batch=8, lr=1e-3,
                    device="cpu", workers=1)  # fmt: skip
    else:
        plan = dict(size="small", seeds=3, batch_size=128, pretrain_steps=3000,
                    suite=("acceptability", "novel", "consecutive", "word-class"),
                    max_train=2000, max_dev=1000, ft_epochs=3.0, ft_lr=1e-4, ft_batch=32,
                    lr=5e-4, device=None, workers=1)  # fmt: skip
    for key in ("size", "seeds", "batch_size", "pretrain_steps"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    return plan


class Calibration(NamedTuple):
    """Measured on this device: seconds per pre-training step, fixed seconds per pre-training
    run (model, held-out evaluation, checkpoint), seconds per fine-tuning run."""

    per_step: float
    per_run: float
    per_finetune: float


def _calibrate(data: Any, plan: dict[str, Any], config: Any, tasks: Any) -> Calibration:
    """Two pre-training runs of different lengths (their difference is the per-step cost,
    free of start-up costs) and one fine-tuning run, after a warm-up run."""
    import dataclasses
    import tempfile

    from deep.apps.pos_bert.pipeline import pretrain_pos_bert
    from deep.apps.text import finetune

    short, long = (2, 5) if plan["device"] == "cpu" else (5, 35)

    def timed(steps: int, folder: str) -> tuple[float, Any]:
        cfg = dataclasses.replace(config.pretrain, steps=steps, warmup_steps=1)
        t0 = time.perf_counter()
        out = pretrain_pos_bert(data, "minimax", cfg, seed=99, out_dir=Path(folder))
        return time.perf_counter() - t0, out

    with tempfile.TemporaryDirectory() as tmp:
        timed(short, tmp)  # warm-up: kernels, allocator, caches
        t_short, _ = timed(short, tmp)
        t_long, out = timed(long, tmp)
        per_step = max(t_long - t_short, 1e-6) / (long - short)
        per_run = max(t_short - short * per_step, 0.0)
        t0 = time.perf_counter()
        finetune(out.checkpoint, data.hf_tokenizer(), tasks[0], config=config.finetune, seed=0)
        per_finetune = time.perf_counter() - t0
    return Calibration(per_step, per_run, per_finetune)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build_bundle:
        build_bundle(args)
        return 0
    import dataclasses

    import torch

    from benchmarks.common import write_json
    from deep.apps.evaluation import markdown_table
    from deep.apps.finetune import FinetuneConfig
    from deep.apps.pos_bert.experiment import (
        ExperimentConfig,
        downstream_tasks,
        pretraining_markdown,
        run_experiment,
    )
    from deep.apps.pos_bert.pipeline import DataConfig, PretrainConfig, load_bundle

    plan = _plan(args)
    if plan["device"] is None and not torch.cuda.is_available():
        print("no CUDA device: use --smoke for the CPU configuration", file=sys.stderr)
        return 2
    if plan["device"] == "cpu":
        torch.set_num_threads(1)
    data = load_bundle(args.bundle, max_len=128 if not args.smoke else 32)
    pretrain = PretrainConfig(
        size=plan["size"],
        steps=plan["pretrain_steps"],
        batch_size=plan["batch_size"],
        lr=plan["lr"],
        warmup_steps=max(1, plan["pretrain_steps"] // 10),
        temperature=args.temperature,
        log_every=10 if not args.smoke else 1,
        device=plan["device"],
    )
    finetune = FinetuneConfig(
        epochs=plan["ft_epochs"],
        lr=plan["ft_lr"],
        batch_size=plan["ft_batch"],
        max_len=data.train.input_ids.shape[1],
        device=plan["device"],
        pooling=args.pooling,
    )
    config = ExperimentConfig(
        data=DataConfig(max_len=data.train.input_ids.shape[1]),
        pretrain=pretrain,
        finetune=finetune,
        seeds=tuple(range(plan["seeds"])),
        suite_tasks=plan["suite"],
        max_train=plan["max_train"],
        max_dev=plan["max_dev"],
        workers=args.workers,
    )
    tasks = downstream_tasks(config, data)
    cal = _calibrate(data, plan, config, tasks)
    runs = len(config.seeds) * len(config.methods)
    elapsed = time.perf_counter() - START
    finetune_total = cal.per_finetune * runs * len(tasks) * 1.1
    room = args.budget_s - elapsed - finetune_total - runs * cal.per_run - 8.0  # 8 s: plots, JSON
    steps = int(min(plan["pretrain_steps"], room / (runs * cal.per_step * 1.1)))
    min_steps = min(args.min_steps, plan["pretrain_steps"])
    if steps < min_steps:
        # fine-tuning (per seed, method and task) took the budget: say so rather than
        # pre-train for a handful of steps (seen on an H200 with 3 seeds and 190 s)
        raise SystemExit(
            f"--budget-s {args.budget_s:g} leaves room for {max(steps, 0)} pre-training steps "
            f"per run (< --min-steps {min_steps}): fine-tuning needs about "
            f"{finetune_total:.0f} s for {runs} runs x {len(tasks)} tasks; "
            "raise --budget-s or lower --seeds"
        )
    print(
        f"calibration: {cal.per_step * 1e3:.1f} ms/step + {cal.per_run:.1f} s per pre-training "
        f"run, {cal.per_finetune:.1f} s per fine-tuning run; {elapsed:.0f} s so far -> "
        f"{steps} pre-training steps per run",
        flush=True,
    )
    config = dataclasses.replace(
        config,
        pretrain=dataclasses.replace(pretrain, steps=steps, warmup_steps=max(1, steps // 10)),
    )
    result = run_experiment(config, data=data, progress=False)
    payload = {
        "experiment": "pos_bert_large",
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available() and not args.smoke
        else "cpu",
        "smoke": args.smoke,
        "calibration": cal._asdict(),
        **result.payload,
        "wall_seconds": time.perf_counter() - START,
    }
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pos_bert_large.json", payload)
    try:
        from deep.apps.evaluation import plot_report
        from deep.apps.pos_bert.experiment import pretraining_figure

        plot_report(result.report, out / "pos_bert_large.png", title="POS-Mask BERT (GPU)")
        pretraining_figure(result.payload, out / "pos_bert_large-pretraining.png")
    except ImportError as err:  # matplotlib is optional there
        print(f"(no plots: {err})")
    print("\nheld-out per-POS MLM loss (nats, mean over seeds):")
    print(pretraining_markdown(result.payload))
    print(
        f"{steps} steps x {plan['batch_size']} x {data.train.input_ids.shape[1]} tokens, "
        f"BERT-{plan['size']}, {len(config.seeds)} seeds; wall {payload['wall_seconds']:.0f} s"
    )
    print(json.dumps(result.payload["timing"]))
    print("\nworst-case downstream table (dev scores x 100):")
    print(markdown_table(result.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
