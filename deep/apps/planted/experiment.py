"""Methods x seeds x downstream budgets on the planted language, with paired statistics.

Per seed ``s`` (a grammar instance with ``spec.seed = s``, its training stream, held-out
sets and model initialisation; all shared by every method):

1. pre-train one model per method with :func:`deep.pretrain` for the same steps, data order,
   masks and initial weights;
2. measure each category's held-out masked-token loss and its excess over the entropy floor;
3. fine-tune every pre-trained model on every downstream task (:mod:`.downstream`) for each
   number of samples, recording the held-out metric at each budget;
4. (dynamics) the per-category training losses over time, the weights and their entropy,
   and a temperature sweep of the minimax rule.

Methods. ``minimax``: softmax weights on the *excess* losses ``L_c - floor_c``
(:func:`minimax_core.weights.excess_loss` with the known floors as the reference); ``average``:
uniform weights over categories; ``mlm``: one task, the token mean (categories weighted by
frequency); ``hardmax``: the subgradient rule on excess losses; ``group_dro``:
exponentiated-gradient weights on excess losses; ``minimax_raw``: softmax on the raw
losses (shows the trap: the ``name`` category's floor, log 400 = 5.99 nats, is the largest
raw loss whatever the model does, so the raw max puts nearly all weight on a task that
cannot improve). The weights see excess losses because a floor that differs by category
shifts a raw max without changing what can be learnt (DoReMi's reference-model excess, with
the exact reference available here).

Temperature. The default ``tau = 0.5`` nats: in pilot runs (one seed, 400 steps)
``tau = 0.1`` put almost no weight on the categories already learnt, whose excess then
drifted back up to ~1.2 nats while the worst category stalled; ``tau = 0.5`` kept them
learnt and broke the plateau of the context-dependent categories earlier than uniform
weights. The sweep (``temperatures``) measures this on every seed.

Statistics (:func:`mean_ci`): over seeds, the mean and a 95% Student-t interval; paired
differences minimax - average use the same seed's two numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

import minimax_core as mc
from deep.pretrain import pretrain
from minimax_core.weights import WeightRule, excess_loss

from .downstream import FinetuneBudgets, default_tasks, finetune
from .language import Grammar, LanguageSpec, build_grammar, default_spec, sample_sequences
from .model import (
    MODEL_SHAPE,
    PlantedBatches,
    category_losses,
    make_model,
    masked_set,
    planted_task_loss,
)

__all__ = [
    "METHODS",
    "PlantedConfig",
    "derive_seeds",
    "mean_ci",
    "method_rule",
    "run_seed",
    "summarize",
]

METHODS = ("minimax", "average", "mlm", "hardmax", "group_dro", "minimax_raw")


@dataclass(frozen=True)
class PlantedConfig:
    """Everything one seed's run needs (the experiment's quick/full presets fill it)."""

    pretrain_steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    temperature: float = 0.5
    eg_step_size: float = 0.01
    methods: tuple[str, ...] = METHODS
    finetune_methods: tuple[str, ...] = ("minimax", "average", "mlm")
    samples: tuple[int, ...] = (64, 512)
    finetune: FinetuneBudgets = field(default_factory=FinetuneBudgets)
    mixtures: int = 4
    temperatures: tuple[float, ...] = ()
    heldout: int = 1024
    log_points: int = 20
    shape: tuple[int, int, int, int] = MODEL_SHAPE

    def __post_init__(self) -> None:
        for name in ("pretrain_steps", "batch_size", "heldout", "log_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        unknown = set(self.methods) - set(METHODS)
        if unknown or not {"minimax", "average"} <= set(self.methods):
            raise ValueError(
                f"methods must include 'minimax' and 'average' and lie in {METHODS}, got "
                f"{self.methods}"
            )
        if not set(self.finetune_methods) <= set(self.methods):
            raise ValueError("finetune_methods must be a subset of methods")
        for t in (self.temperature, *self.temperatures):
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"temperatures must be finite and > 0, got {t!r}")
        if not self.samples or min(self.samples) < 1:
            raise ValueError(f"samples must be integers >= 1, got {self.samples}")


def derive_seeds(seed: int, count: int) -> list[int]:
    """``count`` distinct seeds from ``seed`` (numpy ``SeedSequence``)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    state = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint32)
    return [int(x) % 1_000_000_007 for x in state]


def method_rule(
    name: str, floors: np.ndarray, cfg: PlantedConfig, temperature: float | None = None
) -> tuple[WeightRule, bool]:
    """``(rule, per_category)`` of a method (``per_category=False``: one task, plain MLM)."""
    tau = cfg.temperature if temperature is None else temperature
    rules: dict[str, Callable[[], WeightRule]] = {
        "minimax": lambda: excess_loss(mc.weights.softmax(tau), floors),
        "average": mc.weights.uniform,
        "mlm": mc.weights.uniform,
        "hardmax": lambda: excess_loss(mc.weights.hardmax(), floors),
        "group_dro": lambda: excess_loss(
            mc.weights.exponentiated_gradient(cfg.eg_step_size), floors
        ),
        "minimax_raw": lambda: mc.weights.softmax(tau),
    }
    if name not in rules:
        raise ValueError(f"method must be one of {METHODS}, got {name!r}")
    return rules[name](), name != "mlm"


def _entropy(w: np.ndarray) -> np.ndarray:
    w = np.clip(w, 1e-300, None)
    return -(w * np.log(w)).sum(axis=-1)


def _pretrain_one(
    grammar: Grammar,
    name: str,
    cfg: PlantedConfig,
    seed: int,
    data: Any,
    temperature: float | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    rule, per_category = method_rule(name, grammar.floors, cfg, temperature)
    model = make_model(grammar, seed=seed, shape=cfg.shape)
    res = pretrain(
        model,
        data,
        num_tasks=grammar.num_categories if per_category else 1,
        task_loss=planted_task_loss(per_category=per_category),
        rule=rule,
        steps=cfg.pretrain_steps,
        lr=cfg.lr,
        warmup_steps=cfg.pretrain_steps // 10,
        device="cpu",
        precision="fp32",
        progress=False,
        log_every=1,  # per-step weights (oscillation); losses are pooled into windows below
        seed=seed,
        task_names=list(grammar.category_names) if per_category else ["mlm"],
    )
    hist = res.history
    window = max(1, cfg.pretrain_steps // cfg.log_points)
    ends = np.arange(window, len(hist["step"]) + 1, window)
    dynamics: dict[str, Any] = {
        "step": hist["step"][ends - 1].tolist(),
        "loss": [float(hist["loss"][e - window : e].mean()) for e in ends],
    }
    if per_category:
        w = hist["weights"]  # (steps, M): each step's weights
        sums = np.nan_to_num(hist["task_losses"] * hist["counts"])
        pooled = np.array(
            [
                sums[e - window : e].sum(0) / np.maximum(hist["counts"][e - window : e].sum(0), 1)
                for e in ends
            ]
        )
        excess = pooled - grammar.floors  # per window: token-pooled training loss - floor
        dynamics.update(
            worst_excess=excess.max(axis=1).tolist(),
            task_excess=excess.tolist(),
            weights=np.array([w[e - window : e].mean(0) for e in ends]).tolist(),
            weight_entropy=[float(_entropy(w[e - window : e]).mean()) for e in ends],
            argmax_switches=int(np.count_nonzero(np.diff(np.argmax(w, axis=1)))),
            weight_tv=float(np.abs(np.diff(w, axis=0)).sum(axis=1).mean() / 2)
            if len(w) > 1
            else 0.0,
        )
        dynamics["mean_weights"] = res.mean_weights.tolist()
    dynamics["seconds"] = res.wall_seconds
    return res.model, dynamics


def run_seed(
    seed: int, cfg: PlantedConfig, spec: LanguageSpec | None = None, *, threads: int = 1
) -> dict[str, Any]:
    """One seed: pre-training, upstream evaluation, fine-tuning, dynamics (plain JSON)."""
    torch.set_num_threads(threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    base = default_spec() if spec is None else spec
    grammar = build_grammar(dataclasses.replace(base, seed=seed))
    floors = grammar.floors
    train = sample_sequences(grammar, cfg.pretrain_steps * cfg.batch_size, seed=[seed, 10])
    data = PlantedBatches(train, grammar, batch_size=cfg.batch_size, seed=seed)
    held = masked_set(sample_sequences(grammar, cfg.heldout, seed=[seed, 11]), grammar, seed=seed)
    tasks = default_tasks(grammar, mixtures=cfg.mixtures, seed=seed)
    out: dict[str, Any] = {
        "seed": seed,
        "upstream": {},
        "dynamics": {},
        "downstream": [],
        "sweep": {},
    }
    for name in cfg.methods:
        model, dyn = _pretrain_one(grammar, name, cfg, seed, data)
        cl = category_losses(model, held)
        out["upstream"][name] = {"losses": cl.losses.tolist(), "excess": cl.excess(floors).tolist()}
        out["dynamics"][name] = dyn
        if name in cfg.finetune_methods:
            for t_index, task in enumerate(tasks):
                for n in cfg.samples:
                    r = finetune(
                        model,
                        grammar,
                        task,
                        samples=n,
                        config=cfg.finetune,
                        seed=seed * 131 + t_index,
                    )
                    out["downstream"].append(
                        {
                            "method": name,
                            "task": task.name,
                            "kind": task.kind,
                            "samples": n,
                            "budgets": list(r.budgets),
                            "values": list(r.values),
                            "floor": r.floor,
                        }
                    )
    for tau in cfg.temperatures:
        _, dyn = _pretrain_one(grammar, "minimax", cfg, seed, data, temperature=tau)
        out["sweep"][repr(float(tau))] = dyn
    out["tasks"] = [asdict(t) for t in tasks]
    out["floors"] = floors.tolist()
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu_start
    return out


# --------------------------------------------------------------------------- statistics


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t interval ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)`` (n >= 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {v.size}")
    mean = float(v.mean())
    half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": mean, "ci": [mean - half, mean + half]}


def _budget_table(
    seed_runs: Sequence[dict[str, Any]],
) -> dict[tuple[str, int, int, str], np.ndarray]:
    """``(kind, budget, samples, method) -> (seeds, 2)``: worst and mean over that kind's tasks."""
    table: dict[tuple[str, int, int, str], list[list[float]]] = {}
    for run in seed_runs:
        groups: dict[tuple[str, int, int, str], list[float]] = {}
        for row in run["downstream"]:
            for b, v in zip(row["budgets"], row["values"], strict=True):
                groups.setdefault((row["kind"], b, row["samples"], row["method"]), []).append(v)
        for key, values in groups.items():
            table.setdefault(key, []).append([max(values), float(np.mean(values))])
    return {k: np.asarray(v) for k, v in table.items()}


def summarize(seed_runs: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The contract's ``upstream``, ``downstream`` and ``paired`` blocks from per-seed runs."""
    methods = list(seed_runs[0]["upstream"])
    upstream: dict[str, Any] = {}
    for m in methods:
        excess = np.array([r["upstream"][m]["excess"] for r in seed_runs])
        raw = np.array([r["upstream"][m]["losses"] for r in seed_runs])
        upstream[m] = {
            "worst_task_loss": mean_ci(excess.max(axis=1)),
            "worst_raw_loss": mean_ci(raw.max(axis=1)),
            "mean_excess_loss": mean_ci(excess.mean(axis=1)),
            "task_losses": dict(zip(names, raw.mean(axis=0).tolist(), strict=True)),
            "task_excess": dict(zip(names, excess.mean(axis=0).tolist(), strict=True)),
            "worst_task": names[int(np.argmax(excess.mean(axis=0)))],
        }
    table = _budget_table(seed_runs)
    downstream = [
        {
            "kind": k,
            "budget": b,
            "samples": n,
            "method": m,
            "worst": mean_ci(v[:, 0]),
            "mean": mean_ci(v[:, 1]),
        }
        for (k, b, n, m), v in sorted(table.items())
    ]
    paired = []
    for (k, b, n, m), v in sorted(table.items()):
        if m != "minimax" or (k, b, n, "average") not in table:
            continue
        w = table[(k, b, n, "average")]
        paired.append(
            {
                "kind": k,
                "budget": b,
                "samples": n,
                "a": "minimax",
                "b": "average",
                "worst_diff": mean_ci(v[:, 0] - w[:, 0]),
                "mean_diff": mean_ci(v[:, 1] - w[:, 1]),
            }
        )
    ups = np.array(
        [
            [r["upstream"]["minimax"]["excess"], r["upstream"]["average"]["excess"]]
            for r in seed_runs
        ]
    )
    upstream_paired = {
        "worst_diff": mean_ci(ups[:, 0].max(axis=1) - ups[:, 1].max(axis=1)),
        "mean_diff": mean_ci(ups[:, 0].mean(axis=1) - ups[:, 1].mean(axis=1)),
    }
    return {
        "upstream": upstream,
        "downstream": downstream,
        "paired": paired,
        "upstream_paired": upstream_paired,
    }


def run_seeds(
    seeds: Sequence[int],
    cfg: PlantedConfig,
    *,
    workers: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_seed` for every seed, in ``workers`` processes (one torch thread each);
    the results do not depend on ``workers``."""
    if workers <= 1 or len(seeds) == 1:
        runs = []
        for s in seeds:
            runs.append(run_seed(s, cfg))
            if progress is not None:
                progress(runs[-1])
        return runs
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if os.name == "posix" else "spawn")
    with ctx.Pool(min(workers, len(seeds))) as pool:
        pending = [pool.apply_async(run_seed, (s, cfg)) for s in seeds]
        runs = []
        for p in pending:
            runs.append(p.get())
            if progress is not None:
                progress(runs[-1])
    return runs
