"""torchrun: 2 gloo processes on CPU against one process on the same global batch.

This file is also the worker: ``torchrun --nproc_per_node 2 tests/test_deep_distributed.py OUT``
trains with each rank holding half of every global micro-batch and writes what it ends with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deep
import minimax_core as mc

M, STEPS, ACCUMULATION, HALF = 3, 4, 2, 6


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _global_batches() -> list[dict[str, torch.Tensor]]:
    """STEPS * ACCUMULATION micro-batches of 2 * HALF items with uneven task counts."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(STEPS * ACCUMULATION):
        x = torch.randn(2 * HALF, 4, generator=g)
        t = torch.randint(0, M, (2 * HALF,), generator=g)
        out.append({"x": x, "y": x[:, :1] * (t[:, None] + 1.0), "t": t})
    return out


def _shard(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    return {k: v[rank * HALF : (rank + 1) * HALF] for k, v in batch.items()}


def _task_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return ((model(batch["x"]) - batch["y"]) ** 2).squeeze(1), batch["t"]


def _options(**extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_tasks": M,
        "task_loss": _task_loss,
        "rule": mc.weights.exponentiated_gradient(0.5),
        "steps": STEPS,
        # SGD, not Adam: Adam would hide a wrong gradient scale
        "optimizer": lambda m: torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9),
        "grad_clip": None,  # clipping would hide it too
        "accumulation_steps": ACCUMULATION,
        "log_every": 1,
        "progress": False,
        "device": "cpu",
    }
    options.update(extra)
    return options


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _worker_owning_the_group(out: Path) -> None:
    """deep.pretrain starts the process group from torchrun's environment and ends it."""
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    result = deep.pretrain(_model(), [_shard(b, rank) for b in _global_batches()], **_options())
    assert not dist.is_initialized()
    torch.save({"params": _flat(result.model)}, out / f"own-rank{rank}.pt")


def _worker(out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")  # started by the caller: deep.pretrain joins it
    rank = dist.get_rank()
    mine = [_shard(b, rank) for b in _global_batches()]
    # 1. the run compared with one process; a checkpoint after step 2 gathers both RNG states
    result = deep.pretrain(
        _model(),
        mine,
        **_options(checkpoint_dir=out / "ckpt", checkpoint_every=2, keep_checkpoints=None),
    )
    # 2. resume from step 2 with a fresh model: both ranks must end where run 1 ended
    resumed = deep.pretrain(
        torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)),
        mine,
        **_options(resume=out / "ckpt" / "step_00000002"),
    )
    # 3. a NaN on rank 1 only, step 2: every rank skips that step
    calls = {"n": 0}

    def nan_on_rank_1(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        values, ids = _task_loss(model, batch)
        if rank == 1 and calls["n"] == 3:
            values = values * float("nan")
        return values, ids

    skipped = deep.pretrain(
        _model(), mine, **_options(task_loss=nan_on_rank_1, on_nonfinite="skip")
    )
    torch.save(
        {
            "params": _flat(result.model),
            "resumed": _flat(resumed.model),
            "skipped": _flat(skipped.model),
            "skipped_steps": skipped.skipped_steps,
            "weights": torch.from_numpy(result.history["weights"]),
            "task_losses": torch.from_numpy(result.history["task_losses"]),
        },
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    from .helpers import run_torchrun

    for extra in ([], ["own"]):
        script = Path(__file__).resolve()
        returncode, output = run_torchrun(script, [str(tmp_path), *extra], timeout=180)
        assert returncode == 0, output[-6000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # both ranks end with identical parameters (also after resume and after a skipped step)
    for key in ("params", "resumed", "skipped"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert torch.equal(ranks[0]["resumed"], ranks[0]["params"])
    for r in (0, 1):  # the same run when deep.pretrain starts the group itself
        own = torch.load(tmp_path / f"own-rank{r}.pt", weights_only=True)
        assert torch.equal(own["params"], ranks[0]["params"])
    assert ranks[0]["skipped_steps"] == ranks[1]["skipped_steps"] == 1
    checkpoint = deep.load_checkpoint(tmp_path / "ckpt" / "step_00000002")
    assert {"rng.0.torch", "rng.1.torch"} <= set(checkpoint.tensors)
    assert checkpoint.meta["config"]["world_size"] == 2

    # one process on the global batch gives the same run
    single = deep.pretrain(_model(), _global_batches(), **_options())
    torch.testing.assert_close(ranks[0]["params"], _flat(single.model), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ranks[0]["weights"].numpy(), single.history["weights"], rtol=1e-5)
    np.testing.assert_allclose(
        ranks[0]["task_losses"].numpy(), single.history["task_losses"], rtol=1e-5
    )


if __name__ == "__main__":
    if sys.argv[2:] == ["own"]:
        _worker_owning_the_group(Path(sys.argv[1]))
    else:
        _worker(Path(sys.argv[1]))
