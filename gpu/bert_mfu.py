"""BERT-base MLM throughput and model FLOPs utilisation: ``deep.pretrain`` vs a plain loop.

Run from the repository root::

    PYTHONPATH=. python3 gpu/bert_mfu.py --out OUT          # on a GPU, about 2 minutes
    PYTHONPATH=. python3 gpu/bert_mfu.py --smoke --out OUT  # a tiny config on CPU (a test)

BERT-base (hidden 768, 12 layers, 12 heads, vocab 30522 padded to 30528 for tensor cores)
is built from a config (no download) and trained on random token sequences (length 128,
15% masked, the masked tokens split into 4 tasks by token id), the way a practitioner
would: bf16 autocast, fused AdamW, SDPA attention, gradient clipping, no host sync per step.
Both loops call the same module, which returns per-token cross-entropies (so a compiled
graph is shared): the plain loop averages them over the masked tokens; ``deep.pretrain``
reduces them to per-task means and weights them with ``softmax`` (or ``uniform``).

    tokens/s = batch * seq_len * steps / seconds
    MFU      = 6 * params * tokens/s / peak bf16 dense FLOP/s

``params`` counts every parameter once (the tied decoder included: its matmul runs on every
token); attention-score FLOPs are not counted, so MFU is a slight underestimate. The peak
comes from the device name (H100 SXM and H200: 989e12) or ``--peak-flops``. Phases run
eager first, then compiled if the time budget allows; results go to ``OUT/bert_mfu.json``
and a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIE", 756e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
)


def _import_deep() -> Any:
    """``import deep``; without scipy, load only ``minimax_core.weights`` (all deep needs)."""
    sys.path.insert(0, str(ROOT))
    try:
        import scipy  # noqa: F401
    except ImportError:
        package = types.ModuleType("minimax_core")
        package.__path__ = [str(ROOT / "minimax_core")]
        sys.modules["minimax_core"] = package
    import deep

    return deep


def peak_flops(device_name: str) -> float | None:
    upper = device_name.upper()
    for key, value in PEAK_BF16_FLOPS:
        if key in upper:
            return value
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bert_mfu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU (a test)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (256)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per phase (15)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per phase (3)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    parser.add_argument(
        "--compile",
        choices=("auto", "yes", "no"),
        default="auto",
        help="compiled phase: auto = on CUDA if the budget allows",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (eager: a quick test)"
    )
    parser.add_argument("--budget-s", type=float, default=140.0, help="stop starting phases after")
    parser.add_argument("--peak-flops", type=float, default=None, help="override the peak")
    parser.add_argument("--temperature", type=float, default=0.5)
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.seq_len < 8 or args.rounds < 1:
        parser.error("--seq-len must be >= 8 and --rounds >= 1")
    return args


def build(args: argparse.Namespace, device: Any) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch.nn.functional as F
    from transformers import BertConfig, BertForMaskedLM

    if args.smoke:
        sizes = {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        }
        vocab = 1024
    else:
        sizes = {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        }
        vocab = 30528  # 30522 rounded up to a multiple of 64
    config = BertConfig(
        vocab_size=vocab, max_position_embeddings=512, attn_implementation="sdpa", **sizes
    )
    torch.manual_seed(0)
    mlm = BertForMaskedLM(config)

    class TokenLosses(torch.nn.Module):
        """Per-token cross-entropy of the MLM (0 where the label is -100)."""

        def __init__(self) -> None:
            super().__init__()
            self.mlm = mlm

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
            return F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                reduction="none",
                ignore_index=-100,
            )

    model = TokenLosses().to(device)
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": vocab,
        **sizes,
    }
    return model, info


def make_batches(
    args: argparse.Namespace, vocab: int, device: Any, n: int = 4
) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (args.batch_size, args.seq_len), generator=g)
        masked = torch.rand(ids.shape, generator=g) < 0.15
        labels = torch.where(masked, ids, -100)
        out.append(
            {
                "input_ids": torch.where(masked, 4, ids).to(device),
                "attention_mask": torch.ones_like(ids).to(device),
                "labels": labels.to(device),
                "token_task": (ids % 4).to(device),
                "num_masked": masked.sum().to(device=device, dtype=torch.float32),
            }
        )
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(
    model: Any, batches: list[dict[str, Any]], steps: int, device: Any, lr: float = 1e-4
) -> float:
    """The hand-written loop (nanoGPT style); returns the loop's seconds."""
    import torch

    import deep

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=device.type == "cuda",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    _sync(device)
    start = time.perf_counter()
    for step in range(steps):
        factor = deep.lr_factor(
            step, steps=steps, warmup_steps=0, lr_schedule="cosine", min_lr_ratio=0.1
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        batch = batches[step % len(batches)]
        with autocast:
            values = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = values.sum() / batch["num_masked"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


def deep_loop(
    model: Any, batches: list[dict[str, Any]], steps: int, device: Any, rule: Any
) -> float:
    """``deep.pretrain`` on the same module; returns the loop's seconds (set-up excluded)."""
    import torch

    import deep

    def task_loss(model: Any, batch: dict[str, Any]) -> Any:
        values = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        labels = batch["labels"].reshape(-1)
        ids = torch.where(labels == -100, -100, batch["token_task"].reshape(-1))
        return values, ids

    result = deep.pretrain(
        model,
        batches,
        num_tasks=4,
        task_loss=task_loss,
        rule=rule,
        steps=steps,
        lr=1e-4,
        weight_decay=0.01,
        grad_clip=1.0,
        log_every=steps,  # one host read, at the end
        progress=False,
        device=device,
        seed=None,
    )
    if not math.isfinite(float(result.history["loss"][-1])):
        raise RuntimeError("deep.pretrain produced a non-finite loss")
    return result.wall_seconds


def count_syncs(fn: Any) -> int:
    """Synchronising CUDA calls made by ``fn()`` (torch's sync debug mode)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _setup_device(args: argparse.Namespace) -> Any:
    import torch

    if args.smoke:
        args.batch_size = args.batch_size or 4
        args.seq_len = min(args.seq_len, 32)
        args.steps = args.steps or 2
        args.warmup = 1 if args.warmup is None else args.warmup
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return None
    args.batch_size = args.batch_size or 256
    args.steps = args.steps or 15
    args.warmup = 3 if args.warmup is None else args.warmup
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", 0)


def _summary(payload: dict[str, Any]) -> str:
    peak = payload["peak_bf16_flops"]
    model = payload["model"]
    lines = [
        f"BERT MLM {model['params'] / 1e6:.1f}M params, batch {payload['batch_size']} x "
        f"{payload['seq_len']}, {payload['precision']} on {payload['device']}; "
        + (f"peak bf16 dense {peak:.4g} FLOP/s" if peak else "peak unknown (no MFU)"),
        f"{'variant':14s} {'compiled':8s} {'ms/step':>9s} {'tokens/s':>12s} {'MFU':>7s}",
    ]
    for r in payload["rows"]:
        mfu = f"{100 * r['mfu']:6.1f}%" if r["mfu"] else "    n/a"
        compiled = "yes" if r["compiled"] else "no"
        lines.append(
            f"{r['variant']:14s} {compiled:8s} {r['step_ms']:9.2f} {r['tokens_per_second']:12.0f} {mfu}"
        )
    lines += [f"{key}: {value:.3f}" for key, value in payload["ratios"].items()]
    syncs = payload["host_syncs"]
    if syncs is not None:
        lines.append(
            f"host syncs per step: deep.pretrain {syncs['deep_per_step']:g}, "
            f"plain {syncs['plain_per_step']:g}"
        )
    lines += [f"note: {note}" for note in payload["notes"]]
    return "\n".join(lines)


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    by = {(r["variant"], r["compiled"]): r for r in rows}
    out = {}
    for compiled, label in ((False, "eager"), (True, "compiled")):
        for name in ("deep softmax", "deep uniform"):
            if ("plain", compiled) in by and (name, compiled) in by:
                plain = by[("plain", compiled)]["tokens_per_second"]
                out[f"{name.split()[1]}_vs_plain_{label}"] = (
                    by[(name, compiled)]["tokens_per_second"] / plain
                )
    return out


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    _import_deep()
    import torch

    import minimax_core.weights as weights

    device = _setup_device(args)
    if device is None:
        print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or "cpu"
    peak = args.peak_flops or (peak_flops(device_name) if device.type == "cuda" else None)
    peak_text = f"{peak:.4g}" if peak else "unknown (pass --peak-flops)"
    print(f"device: {device_name}; torch {torch.__version__}; peak bf16 dense FLOP/s: {peak_text}")

    model, info = build(args, device)
    batches = make_batches(args, info["vocab_size"], device)
    tokens_per_step = args.batch_size * args.seq_len
    print(
        f"params {info['params'] / 1e6:.2f}M; batch {args.batch_size} x {args.seq_len}", flush=True
    )
    rules = {"softmax": weights.softmax(args.temperature), "uniform": weights.uniform()}
    runners = {
        "plain": lambda m, n: plain_loop(m, batches, n, device),
        "deep softmax": lambda m, n: deep_loop(m, batches, n, device, rules["softmax"]),
        "deep uniform": lambda m, n: deep_loop(m, batches, n, device, rules["uniform"]),
    }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    syncs: dict[str, float] | None = None

    def write_results() -> dict[str, Any]:
        """Write what is measured so far (after every phase: a crash later keeps it)."""
        payload = {
            "device": device_name,
            "torch": torch.__version__,
            "peak_bf16_flops": peak,
            "params": info["params"],
            "model": info,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "rounds": args.rounds,
            "rows": rows,
            "ratios": _ratios(rows),
            "host_syncs": syncs,
            "notes": notes,
            "wall_seconds": time.perf_counter() - t_start,
            "smoke": args.smoke,
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        }
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / ".bert_mfu.json.tmp"
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.out / "bert_mfu.json")
        return payload

    def phase(label: str, module: Any) -> None:
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for runner in runners.values():
            if args.warmup:
                runner(module, args.warmup)
        names = list(runners)
        for r in range(args.rounds):  # interleaved, the order rotating
            for name in names[r % 3 :] + names[: r % 3]:
                seconds[name].append(runners[name](module, args.steps))
        for name in names:
            step_s = statistics.median(seconds[name]) / args.steps
            tokens_s = tokens_per_step / step_s
            mfu = 6 * info["params"] * tokens_s / peak if peak else None
            row = {
                "variant": name,
                "compiled": label == "compiled",
                "step_ms": 1e3 * step_s,
                "tokens_per_second": tokens_s,
                "mfu": mfu,
                "seconds_per_round": seconds[name],
            }
            rows.append(row)
            mfu_text = f"  MFU {100 * mfu:5.1f}%" if mfu else ""
            print(
                f"  {label:8s} {name:13s} {row['step_ms']:8.2f} ms/step {tokens_s:12.0f} tok/s{mfu_text}",
                flush=True,
            )

    print("phase: eager", flush=True)
    phase("eager", model)
    write_results()

    if device.type == "cuda":
        try:
            n3 = count_syncs(lambda: deep_loop(model, batches, 3, device, rules["softmax"]))
            n9 = count_syncs(lambda: deep_loop(model, batches, 9, device, rules["softmax"]))
            p3 = count_syncs(lambda: plain_loop(model, batches, 3, device))
            p9 = count_syncs(lambda: plain_loop(model, batches, 9, device))
            syncs = {
                "deep_per_step": (n9 - n3) / 6,
                "deep_per_call": n3 - 3 * (n9 - n3) / 6,
                "plain_per_step": (p9 - p3) / 6,
            }
        except Exception as err:  # a diagnostic: never lose the timings for it
            notes.append(f"sync count failed: {type(err).__name__}: {str(err)[:200]}")
        write_results()

    want_compile = args.compile == "yes" or (args.compile == "auto" and device.type == "cuda")
    elapsed = time.perf_counter() - t_start
    if want_compile and elapsed > args.budget_s - 80:
        notes.append(
            f"compiled phase skipped: {elapsed:.0f} s of the {args.budget_s:.0f} s budget used"
        )
        want_compile = False
    if want_compile:
        print(f"phase: compiled (torch.compile backend={args.compile_backend})", flush=True)
        try:
            compiled = torch.compile(model, backend=args.compile_backend)
            t0 = time.perf_counter()
            runners["plain"](compiled, 1)  # compiles
            notes.append(f"compile + first step: {time.perf_counter() - t0:.1f} s")
            phase("compiled", compiled)
        except Exception as err:  # keep the eager results
            notes.append(f"compiled phase failed: {type(err).__name__}: {str(err)[:300]}")
    payload = write_results()
    print()
    print(_summary(payload))
    print(f"wrote {args.out / 'bert_mfu.json'} ({payload['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
