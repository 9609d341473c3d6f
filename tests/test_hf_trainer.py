"""deep.hf.TaskRobustTrainer: the Hugging Face Trainer path against deep.pretrain.

A tiny BERT (no dropout) trains on fixed masked batches with SGD + momentum (Adam and
clipping would hide a wrong gradient scale), a stateful rule (exponentiated gradient) and
gradient accumulation; the Trainer run must match deep.pretrain on the same batches, and a
resumed run must end where the uninterrupted one ends.

This file is also the torchrun worker: ``torchrun --nproc_per_node 2 tests/test_hf_trainer.py
OUT`` trains with the Trainer under DDP (gloo) and writes what each rank saw and ended with.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("transformers")

import numpy as np
import torch

import deep
import minimax_core as mc

M, STEPS, K, BATCH, LEN, VOCAB = 3, 4, 2, 4, 12, 40
NAMES = ("noun", "verb", "other")


def _model(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LEN,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return BertForMaskedLM(config)


def _batches(n: int = STEPS * K, seed: int = 3) -> list[dict[str, torch.Tensor]]:
    """Masked batches: about 30% of the tokens have a label and a task (uneven by task)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, VOCAB, (BATCH, LEN), generator=g)
        masked = torch.rand(BATCH, LEN, generator=g) < 0.3
        task = torch.where(ids < 15, 0, torch.where(ids < 30, 1, 2))
        out.append(
            {
                "input_ids": torch.where(masked, 4, ids),
                "attention_mask": torch.ones(BATCH, LEN, dtype=torch.long),
                "labels": torch.where(masked, ids, -100),
                "task_ids": torch.where(masked, task, -100),
            }
        )
    return out


def _rule() -> Any:
    return mc.weights.exponentiated_gradient(0.5)


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _trainer(model: torch.nn.Module, batches: list[Any], out: Path, **extra: Any) -> Any:
    from transformers import TrainingArguments

    from deep.hf import TaskRobustTrainer

    opt = _sgd(model)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=1,  # one dataset item is one prepared micro-batch
        gradient_accumulation_steps=K,
        train_sampling_strategy="sequential",
        max_grad_norm=0.0,
        logging_steps=1,
        save_steps=2,
        save_strategy="steps",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **extra,
    )
    return TaskRobustTrainer(
        model=model,
        args=args,
        train_dataset=batches,
        data_collator=lambda items: items[0],
        optimizers=(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)),
        num_tasks=M,
        rule=_rule(),
        task_names=NAMES,
    )


def _pretrain(batches: list[Any]) -> Any:
    return deep.pretrain(
        _model(),
        batches,
        num_tasks=M,
        task_loss=_task_loss,
        rule=_rule(),
        steps=STEPS,
        optimizer=_sgd,
        lr_schedule="constant",
        warmup_steps=0,
        grad_clip=None,
        accumulation_steps=K,
        log_every=1,
        progress=False,
        device="cpu",
    )


def _task_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from deep.hf import masked_lm_task_loss

    return masked_lm_task_loss()(model, batch)


def _log_rows(trainer: Any) -> list[dict[str, float]]:
    return [row for row in trainer.state.log_history if "loss" in row]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("hf")
    batches = _batches()
    full = _trainer(_model(), batches, out / "full")
    full.train()
    resumed = _trainer(_model(seed=7), batches, out / "resumed")
    resumed.train(resume_from_checkpoint=str(out / "full" / "checkpoint-2"))
    return {"out": out, "batches": batches, "full": full, "resumed": resumed}


@pytest.mark.slow
def test_trainer_matches_deep_pretrain_on_the_same_batches(runs: dict[str, Any]) -> None:
    reference = _pretrain(runs["batches"])
    full = runs["full"]
    torch.testing.assert_close(_flat(full.model), _flat(reference.model), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        full.task_robust.rule_state.log_weights,
        reference.rule_state.log_weights,
        rtol=1e-5,
        atol=1e-6,
    )
    rows = _log_rows(full)
    assert len(rows) == STEPS
    weights = np.array([[row[f"task_weight/{n}"] for n in NAMES] for row in rows])
    losses = np.array([[row[f"task_loss/{n}"] for n in NAMES] for row in rows])
    np.testing.assert_allclose(weights, reference.history["weights"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, reference.history["task_losses"], rtol=1e-5, atol=1e-7)
    # the rule moved the weights away from uniform, so the comparison has teeth
    assert np.abs(weights[-1] - 1 / M).max() > 0.02


@pytest.mark.slow
def test_trainer_resume_restores_the_rule_state(runs: dict[str, Any]) -> None:
    full, resumed, out = runs["full"], runs["resumed"], runs["out"]
    folder = out / "full" / "checkpoint-2"
    meta = json.loads((folder / "task_robust.json").read_text())
    assert meta["rule"] == "exponentiated_gradient" and meta["task_names"] == list(NAMES)
    torch.testing.assert_close(_flat(resumed.model), _flat(full.model), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        resumed.task_robust.rule_state.log_weights, full.task_robust.rule_state.log_weights
    )
    assert resumed.task_robust.rule_state.step == full.task_robust.rule_state.step == STEPS
    # a checkpoint is also loadable without this package
    from transformers import AutoModelForMaskedLM

    loaded = AutoModelForMaskedLM.from_pretrained(folder)
    assert loaded.config.hidden_size == 16


@pytest.mark.slow
def test_resume_without_the_rule_state_differs(runs: dict[str, Any], monkeypatch: Any) -> None:
    """Negative control: the same resume with the rule restarted ends elsewhere, and a
    checkpoint without the state files is refused."""
    from deep.hf import TaskRobustCallback

    out, batches = runs["out"], runs["batches"]
    monkeypatch.setattr(TaskRobustCallback, "load", lambda self, folder: None)
    restarted = _trainer(_model(seed=7), batches, out / "restarted")
    restarted.train(resume_from_checkpoint=str(out / "full" / "checkpoint-2"))
    full = runs["full"]
    assert not torch.allclose(_flat(restarted.model), _flat(full.model), rtol=1e-4, atol=1e-5)
    monkeypatch.undo()

    bare = out / "bare"
    import shutil

    shutil.copytree(out / "full" / "checkpoint-2", bare)
    (bare / "task_robust.json").unlink()
    again = _trainer(_model(seed=7), batches, out / "again")
    with pytest.raises(FileNotFoundError, match="task-robust state"):
        again.train(resume_from_checkpoint=str(bare))


def test_task_loss_defaults_and_errors() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from deep.hf import TaskRobustCallback, masked_lm_task_loss, sequence_classification_task_loss

    batch = _batches(1)[0]
    values, ids = masked_lm_task_loss()(_model(), batch)
    assert values.shape == ids.shape == (BATCH * LEN,)
    assert torch.equal(ids == -100, batch["labels"].reshape(-1) == -100)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LEN, num_labels=3,
    )  # fmt: skip
    clf = BertForSequenceClassification(config)
    cls_batch = {
        "input_ids": batch["input_ids"],
        "labels": torch.tensor([0, 2, 1, 1]),
        "task_ids": torch.tensor([0, 1, 1, -100]),
    }
    values, ids = sequence_classification_task_loss()(clf, cls_batch)
    assert values.shape == ids.shape == (BATCH,)
    with pytest.raises(KeyError, match="task_ids"):
        masked_lm_task_loss()(
            _model(), {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        )
    with pytest.raises(ValueError, match="task_names"):
        TaskRobustCallback(3, _rule(), task_names=["a", "b"])
    with pytest.raises(ValueError, match="num_tasks"):
        TaskRobustCallback(0, _rule())
    callback = TaskRobustCallback(2, _rule())
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        callback.loss(torch.ones(3), torch.tensor([0, 1, 5]))
    with pytest.raises(FloatingPointError, match="task1"):
        callback.loss(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]))


def test_deep_pretrain_step_folder_is_a_hugging_face_model_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM

    torch.set_num_threads(1)
    batches = _batches(4)
    options: dict[str, Any] = dict(
        num_tasks=M, task_loss=_task_loss, rule=_rule(), steps=2, optimizer=_sgd,
        grad_clip=None, progress=False, device="cpu", checkpoint_dir=tmp_path / "ckpt",
    )  # fmt: skip
    result = deep.pretrain(_model(), batches, **options)
    step_dir = result.checkpoint
    assert step_dir is not None and (step_dir / "config.json").is_file()
    loaded = AutoModelForMaskedLM.from_pretrained(step_dir)
    trained = result.model.state_dict()
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0)
    # resume still reads (and verifies) the same folder
    longer = {**options, "steps": 3, "resume": step_dir, "allow_changes": ("steps",)}
    again = deep.pretrain(_model(seed=5), batches, **longer)
    assert again.steps == 3
    # a plain torch module gets no config.json
    plain = deep.pretrain(
        torch.nn.Linear(2, 1),
        [{"x": torch.ones(2, 2)}],
        num_tasks=1,
        task_loss=lambda m, b: (m(b["x"]).squeeze(1), torch.zeros(2, dtype=torch.long)),
        rule=mc.weights.uniform(),
        steps=1,
        progress=False,
        device="cpu",
        checkpoint_dir=tmp_path / "plain",
    )
    assert plain.checkpoint is not None and not (plain.checkpoint / "config.json").exists()


# --------------------------------------------------------------------------- torchrun


def _worker(out: Path) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    batches = _batches(2 * STEPS * K)  # each rank reads every other item
    trainer = _trainer(_model(), batches, out / "ddp", ddp_backend="gloo")
    seen: list[dict[str, torch.Tensor]] = []
    task_loss = trainer.task_loss

    def recording(model: torch.nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append({k: v.detach().clone() for k, v in inputs.items()})
        return task_loss(model, inputs)

    trainer.task_loss = recording
    trainer.train()
    rows = _log_rows(trainer)
    torch.save(
        {
            "params": _flat(trainer.model),
            "log_weights": trainer.task_robust.rule_state.log_weights,
            "weights": torch.tensor([[r[f"task_weight/{n}"] for n in NAMES] for r in rows]),
            "seen": seen,
        },
        out / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_gloo_processes_agree_and_match_one_process(tmp_path: Path) -> None:
    from .helpers import run_torchrun

    returncode, output = run_torchrun(Path(__file__).resolve(), [str(tmp_path)], timeout=300)
    assert returncode == 0, output[-6000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert torch.equal(ranks[0]["log_weights"], ranks[1]["log_weights"])
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])
    # the ranks read different data; together they are one process's global batch
    seen0, seen1 = ranks[0]["seen"], ranks[1]["seen"]
    assert len(seen0) == len(seen1) == STEPS * K
    assert not torch.equal(seen0[0]["input_ids"], seen1[0]["input_ids"])
    merged = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(seen0, seen1, strict=True)]
    torch.set_num_threads(1)
    single = _pretrain(merged)
    torch.testing.assert_close(ranks[0]["params"], _flat(single.model), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        ranks[0]["weights"].numpy(), single.history["weights"], rtol=1e-5, atol=1e-7
    )


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
