"""Overhead of ``deep.pretrain`` against a plain hand-written PyTorch MLM loop.

A small BERT (from a config, no download) trains on random token sequences with 15%
masking; the masked tokens fall into ``M`` tasks by token id. Three variants run the same
model, data, AdamW, gradient clipping and learning-rate schedule:

(a) ``plain``: ``model(**batch).loss`` (the model's own mean MLM loss), backward, clip, step;
(b) ``uniform``: ``deep.pretrain`` with ``uniform()`` (average risk over the tasks);
(c) ``softmax``: ``deep.pretrain`` with ``softmax(temperature)`` (the paper's rule).

Each variant keeps its own model and runs in chunks of ``--steps`` optimizer steps; the
chunks are interleaved with a rotating order (a b c, b c a, c a b, ...) so that noise from
other processes hits all variants alike. Every forward pass is time-stamped, so a step's
time is the interval between two forward starts: everything the loop does per step
(``deep.pretrain``'s reductions, weights and checks included). Per round and variant the
median step time gives steps per second, robust to a burst of load hitting a few steps;
the headline ratio is the median over rounds of (variant / plain) in the same round.
Chunk-level ratios (wall clock and CPU time, each call's set-up included) are reported
beside it.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..common import Experiment, Report, save_figure, single_threaded, write_json

VARIANTS = ("plain", "uniform", "softmax")
TARGET = 0.97
Chunk = Callable[[Any, list[dict[str, Any]], int, float, list[float]], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="steps per chunk (8, quick 4)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (9, quick 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--num-tasks", type=int, default=4, help="M (4)")
    parser.add_argument("--temperature", type=float, default=0.5, help="softmax temperature")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if value < minimum:
        raise ValueError(f"--{name} must be >= {minimum}, got {value}")
    return value


def _model(vocab: int, seq_len: int, seed: int) -> Any:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=seq_len,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    return BertForMaskedLM(config)


def _batches(
    n: int, batch_size: int, seq_len: int, vocab: int, num_tasks: int
) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
        masked = torch.rand(batch_size, seq_len, generator=g) < 0.15
        out.append(
            {
                "input_ids": torch.where(masked, 4, ids),  # 4 plays [MASK]
                "attention_mask": torch.ones_like(ids),
                "labels": torch.where(masked, ids, -100),
                "token_task": ids % num_tasks,
            }
        )
    return out


def _plain_chunk(
    model: Any, batches: list[dict[str, Any]], steps: int, lr: float, stamps: list[float]
) -> None:
    """The hand-written loop (nanoGPT style), optimizer creation included."""
    import torch

    import deep

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    model.train()
    for step in range(steps):
        factor = deep.lr_factor(
            step, steps=steps, warmup_steps=0, lr_schedule="cosine", min_lr_ratio=0.1
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        batch = batches[step % len(batches)]
        stamps.append(time.perf_counter())
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _deep_chunk(rule: Any, num_tasks: int) -> Chunk:
    import deep

    def chunk(
        model: Any, batches: list[dict[str, Any]], steps: int, lr: float, stamps: list[float]
    ) -> None:
        def task_loss(model: Any, batch: dict[str, Any]) -> Any:
            stamps.append(time.perf_counter())
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return deep.per_token_cross_entropy(out.logits, batch["labels"], batch["token_task"])

        deep.pretrain(
            model,
            batches,
            num_tasks=num_tasks,
            task_loss=task_loss,
            rule=rule,
            steps=steps,
            lr=lr,
            weight_decay=0.01,
            grad_clip=1.0,
            log_every=steps,
            progress=False,
            seed=None,
            device="cpu",
        )

    return chunk


def _paired_ratios(rates: dict[str, np.ndarray]) -> dict[str, float]:
    """Median over rounds of (steps/s of a variant) / (steps/s of plain in the same round)."""
    return {
        f"{name}_vs_plain": float(np.median(rates[name] / rates["plain"]))
        for name in ("uniform", "softmax")
    }


def run(args: argparse.Namespace) -> Report:
    import torch

    import minimax_core as mc

    steps = _positive("steps", args.steps or (4 if args.quick else 8), minimum=2)
    rounds = _positive("rounds", args.rounds or (3 if args.quick else 9))
    batch_size = _positive("batch-size", args.batch_size)
    seq_len = _positive("seq-len", args.seq_len)
    num_tasks = _positive("num-tasks", args.num_tasks)
    threads = _positive("threads", args.threads)
    vocab, lr = 4000, 1e-4
    batches = _batches(8, batch_size, seq_len, vocab, num_tasks)
    runners: dict[str, Chunk] = {
        "plain": _plain_chunk,
        "uniform": _deep_chunk(mc.weights.uniform(), num_tasks),
        "softmax": _deep_chunk(mc.weights.softmax(args.temperature), num_tasks),
    }
    models = {name: _model(vocab, seq_len, seed=0) for name in VARIANTS}
    step_rate: dict[str, list[float]] = {name: [] for name in VARIANTS}
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with single_threaded():
        torch.set_num_threads(threads)
        for name in VARIANTS:  # warm-up, not timed
            runners[name](models[name], batches, 2, lr, [])
        for r in range(rounds):
            for name in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
                stamps: list[float] = []
                w0, c0 = time.perf_counter(), time.process_time()
                runners[name](models[name], batches, steps, lr, stamps)
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
                step_rate[name].append(1.0 / float(np.median(np.diff(stamps))))
                print(
                    f"round {r + 1}/{rounds} {name:8s} {step_rate[name][-1]:7.3f} steps/s",
                    flush=True,
                )
    rates = {name: np.asarray(step_rate[name]) for name in VARIANTS}
    ratios = _paired_ratios(rates)
    chunk_ratios = _paired_ratios({n: steps / np.asarray(wall[n]) for n in VARIANTS})
    cpu_ratios = _paired_ratios({n: steps / np.asarray(cpu[n]) for n in VARIANTS})
    for key, value in ratios.items():
        print(
            f"{key}: {value:.4f} (per-step, median of per-round ratios); whole chunks: "
            f"{chunk_ratios[key]:.4f} wall, {cpu_ratios[key]:.4f} CPU time"
        )
    meets = ratios["softmax_vs_plain"] >= TARGET
    print(f"target softmax_vs_plain >= {TARGET}: {'met' if meets else 'NOT met'}")

    out = args.out
    payload = {
        "experiment": "deep-overhead",
        "ratios": ratios,
        "ratios_whole_chunks_wall": chunk_ratios,
        "ratios_whole_chunks_cpu_time": cpu_ratios,
        "target": {"softmax_vs_plain": TARGET},
        "meets_target": meets,
        "steps_per_second": {name: rates[name] for name in VARIANTS},
        "median_steps_per_second": {name: float(np.median(rates[name])) for name in VARIANTS},
        "chunk_wall_seconds": wall,
        "chunk_cpu_seconds": cpu,
        "method": (
            "interleaved chunks with a rotating order; a step is the interval between two "
            "forward starts; per round and variant steps/s = 1 / median step time; ratio = "
            "median over rounds of variant/plain in the same round"
        ),
        "config": {
            "model": "BertForMaskedLM hidden 128, 2 layers, 2 heads, intermediate 512, vocab 4000",
            "batch_size": batch_size,
            "seq_len": seq_len,
            "num_tasks": num_tasks,
            "temperature": args.temperature,
            "steps_per_chunk": steps,
            "rounds": rounds,
            "torch_threads": threads,
            "device": "cpu",
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
    }
    json_path = write_json(out / "deep-overhead.json", payload)
    png_path = _plot(rates, ratios, steps, out / "deep-overhead.png")
    markdown = (
        f"![deep-overhead](deep-overhead.png)\n\n"
        f"Steps per second of a small BERT MLM on CPU ({threads} thread): a plain PyTorch loop vs "
        f"`deep.pretrain` with `uniform()` and with `softmax({args.temperature:g})`, "
        f"{rounds} interleaved rounds of {steps} steps. Median per-round ratios: "
        f"uniform/plain = {ratios['uniform_vs_plain']:.3f}, softmax/plain = "
        f"{ratios['softmax_vs_plain']:.3f} (target >= {TARGET}; whole chunks, set-up "
        f"included: {chunk_ratios['uniform_vs_plain']:.3f} and "
        f"{chunk_ratios['softmax_vs_plain']:.3f}).\n"
    )
    return Report(
        json_path=json_path,
        png_paths=(png_path,),
        markdown=markdown,
        headline={**ratios, "meets_target": meets},
    )


def _plot(rates: dict[str, np.ndarray], ratios: dict[str, float], steps: int, path: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_rounds, ax_bars) = plt.subplots(
        1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]}
    )
    labels = {
        "plain": "(a) plain loop",
        "uniform": "(b) deep.pretrain, uniform",
        "softmax": "(c) deep.pretrain, softmax",
    }
    colors = {"plain": "0.45", "uniform": "C0", "softmax": "C1"}
    for name in VARIANTS:
        rounds = np.arange(1, len(rates[name]) + 1)
        ax_rounds.plot(rounds, rates[name], "o-", color=colors[name], label=labels[name])
    ax_rounds.xaxis.get_major_locator().set_params(integer=True)
    ax_rounds.set_xlabel(f"interleaved round ({steps} steps per variant)")
    ax_rounds.set_ylabel("steps per second (1 / median step time)")
    ax_rounds.grid(alpha=0.3)
    ax_rounds.legend(fontsize=8)
    medians = [float(np.median(rates[name])) for name in VARIANTS]
    low = [m - float(np.percentile(rates[n], 25)) for m, n in zip(medians, VARIANTS, strict=True)]
    high = [float(np.percentile(rates[n], 75)) - m for m, n in zip(medians, VARIANTS, strict=True)]
    ax_bars.bar(
        ["(a) plain", "(b) uniform", "(c) softmax"],
        medians,
        yerr=[low, high],
        capsize=4,
        color=[colors[n] for n in VARIANTS],
    )
    for x, name in ((1, "uniform"), (2, "softmax")):
        ax_bars.annotate(
            f"{ratios[name + '_vs_plain']:.3f}x",
            (x, medians[x]),
            ha="center",
            va="bottom",
            xytext=(0, 8),
            textcoords="offset points",
        )
    ax_bars.set_ylim(0, 1.2 * max(m + h for m, h in zip(medians, high, strict=True)))
    ax_bars.set_ylabel("median steps per second (IQR over rounds)")
    ax_bars.set_title("ratio to (a): median of per-round ratios", fontsize=9)
    fig.suptitle("deep.pretrain overhead on CPU (small BERT, MLM split into tasks)")
    fig.tight_layout()
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name="deep-overhead",
    summary="steps/s of deep.pretrain (uniform, softmax) vs a plain PyTorch MLM loop, small BERT on CPU",
    run=run,
    add_arguments=add_arguments,
)
